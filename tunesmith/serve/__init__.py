"""The OpenAI-compatible server: registry of models, dynamic batching engine, HTTP app."""
