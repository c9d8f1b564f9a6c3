"""Distillation: a teacher's answers collected from any OpenAI-compatible endpoint, for a small model to learn."""
