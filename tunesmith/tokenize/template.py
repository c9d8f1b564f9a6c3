"""A chat template, learned once: the text between turns, so most conversations render by concatenation.

The model's own Jinja template stays the reference. At start the template is probed with sentinel contents to
learn the "glue" text between each pair of roles; a template whose glue depends on anything but the two
neighbouring roles (position, content) is detected and rendered through Jinja instead, as is any
conversation whose role sequence was not probed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

START = "<start>"
END = "<end>"
GENERATE = "<generate>"
_SENTINEL = "\u2063S{}\u2063"
_PROBES: tuple[tuple[str, ...], ...] = (
    ("system", "user", "assistant", "user", "assistant"),
    ("user", "assistant", "user", "assistant", "user", "assistant"),
    ("system", "user", "assistant"),
    ("user", "assistant"),
)


def jinja(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    generate: bool = False,
    options: Mapping[str, object] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The reference rendering: the model's own template (`options`: its own variables, e.g. Qwen3's
    enable_thinking; `tools`: OpenAI's tool objects, for a template that renders them)."""
    extra = dict(options or {}) | ({"tools": tools} if tools else {})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generate, **extra)
    assert isinstance(text, str)
    return text


@dataclass(frozen=True)
class Glue:
    """The text around contents, keyed by (previous role, next role); START/END/GENERATE at the edges."""

    pieces: dict[tuple[str, str], str]
    """(previous, next) -> the text between their contents."""
    strips: bool
    """The template strips whitespace around each content."""


def _split(text: str, count: int) -> list[str] | None:
    pieces, cursor = [], 0
    for i in range(count):
        at = text.find(_SENTINEL.format(i), cursor)
        if at < 0:
            return None
        pieces.append(text[cursor:at])
        cursor = at + len(_SENTINEL.format(i))
    pieces.append(text[cursor:])
    return pieces


def _record(pieces: dict[tuple[str, str], str], key: tuple[str, str], value: str) -> bool:
    """Store a glue piece; False when the same key already had another value (position-dependent template)."""
    return pieces.setdefault(key, value) == value


def _probe_shape(
    tokenizer: PreTrainedTokenizerBase,
    roles: tuple[str, ...],
    pieces: dict[tuple[str, str], str],
    modes: tuple[bool, ...],
) -> bool:
    for generate in modes:
        shape = roles[:-1] if generate else roles
        messages = [{"role": r, "content": _SENTINEL.format(i)} for i, r in enumerate(shape)]
        try:
            text = jinja(tokenizer, messages, generate)
        except Exception:  # a template may refuse a shape (e.g. no system role): just not probed
            return True
        parts = _split(text, len(shape))
        if parts is None:
            return False
        keys = [(START, shape[0]), *list(itertools.pairwise(shape)), (shape[-1], GENERATE if generate else END)]
        if not all(_record(pieces, k, p) for k, p in zip(keys, parts)):
            return False
    return True


def learn_glue(tokenizer: PreTrainedTokenizerBase, prompts_only: bool = False) -> Glue | None:
    """Probe the template; None when it cannot be rendered by concatenation. With `prompts_only`, only
    conversations ending in a generation prompt are probed: Qwen3's template, for one, writes an empty think block
    into a final answer alone, so whole conversations depend on position while prompts do not."""
    strips = False
    probe = jinja(tokenizer, [{"role": "user", "content": " " + _SENTINEL.format(0) + " "}])
    if " " + _SENTINEL.format(0) + " " not in probe:
        if _SENTINEL.format(0) not in probe:
            return None
        strips = True
    pieces: dict[tuple[str, str], str] = {}
    for roles in _PROBES:
        if not _probe_shape(tokenizer, roles, pieces, (True,) if prompts_only else (False, True)):
            return None
    return Glue(pieces=pieces, strips=strips) if pieces else None
