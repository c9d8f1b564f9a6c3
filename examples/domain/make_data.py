"""A domain from its documents plus questions and answers: hacker slang, from The Jargon File (public domain).

Source: Debian's `dict-jargon` package (The Jargon File 4.4.7 as a dictd database; "This document (the Jargon File)
is in the public domain"), fetched with `apt-get download` and unpacked with `dpkg-deb` (no root, no install).
Of its ~2,300 entries, the 220 of MIN_WORDS-MAX_WORDS words are used (few enough to be read 12 times on 2 CPU cores):

- `docs.jsonl`: every entry as plain text (term, then its definition): stage 1, continued pre-training.
- `qa-train.jsonl` / `qa-eval.jsonl`: "In hacker slang, what does "X" mean?" -> the definition's first sentences
  (up to ANSWER_WORDS words). A hash of the term holds out one in six: their documents are in docs.jsonl, their
  questions are not trained, so the held-out questions ask what stage 1 read and stage 2 never answered.
- `replay.jsonl`: general requests (REPLAY_TOPICS x REPLAY_TEMPLATES) answered by the base model itself, greedily
  in float32 (self-synthesized rehearsal, Huang et al. 2024): mixed into stage 2 so that tuning on the domain does
  not wear away what the model could already do. Written with --replay (it runs the model, about 3 minutes).

    python examples/domain/make_data.py [--replay]    # the same files every time
"""

from __future__ import annotations

import argparse
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
PACKAGE = "dict-jargon"
MIN_WORDS, MAX_WORDS = 25, 35
ANSWER_WORDS = 45
REPLAY_TOPICS = (
    "bicycle", "library", "volcano", "recipe", "rainbow", "passport", "garden", "telescope", "museum", "umbrella",
    "orchestra", "marathon", "glacier", "bakery", "compass", "lighthouse", "vaccine", "violin", "desert", "bridge",
    "newspaper", "forest", "calendar", "thunderstorm", "honeybee", "airport", "microscope", "harbor", "kitchen",
    "mountain", "battery", "sandwich", "river", "castle", "printer", "pyramid", "tea", "whale", "snowflake", "map",
)  # fmt: skip
REPLAY_TEMPLATES = (
    "Explain what a {} is in two sentences.",
    "Give me two practical tips about a {}.",
    "Write one friendly sentence that uses the word {}.",
)


def _clean(text: str) -> str:
    """Cross-references {like this} as plain words, whitespace made single."""
    return " ".join(re.sub(r"\{\s*([^}]*)\}", r"\1", text).split())


def entries(root: Path) -> Iterator[tuple[str, str]]:
    """(term, definition) of every entry of MIN_WORDS-MAX_WORDS words; the definition without its pronunciation,
    part of speech, etymology in brackets or sense numbers."""
    for text in dictd_entries(root, "jargon", "utf-8"):
        term, _, rest = text.partition("\n")
        if not rest.startswith("\n"):  # a line of pronunciation and part of speech follows the term
            rest = rest.partition("\n\n")[2]
        paragraphs = [_clean(p) for p in re.split(r"\n\s*\n", rest) if p.strip()]
        meaning = [p for p in paragraphs if not (p.startswith("[") and p.endswith("]"))]
        definition = re.sub(r"^(\d+\.\s*|\[[^\]]*\]\s*)+", "", " ".join(meaning)).strip()
        if MIN_WORDS <= len(definition.split()) <= MAX_WORDS:
            yield term.strip(), definition


def _first_sentences(text: str) -> str:
    """Whole sentences up to about ANSWER_WORDS words (at least the first)."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    kept = [sentences[0]]
    for sentence in sentences[1:]:
        if len(" ".join([*kept, sentence]).split()) > ANSWER_WORDS:
            break
        kept.append(sentence)
    return " ".join(kept)


def _held_out(term: str) -> bool:
    return int(hashlib.sha256(term.lower().encode()).hexdigest(), 16) % 6 == 0


def _qa(term: str, definition: str) -> dict[str, object]:
    question = f'In hacker slang, what does "{term}" mean?'
    answer = _first_sentences(definition)
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _write(name: str, rows: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (HERE / name).write_text(text, encoding="utf-8")
    print(f"{name}: {len(rows)} lines, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}")


def replay() -> list[dict[str, object]]:
    """The base model's own greedy answers to general requests (float32: the same answers on every machine)."""
    from tunesmith.data.schema import Message
    from tunesmith.evaluate.generate import Sampling, load_generator
    from tunesmith.models.sources import DEFAULT_MODEL

    prompts = [template.format(topic) for template in REPLAY_TEMPLATES for topic in REPLAY_TOPICS]
    generator = load_generator(DEFAULT_MODEL, base=True, dtype="float32")
    answers = generator.generate([(Message("user", p),) for p in prompts], Sampling(max_new_tokens=96), 16)
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a.text.strip()}]}
        for p, a in zip(prompts, answers, strict=True)
        if a.stopped  # answers cut at the token limit would teach the model to stop mid-sentence
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", action="store_true", help="also write replay.jsonl (runs the base model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = sorted(dict(entries(unpack(PACKAGE, Path(tmp)))).items())
    _write("docs.jsonl", [{"text": f"{term}\n\n{definition}"} for term, definition in rows])
    _write("qa-train.jsonl", [_qa(term, d) for term, d in rows if not _held_out(term)])
    _write("qa-eval.jsonl", [_qa(term, d) for term, d in rows if _held_out(term)])
    if args.replay:
        _write("replay.jsonl", replay())


if __name__ == "__main__":
    main()
