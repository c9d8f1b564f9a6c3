"""Inference for the server: the base model and its adapters in memory, and the batching engine (no HTTP)."""
