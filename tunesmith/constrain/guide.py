"""Grammars as the engine's constraints: llguidance's matcher, one per answer, over the model's tokenizer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import llguidance
import llguidance.hf
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.errors import DataError


class Guide:
    """One answer's grammar state (the engine's Constraint)."""

    def __init__(self, matcher: llguidance.LLMatcher, stop_ids: Sequence[int]) -> None:
        self.matcher, self.stop_ids = matcher, list(stop_ids)

    def fill(self, words: torch.Tensor) -> None:
        if self.matcher.is_error():  # nothing valid can follow: only the end of the answer
            words.zero_()
            for token in self.stop_ids:
                words[token // 32] |= 1 << (token % 32)
            return
        self.matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * words.element_size())

    def advance(self, token: int) -> None:
        if token in self.stop_ids and self.matcher.is_accepting():
            return
        if not self.matcher.consume_token(token):
            raise ValueError(f"token {token} breaks the answer's grammar: {self.matcher.get_error()}")


class Grammars:
    """A model's tokenizer as llguidance sees it (built once: about a second for a large vocabulary)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab: int, stop_ids: Sequence[int]) -> None:
        self.stop_ids = list(stop_ids)
        self.vocab = vocab
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._source = tokenizer
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.hf.from_tokenizer(self._source, self.vocab, self.stop_ids)
            return self._tokenizer

    def guide(self, grammar: str, what: str = "the grammar") -> Callable[[], Guide]:
        """What makes one answer's constraint for this grammar; DataError (naming `what`) when the grammar, or a JSON
        schema inside it, is not valid."""
        compiled = llguidance.LLMatcher.grammar_from_lark(grammar)
        tokenizer = self.tokenizer
        error = llguidance.LLMatcher.validate_grammar(compiled, tokenizer)
        if error:
            raise DataError(f"{what} cannot be enforced: {error}", hint=f"fix {what}", code="invalid_schema")
        return lambda: Guide(llguidance.LLMatcher(tokenizer, compiled), self.stop_ids)
