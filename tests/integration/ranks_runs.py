"""Runs for tests/integration/test_distributed.py, started by torchrun on several ranks:
`torchrun --standalone --nproc-per-node 2 tests/integration/ranks_runs.py RUNS.json`, where RUNS.json lists
{"settings": {...}, "out": "folder"}. One launch trains them all, so the ranks import torch once for every case."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunesmith.config import build_config
from tunesmith.training import distributed
from tunesmith.training.runner import train


def main(runs_file: str) -> None:
    distributed.start()
    for run in json.loads(Path(runs_file).read_text()):
        train(build_config(run["settings"]), Path(run["out"]))
    distributed.stop()


if __name__ == "__main__":
    main(sys.argv[1])
