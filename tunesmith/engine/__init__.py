"""The one generation engine: token ids and sampling settings in, token ids and log-probs out.

Every caller generates through it: evaluation, compare, `generate` and `chat`, the server's API and playground, and
what comes next (constrained decoding, several answers per prompt). Text in and out is the caller's; `text.py` turns
tokens into text incrementally for those that stream.
"""
