"""Training throughput measured on this machine with the real training step, cached per model and machine."""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from tunesmith import paths
from tunesmith.tokenize.batches import collate
from tunesmith.tokenize.encode import Example
from tunesmith.training.loss import supervised_loss
from tunesmith.training.precision import Precision, choose_precision
from tunesmith.training.setup import ModelSpec, build_model, build_optimizer

PROBE_ROWS = 4
PROBE_LENGTH = 512
PROBE_STEPS = 2


def _key(spec: ModelSpec, precision: Precision) -> str:
    return (
        f"{spec.method}-step|{spec.model}|{precision.device.type}|{precision.compute}|"
        f"threads={torch.get_num_threads()}|torch={torch.__version__}"
    )


def _probe_batch(vocab: int) -> list[Example]:
    rng = np.random.default_rng(0)
    rows = []
    for line in range(PROBE_ROWS):
        ids = rng.integers(0, vocab, PROBE_LENGTH).astype(np.int32)
        labels = np.full(PROBE_LENGTH, -100, dtype=np.int32)
        labels[-PROBE_LENGTH // 4 :] = ids[-PROBE_LENGTH // 4 :]  # answers: the last quarter
        rows.append(Example(line, ids, labels))
    return rows


def _measure(spec: ModelSpec, precision: Precision) -> float:
    model = build_model(spec, precision)
    optimizer = build_optimizer(model, 1e-5)
    batch = collate(_probe_batch(model.config.vocab_size), pad_id=0)
    elapsed = 0.0
    for step in range(PROBE_STEPS + 1):  # the first step warms up
        start = time.perf_counter()
        with precision.autocast():
            loss, count = supervised_loss(model, batch)
        (loss / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed += (time.perf_counter() - start) if step else 0.0
    return batch.real_tokens * PROBE_STEPS / elapsed


def training_tokens_per_second(model_name: str, method: str = "lora") -> float:
    """Tokens per second of a training step of this model here (tunesmith's own step, default settings).

    Measured once (a few seconds), then cached in TUNESMITH_HOME/throughput.json.
    """
    spec, precision = ModelSpec(model_name, method), choose_precision()
    cache = paths.home() / "throughput.json"
    key = _key(spec, precision)
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        known[key] = _measure(spec, precision)
        paths.write_text_atomic(cache, json.dumps(known, indent=2))
    return float(known[key])
