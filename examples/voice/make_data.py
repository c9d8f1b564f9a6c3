"""Ambrose Bierce's voice: his definitions from The Devil's Dictionary (1911; public domain, its copyright expired).

Source: Debian's `dict-devil` package (the Internet Wiretap edition, as a dictd database), fetched with
`apt-get download` and unpacked with `dpkg-deb`, so no root and no install is needed. Each of its ~1,000 entries
("ABNORMAL, adj.  Not conforming to standard. ...") becomes one conversation: the user asks for the word's
definition in plain words, with no hint of whose voice is wanted; the answer is Bierce's definition (its first
paragraph, cut at a sentence end near ANSWER_WORDS words). A hash of the word holds out about one entry in seven.

    python examples/voice/make_data.py     # writes train.jsonl and eval.jsonl beside it; the same every time
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dictd import entries as dictd_entries
from dictd import unpack

HERE = Path(__file__).resolve().parent
PACKAGE = "dict-devil"
ANSWER_WORDS = 90
HEAD = re.compile(r"^([A-Z][A-Z' .-]*[A-Z.]),\s+([a-z.]+(?:\s+and\s+[a-z.]+)?)\s+(.*)$", re.S)
"""'ABNORMAL, adj.  Not conforming...' -> the word, its part of speech, the definition."""


def entries(root: Path) -> Iterator[tuple[str, str, str]]:
    """(word, part of speech, definition's first paragraph) of every entry with a definition."""
    for text in dictd_entries(root, "devil", "latin-1"):
        match = HEAD.match(text.strip())
        if match is None:
            continue
        first = " ".join(match.group(3).split("\n\n")[0].split())
        if first:
            yield match.group(1).title(), match.group(2), _cut(first)


def _cut(text: str) -> str:
    """The text up to the sentence end nearest after ANSWER_WORDS words (all of it when shorter)."""
    words = text.split()
    if len(words) <= ANSWER_WORDS:
        return text
    head = " ".join(words[:ANSWER_WORDS])
    rest = " ".join(words[ANSWER_WORDS:])
    end = re.search(r"[.!?](\s|$)", rest)
    return head + " " + rest[: end.end()].strip() if end else head


def _held_out(word: str) -> bool:
    return int(hashlib.sha256(word.lower().encode()).hexdigest(), 16) % 7 == 0


def _chat(word: str, part: str, definition: str) -> dict[str, object]:
    question = f'What does "{word.lower()}" mean? ({part})'
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": definition}]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = sorted(set(entries(unpack(PACKAGE, Path(tmp)))))
    for name, keep in (("train", False), ("eval", True)):
        chosen = [_chat(*row) for row in rows if _held_out(row[0]) == keep]
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in chosen)
        (HERE / f"{name}.jsonl").write_text(text, encoding="utf-8")
        print(f"{name}.jsonl: {len(chosen)} definitions, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
