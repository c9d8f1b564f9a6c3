"""Tokens into text as they come: incremental detokenisation and stop strings, for callers that stream.

Each call decodes only the few newest tokens (from a token boundary a little before them, so that tokenizers that
merge spaces or bytes across tokens stay exact), never the whole answer again; text that may be half a character or
the start of a stop string is held back until the next token says what it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


class TextStream:
    """The text of one answer, token by token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.longest = max((len(s) for s in self.stop), default=0)
        self.text = ""
        """Everything decoded so far (a stop string and what follows it included)."""
        self.sent = 0
        """Characters handed out."""
        self.prefix = 0
        """Where the last decoded window of ids starts."""
        self.read = 0
        """Ids already turned into text."""
        self.stopped = False
        """A stop string was found: the answer ends before it."""

    def _decode(self, ids: Sequence[int], final: bool) -> None:
        decode = self.tokenizer.decode
        before = decode(ids[self.prefix : self.read], skip_special_tokens=True)
        window = decode(ids[self.prefix :], skip_special_tokens=True)
        if window.endswith("\ufffd") and not final:  # half of a multi-byte character
            return
        self.text += window[len(before) :]
        self.prefix, self.read = self.read, len(ids)

    def update(self, ids: Sequence[int], final: bool) -> str:
        """The new text given all of the answer's ids so far; `final` when no more will come. After a stop string
        is found, `stopped` is set and nothing more is given out."""
        if self.stopped:
            return ""
        self._decode(ids, final)
        start = max(0, self.sent - self.longest)  # what was given out holds no whole stop string
        found = [at for s in self.stop if (at := self.text.find(s, start)) >= 0]
        end = len(self.text)
        if found:
            end, self.stopped = min(found), True
        elif not final and self.longest:
            end -= self.longest - 1  # may be the start of a stop string
        piece = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece
