"""Constrained decoding: grammars from function schemas and JSON schemas (llguidance), as engine constraints."""
