"""Writes prompts.jsonl: 200 new customer calls without summaries, for the teacher to summarise.

The calls come from the call-summaries generator with another seed: the team's unlabelled calls, which nobody has
written an expert note for. The teacher (the call-summaries run) writes those notes; the student learns from them.

    python examples/distill/make_prompts.py
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).parent
CALLS = 200


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_data", HERE.parent / "call-summaries" / "make_data.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    make_data = _generator()
    rng = random.Random(20261201)
    calls = [make_data.example(rng, i) for i in range(CALLS)]
    rng.shuffle(calls)
    prompts = [{"messages": call["messages"][:-1]} for call in calls]  # the expert's note left out
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts)
    (HERE / "prompts.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
