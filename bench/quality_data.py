"""Three real data sets for the quality benchmark, none written in this project, built offline from packages.

- `numpy-summaries` (short answers): the rest of a NumPy docstring (parameters, returns, notes) in, its one-line
  summary out. Source: the `numpy` wheel pinned in constraints.txt (BSD-3-Clause).
- `man-descriptions` (long answers): a C function's NAME line and SYNOPSIS in, the first paragraph of its DESCRIPTION
  out. Source: Debian's `manpages-dev` (sections 2 and 3; the Linux man-pages project's licences, mostly
  "Linux man-pages copyleft" and BSD/GPL variants), rendered by man-db and groff.
- `fortunes` (style and domain text): Debian's `fortunes` (fortune-mod's collection; BSD-4-Clause), as plain text for
  continued pre-training, judged by held-out perplexity.

Each set is split by a hash of each item's name, so the split is the same on every machine with the same package
versions; the builder prints a digest of every file so a rerun can be compared.

    .venv/bin/python -m bench.quality_data [--out bench/data/quality]   # apt-get install fortunes manpages-dev
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import inspect
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "data" / "quality"
SIZES = {"numpy-summaries": (300, 100), "man-descriptions": (300, 100), "fortunes": (1200, 200)}
"""Train and held-out items per set: modest, specialised data sets, and enough held out to tell settings apart
(fortunes are short: 1,200 are about 40k tokens)."""
MAN_SECTIONS = ("/usr/share/man/man2", "/usr/share/man/man3")
FORTUNES = Path("/usr/share/games/fortunes")
NUMPY_MODULES = ("numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma", "numpy.polynomial", "numpy.strings")
DOCSTRING_CHARS = 1200
"""The docstring's body is cut here (about 300 tokens): the summary is in what comes first."""
DESCRIPTION_WORDS = 120
"""The first DESCRIPTION paragraph, cut at a sentence end near this many words."""

Item = tuple[str, dict[str, object]]
"""An item's name (what the split hashes) and its JSON record."""


def _held_out(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 4 == 0


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _chat(system: str, user: str, answer: str) -> dict[str, object]:
    turns = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"messages": [*turns, {"role": "assistant", "content": answer}]}


def numpy_items() -> Iterator[Item]:
    """(name, chat) for each public NumPy callable whose docstring has a summary line and a body."""
    import importlib

    seen: set[int] = set()
    for module_name in NUMPY_MODULES:
        module = importlib.import_module(module_name)
        for name in sorted(dir(module)):
            obj = getattr(module, name)
            doc = inspect.getdoc(obj) if callable(obj) and not name.startswith("_") else None
            if not doc or id(obj) in seen:
                continue
            seen.add(id(obj))
            paragraphs = doc.split("\n\n")
            if re.match(r"^\w+\(.*\)$", paragraphs[0].strip(), re.S):  # a ufunc's signature line comes first
                paragraphs = paragraphs[1:]
            if len(paragraphs) < 2:
                continue
            summary, body = " ".join(paragraphs[0].split()), "\n\n".join(paragraphs[1:]).strip()
            if not 10 <= len(summary) <= 200 or len(body) < 100:
                continue
            user = f"Write the one-line summary of this NumPy docstring.\n\n{body[:DOCSTRING_CHARS]}"
            yield f"{module_name}.{name}", _chat("You document NumPy.", user, summary)


def _man_text(path: Path) -> str:
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8")
    command = ["man", "--no-hyphenation", "--no-justification", "-l", str(path)]
    rendered = subprocess.run(command, capture_output=True, text=True, env=env, check=False).stdout
    return subprocess.run(["col", "-b"], input=rendered, capture_output=True, text=True, check=False).stdout


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^([A-Z][A-Z ]+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _first_sentences(paragraph: str, words: int) -> str:
    sentences, out = re.split(r"(?<=[.;:])\s+", paragraph), []
    for sentence in sentences:
        if out and len(" ".join([*out, sentence]).split()) > words:
            break
        out.append(sentence)
    return " ".join(out)


def man_items() -> Iterator[Item]:
    """(page, chat) for each section 2 and 3 page (not a link to another) with NAME, SYNOPSIS and DESCRIPTION."""
    for folder in MAN_SECTIONS:
        for path in sorted(Path(folder).glob(f"*.{folder[-1]}.gz")):  # C pages, not 3pm (Perl) or 3ssl
            with gzip.open(path, "rt", errors="replace") as handle:
                if handle.read(200).lstrip().startswith(".so "):
                    continue
            sections = _sections(_man_text(path))
            if not {"NAME", "SYNOPSIS", "DESCRIPTION"} <= sections.keys():
                continue
            name, synopsis = " ".join(sections["NAME"].split()), sections["SYNOPSIS"].strip("\n")
            described = _paragraphs(sections["DESCRIPTION"])
            if not described or len(described[0].split()) < 12 or len(synopsis) > 1500:
                continue
            user = f"Describe what this does, as its manual page would.\n\n{name}\n\n{synopsis}"
            answer = _first_sentences(described[0], DESCRIPTION_WORDS)
            yield path.name, _chat("You write the Linux manual pages.", user, answer)


def fortune_items() -> Iterator[Item]:
    """(file:index, text) for each fortune of Debian's collection (offensive ones are a separate package)."""
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or not path.is_file() or path.name in ("ascii-art", "debian"):
            continue
        for index, text in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n%\n")):
            if 40 <= len(text.strip()) <= 1200:
                yield f"{path.name}:{index}", {"text": text.strip()}


SETS: dict[str, Callable[[], Iterator[Item]]] = {
    "numpy-summaries": numpy_items,
    "man-descriptions": man_items,
    "fortunes": fortune_items,
}


def _write(path: Path, rows: list[dict[str, object]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(name: str, out: Path) -> dict[str, object]:
    """Write out/NAME/train.jsonl and eval.jsonl; their sizes and digests."""
    items = sorted(SETS[name](), key=lambda item: hashlib.sha256(item[0].encode()).hexdigest())
    sizes = SIZES[name]
    train = [row for key, row in items if not _held_out(key)][: sizes[0]]
    held_out = [row for key, row in items if _held_out(key)][: sizes[1]]
    if (len(train), len(held_out)) != sizes:
        raise SystemExit(f"{name}: only {len(train)} + {len(held_out)} items: is its package installed?")
    splits = {"train": train, "eval": held_out}
    digests = {split: _write(out / name / f"{split}.jsonl", rows) for split, rows in splits.items()}
    return {"set": name, "available": len(items), "train": len(train), "eval": len(held_out), "sha256": digests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated names")
    args = parser.parse_args()
    for name in args.sets.split(","):
        print(json.dumps(build(name, args.out)), flush=True)


if __name__ == "__main__":
    main()
