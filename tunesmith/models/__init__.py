"""Finding, converting and loading models and tokenizers."""
