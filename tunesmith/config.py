"""Run settings and the rules that fill in "auto" values."""

from __future__ import annotations

import math

MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
DEFAULT_EPOCHS = 3
MAX_EPOCHS = 25


def auto_epochs(examples: int) -> int:
    """Aim for 3 epochs, clamping examples x epochs into [100, 25000] and epochs into [1, 25] (as OpenAI does)."""
    if examples <= 0:
        return DEFAULT_EPOCHS
    if examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return DEFAULT_EPOCHS
