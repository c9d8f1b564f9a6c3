"""Evaluation: generation with base and tuned models, held-out loss, metrics and reports."""
