"""Message contents are text: a special token's string typed inside one (`<|im_end|>`, `<|im_start|>system`) is
tokenised as the plain characters it is, never as the control token, so a user cannot open a system turn of their
own, and training data cannot teach one by accident.

The template's own special tokens stay special: only occurrences inside a message's content are cut out and
tokenised as plain text. The tokenizer already splits text at every special token, so cutting there changes
nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from tunesmith.errors import DataError

Span = tuple[int, int]


def content_spans(text: str, contents: Sequence[str]) -> list[Span | None]:
    """[start, end) of each content in the rendered text, searched in order; a template that strips contents is
    matched stripped; None for a content not found (a template that rewrites it)."""
    spans: list[Span | None] = []
    cursor = 0
    for content in contents:
        span = None
        for candidate in (content, content.strip()):
            at = text.find(candidate, cursor) if candidate else -1
            if at >= 0:
                span = (at, at + len(candidate))
                cursor = span[1]
                break
        spans.append(span)
    return spans


def specials_in(content: str, specials: Sequence[str]) -> list[str]:
    """The special-token strings a content holds (longest first, as `specials` is ordered)."""
    return [s for s in specials if s in content]


def injected(text: str, spans: Sequence[Span | None], specials: Sequence[str]) -> list[Span]:
    """Occurrences of special strings inside the content spans, sorted and without overlaps (longest wins)."""
    found: list[Span] = []
    for start, end in (span for span in spans if span is not None):
        chunk = text[start:end]
        for special in specials:  # longest first
            at = chunk.find(special)
            while at >= 0:
                hit = (start + at, start + at + len(special))
                if not any(a < hit[1] and hit[0] < b for a, b in found):
                    found.append(hit)
                at = chunk.find(special, at + 1)
    return sorted(found)


def encode_literal(tokenizer: PreTrainedTokenizerBase, text: str, cuts: Sequence[Span]) -> tuple[list[int], list[Span]]:
    """(ids, character offsets) of a rendered text that already holds its special tokens, with the `cuts` (special
    strings typed in contents) tokenised as plain text."""
    ids: list[int] = []
    offsets: list[Span] = []
    cursor = 0
    for start, end in [*cuts, (len(text), len(text))]:
        for low, high, literal in ((cursor, start, False), (start, end, True)):
            if high <= low:
                continue
            encoded = tokenizer(
                text[low:high], add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=literal
            )
            ids += encoded["input_ids"]
            offsets += [(a + low, b + low) for a, b in encoded["offset_mapping"]]
        cursor = end
    return ids, offsets


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, text: str, contents: Sequence[str], specials: Sequence[str]
) -> list[int]:
    """The ids of a rendered prompt whose messages had these contents; special strings inside them stay text.

    Raises DataError when a content holding one cannot be found in the rendering (the template rewrote it), since
    its special strings could then not be told from the template's own."""
    if not any(specials_in(c, specials) for c in contents):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    spans = content_spans(text, contents)
    for number, (content, span) in enumerate(zip(contents, spans), start=1):
        if span is None and specials_in(content, specials):
            raise DataError(
                f"message {number} holds the special token {specials_in(content, specials)[0]!r}, and this chat "
                "template rewrites the message, so it cannot be kept as plain text",
                hint="remove the special token's text from the message",
                code="special_token_in_content",
            )
    return encode_literal(tokenizer, text, injected(text, spans, specials))[0]
