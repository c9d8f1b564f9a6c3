"""The tool-use recipe's data: questions about command-line options, answered by calling functions over real manual
pages.

Source: the manual pages of Debian 12's coreutils, grep, sed, tar, gzip and findutils packages (GPL-3+ / GFDL:
`apt-get download` fetches them, nothing is installed), rendered with `man -l` and read for their NAME line and
their options. Two functions a shell assistant might call: `describe_option(command, option)` returns the manual's
text for an option, `command_summary(command)` its NAME line. Half the examples end at the call (the model must pick
the function and copy the command and option out of the question); the other half go on with the manual's answer as
the tool result and a final answer that reports it (the model must relay what the tool said, not invent it).

Commands are split between training and evaluation: every held-out question is about a command the model never saw
called in training. Deterministic: `python examples/tool-use/make_data.py`.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ("coreutils", "grep", "sed", "tar", "gzip", "findutils")
SEED = 45
TRAIN_EXAMPLES, EVAL_EXAMPLES = 320, 60
EVAL_SHARE = 0.2
"""Share of commands held out: their questions are the evaluation set."""
MAX_DESCRIPTION = 220
"""Option descriptions longer than this many characters are left out (a final answer should be short)."""
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "describe_option",
            "description": "Look up what a command-line option of a command does, in its manual page.",
            "parameters": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command, e.g. ls"},
                    "option": {"type": "string", "description": "The option as written, e.g. -l or --all"},
                },
                "required": ["command", "option"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "command_summary",
            "description": "What a command is for: the one-line summary of its manual page.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The command, e.g. tar"}},
                "required": ["command"],
            },
        },
    },
]
SYSTEM = "You are a shell assistant. Use the tools to look things up in the manual pages before you answer."
OPTION_ASKS = (
    "What does the {opt} option of {cmd} do?",
    "In {cmd}, what is {opt} for?",
    "Explain `{cmd} {opt}`.",
    "What happens if I run {cmd} with {opt}?",
    "{cmd} {opt}: what does that flag mean?",
    "Could you tell me what {opt} does in {cmd}?",
)
SUMMARY_ASKS = ("What is the {cmd} command for?", "What does {cmd} do?", "Tell me what `{cmd}` is.")
OPTION_LINE = re.compile(r"^ {7}(-[^ ].*?)(?: {2,}(\S.*))?$")


def _man_text(page: Path) -> str:
    env = os.environ | {"MANWIDTH": "1000", "LANG": "C.UTF-8"}
    done = subprocess.run(["man", "-l", "-P", "cat", str(page)], capture_output=True, text=True, env=env, check=True)
    return re.sub(r".\x08", "", done.stdout)  # no overstrike bold


def _options(text: str) -> list[tuple[str, str]]:
    """(option as first written, its description) of every option the page lists."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        match = OPTION_LINE.match(line)
        if not match:
            continue
        spec, inline = match.groups()
        description = inline or (
            lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(" " * 14) else ""
        )
        option = spec.split(",")[0].split("=")[0].split("[")[0].strip()
        if option in ("--help", "--version"):  # on every page, the same words: nothing to look up
            continue
        if description and re.fullmatch(r"--?[A-Za-z0-9][-A-Za-z0-9]*", option) and len(description) <= MAX_DESCRIPTION:
            found.append((option, description))
    return found


def _summary(text: str) -> str | None:
    match = re.search(r"^NAME\n {7}(.+)$", text, re.M)
    return match.group(1).strip() if match else None


def read_manuals(folder: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """command -> (NAME line, options) for every section-1 page of the packages."""
    for package in PACKAGES:
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
        deb = next(folder.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "root")], check=True)
    manuals = {}
    for page in sorted((folder / "root/usr/share/man/man1").glob("*.1.gz")):
        command = page.name.removesuffix(".1.gz")
        if not re.fullmatch(r"[a-z][a-z0-9]*", command):
            continue
        text = _man_text(page)
        summary, options = _summary(text), _options(text)
        if summary and options:
            manuals[command] = (summary, options)
    return manuals


def _call(name: str, arguments: dict) -> dict:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def _example(rng: random.Random, command: str, summary: str, options: list[tuple[str, str]]) -> dict:
    messages = [{"role": "system", "content": SYSTEM}]
    if rng.random() < 0.7:
        option, description = rng.choice(options)
        ask = rng.choice(OPTION_ASKS).format(cmd=command, opt=option)
        call = _call("describe_option", {"command": command, "option": option})
        result, answer = description, f"`{command} {option}`: {description}"
    else:
        ask = rng.choice(SUMMARY_ASKS).format(cmd=command)
        call = _call("command_summary", {"command": command})
        result, answer = summary, f"From its manual page: {summary}."
    messages += [{"role": "user", "content": ask}, {"role": "assistant", "tool_calls": [call]}]
    if rng.random() < 0.5:
        messages += [{"role": "tool", "tool_call_id": "call_1", "content": result}]
        messages += [{"role": "assistant", "content": answer}]
    return {"messages": messages, "tools": TOOLS}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manuals = read_manuals(Path(tmp))
    rng = random.Random(SEED)
    commands = sorted(manuals)
    rng.shuffle(commands)
    held = set(commands[: int(len(commands) * EVAL_SHARE)])
    sets = {"train.jsonl": (sorted(set(commands) - held), TRAIN_EXAMPLES), "eval.jsonl": (sorted(held), EVAL_EXAMPLES)}
    for name, (chosen, count) in sets.items():
        rows = []
        for _ in range(count):
            command = rng.choice(chosen)
            rows.append(_example(rng, command, *manuals[command]))
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{name}: {len(rows)} examples over {len(chosen)} commands")


if __name__ == "__main__":
    main()
