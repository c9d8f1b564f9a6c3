"""Records -> token ids and labels: batched fast tokenisation, labels from character spans, safe truncation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Encoding, Tokenizer
from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import Conversation, PreferencePair, Record, TextDoc
from tunesmith.tokenize.literal import encode_literal
from tunesmith.tokenize.render import ChatRenderer, Rendered, Supervise

IGNORE = -100
"""Label of a token that is not learned."""
BATCH = 512


@dataclass(frozen=True, slots=True)
class Example:
    """One training row before packing."""

    line: int
    """The input line it came from."""
    input_ids: np.ndarray
    """Token ids, int32."""
    labels: np.ndarray
    """The id where the token is learned, IGNORE where it is not; int32."""

    @property
    def supervised(self) -> int:
        """How many tokens are learned."""
        return int((self.labels != IGNORE).sum())


@dataclass
class Encoded:
    """The examples of a data set, and what did not fit."""

    examples: list[Example] = field(default_factory=list)
    """Rows to train on."""
    full_lengths: dict[int, int] = field(default_factory=dict)
    """line -> token length before truncation, for every conversation (texts: per document)."""
    truncated: list[tuple[int, int]] = field(default_factory=list)
    """(line, length): longer than max_length; later turns were cut, whole answers kept."""
    dropped: list[tuple[int, int]] = field(default_factory=list)
    """(line, length): no whole answer fits in max_length, so the example is left out."""
    literal: list[tuple[int, str]] = field(default_factory=list)
    """(line, special string): a message holds a special token's text, trained as plain text."""


def conversation_of(record: Record) -> Conversation | None:
    """The conversation a record trains on (a preference pair: its prompt and chosen answer)."""
    if isinstance(record, Conversation):
        return record
    if isinstance(record, PreferencePair):
        return record.conversation("chosen")
    return None


Spans = tuple[tuple[int, int], ...]


def _chunks(texts: list[str]) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(texts), BATCH):
        yield start, texts[start : start + BATCH]


def plain_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    """The fast tokenizer's own backend, without padding or truncation. A padded call of the tokenizer (a caller's
    batch with padding=True) leaves both switched on in the backend it shares, and every encode_batch would then pad
    each text to its chunk's longest."""
    backend: Tokenizer | None = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.padding is not None:
        backend.no_padding()
    if backend is not None and backend.truncation is not None:
        backend.no_truncation()
    return backend


def _token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> Iterator[np.ndarray]:
    """Ids of plain texts, with the special tokens the tokenizer adds itself (e.g. bos)."""
    backend = plain_backend(tokenizer)
    for _, chunk in _chunks(texts):
        if backend is not None:
            yield from (np.asarray(enc.ids, dtype=np.int32) for enc in backend.encode_batch(chunk))
        else:
            yield from (np.asarray(ids, dtype=np.int32) for ids in tokenizer(chunk)["input_ids"])


def _ids_and_labels(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], spans: list[Spans]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, labels) of rendered texts, which already hold every special token they need."""
    backend = plain_backend(tokenizer)
    for start, chunk in _chunks(texts):
        if backend is not None:
            encodings = backend.encode_batch(chunk, add_special_tokens=False)
            yield from (_labelled(enc, spans[start + k]) for k, enc in enumerate(encodings))
            continue
        out = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        for k, (ids, offsets) in enumerate(zip(out["input_ids"], out["offset_mapping"])):
            ids = np.asarray(ids, dtype=np.int32)
            yield ids, labels_for(ids, np.asarray(offsets).reshape(-1, 2), spans[start + k])


def _labelled(encoding: Encoding, spans: Spans) -> tuple[np.ndarray, np.ndarray]:
    """Labels from the token positions of the span edges (char_to_token), far cheaper than every offset."""
    ids = np.asarray(encoding.ids, dtype=np.int32)
    edges = [(encoding.char_to_token(a), encoding.char_to_token(b - 1)) for a, b in spans if b > a]
    if any(i is None or j is None for i, j in edges):
        return ids, labels_for(ids, np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2), spans)
    labels = np.full(len(ids), IGNORE, dtype=np.int32)
    for i, j in edges:
        labels[i : j + 1] = ids[i : j + 1]
    return ids, labels


def labels_for(ids: np.ndarray, offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Learn every token that overlaps a supervised character span."""
    mask = np.zeros(len(ids), dtype=bool)
    for a, b in spans:
        mask |= (offsets[:, 0] < b) & (offsets[:, 1] > a)
    return np.where(mask, ids, IGNORE).astype(np.int32)


def fit(ids: np.ndarray, labels: np.ndarray, max_length: int) -> int:
    """Length to keep: all of it, or up to the end of the last whole answer that fits; 0 when none fits."""
    if len(ids) <= max_length:
        return len(ids)
    learned = labels[: max_length + 1] != IGNORE
    ends = np.flatnonzero(learned[:-1] & ~learned[1:]) + 1
    return int(ends[-1]) if len(ends) else 0


def _with_literal(
    tokenizer: PreTrainedTokenizerBase, rendered: list[Rendered], encoded: Iterator[tuple[np.ndarray, np.ndarray]]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batch encodings, except for renderings with special strings typed in contents: those are encoded again
    with them as plain text (rare, so the fast batched path stays the common one)."""
    for r, pair in zip(rendered, encoded):
        if not r.literal:
            yield pair
            continue
        ids, offsets = encode_literal(tokenizer, r.text, r.literal)
        as_array = np.asarray(ids, dtype=np.int32)
        yield as_array, labels_for(as_array, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), r.spans)


def _conversations(rows: list[tuple[int, Conversation]], renderer: ChatRenderer, max_length: int, out: Encoded) -> None:
    rendered: list[Rendered] = [renderer.render(c) for _, c in rows]
    batch = _ids_and_labels(renderer.tokenizer, [r.text for r in rendered], [r.spans for r in rendered])
    encoded = _with_literal(renderer.tokenizer, rendered, batch)
    for (line, _), r in zip(rows, rendered):
        if r.literal:
            start, end = r.literal[0]
            out.literal.append((line, r.text[start:end]))
    for (line, _), (ids, labels) in zip(rows, encoded):
        out.full_lengths[line] = len(ids)
        keep = fit(ids, labels, max_length)
        if keep == 0 or not (labels[:keep] != IGNORE).any():
            out.dropped.append((line, len(ids)))
            continue
        if keep < len(ids):
            out.truncated.append((line, len(ids)))
        out.examples.append(Example(line, ids[:keep], labels[:keep]))


def _documents(
    rows: list[tuple[int, TextDoc]], tokenizer: PreTrainedTokenizerBase, max_length: int, out: Encoded
) -> None:
    """Continued pre-training: each document (plus eos) is cut into windows of max_length, all learned."""
    eos = tokenizer.eos_token_id
    for (line, _), ids in zip(rows, _token_ids(tokenizer, [d.text for _, d in rows])):
        if eos is not None:
            ids = np.append(ids, np.int32(eos))
        out.full_lengths[line] = len(ids)
        for start in range(0, len(ids), max_length):
            window = ids[start : start + max_length]
            if len(window) > 1:
                out.examples.append(Example(line, window, window.copy()))


def encode(
    records: list[tuple[int, Record]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    supervise: Supervise = "assistant",
    renderer: ChatRenderer | None = None,
) -> Encoded:
    """Tokenise records in input order (texts after conversations when a data set mixes them)."""
    out = Encoded()
    chats = [(line, c) for line, r in records if (c := conversation_of(r)) is not None]
    docs = [(line, r) for line, r in records if isinstance(r, TextDoc)]
    if chats:
        renderer = renderer or ChatRenderer(tokenizer, supervise)
        renderer.verify([c for _, c in chats])
        _conversations(chats, renderer, max_length, out)
    if docs:
        _documents(docs, tokenizer, max_length, out)
    return out
