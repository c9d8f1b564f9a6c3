"""The data of this recipe, from Debian's manual pages (section 1, user commands): each page's NAME line,
"cp - copy files and directories", becomes a prompt asking which command does that, with the command as the
field the grader reads. Nobody here wrote a question or an answer: the man pages did.

    python examples/command-names/make_data.py [/usr/share/man/man1]

Keeps commands whose page describes exactly one command, that is on this machine's PATH, and whose description
does not name it; a seeded shuffle puts 240 in train.jsonl and 60 in eval.jsonl."""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
NAME_LINE = re.compile(r"^([A-Za-z0-9_.+-]+)\s+\\?-+\s+(.+)$")
QUESTION = "Which Linux command does this: {description}? Answer with the command name only."


def name_line(page: Path) -> tuple[str, str] | None:
    """(command, description) of a page's NAME section, or None."""
    try:
        text = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
    except (OSError, EOFError):
        return None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\.S[Hh]\s+\"?NAME", line):
            body = " ".join(part for part in lines[i + 1 : i + 4] if not part.startswith(".")).strip()
            body = re.sub(r"\\f[BIRP]|\\&|\\\(..", " ", body).replace("\\-", "-")
            found = NAME_LINE.match(" ".join(body.split()))
            if found:
                return found.group(1), found.group(2).rstrip(". ")
    return None


def main(folder: str = "/usr/share/man/man1") -> None:
    pairs = {}
    for page in sorted(Path(folder).glob("*.1.gz")):
        found = name_line(page)
        if found is None:
            continue
        command, description = found
        if command in description.lower() or not shutil.which(command) or len(description.split()) < 3:
            continue
        pairs.setdefault(command, description)
    chosen = sorted(pairs.items())
    random.Random(0).shuffle(chosen)
    lines = [
        {"messages": [{"role": "user", "content": QUESTION.format(description=d)}], "command": c} for c, d in chosen
    ]
    for name, part in (("train.jsonl", lines[:240]), ("eval.jsonl", lines[240:300])):
        (HERE / name).write_text("".join(json.dumps(line) + "\n" for line in part))
    print(f"{len(pairs)} commands; {len(lines[:240])} train, {len(lines[240:300])} eval")


if __name__ == "__main__":
    main(*sys.argv[1:])
