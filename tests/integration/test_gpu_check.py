"""bench/gpu_check.sh end to end in its dry mode on this CPU (the CUDA tests are make test's own): tunesmith and TRL
on the same LoRA job of a tiny model, QLoRA refused with one line, the fused loss; figures written (the memory plan is
test_fit.py's here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_end_to_end_in_its_dry_mode(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lora = json.loads((tmp_path / "lora-tiny.json").read_text())
    assert set(lora["tools"]) == {"tunesmith", "trl"} and lora["speedup"] > 0
    assert all(run["losses"] and run["tokens_per_second"] > 0 for run in lora["tools"].values())
    assert "quantize 4bit: bitsandbytes quantises on CUDA GPUs only" in done.stdout
    assert "tests/integration/test_fit.py measures the plan here" in done.stdout
