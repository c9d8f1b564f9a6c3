"""Turning records into exactly the tokens a model should learn from."""
