"""Log-probabilities in OpenAI's two shapes: chat's `logprobs.content` and the legacy completions' parallel lists."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.engine.sampling import TokenLogprob


def _text(tokenizer: PreTrainedTokenizerBase, token: int) -> str:
    return tokenizer.decode([token])


def _entry(tokenizer: PreTrainedTokenizerBase, token: int, logprob: float) -> dict[str, Any]:
    text = _text(tokenizer, token)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], "refusal": None}."""
    content = [
        _entry(tokenizer, t.token, t.logprob) | {"top_logprobs": [_entry(tokenizer, i, lp) for i, lp in t.top]}
        for t in tokens
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"} (offsets in the piece)."""
    texts = [_text(tokenizer, t.token) for t in tokens]
    offsets = list(accumulate(map(len, texts), initial=0))[:-1]
    return {
        "tokens": texts,
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{_text(tokenizer, i): lp for i, lp in t.top} for t in tokens],
        "text_offset": offsets,
    }
