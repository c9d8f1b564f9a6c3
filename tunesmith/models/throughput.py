"""Training throughput measured on this machine, cached per model, device, threads and torch version."""

from __future__ import annotations

import json
import time

import torch

from tunesmith import paths
from tunesmith.models.load import load_model, pick_device

PROBE_TOKENS = 512
PROBE_STEPS = 2


def _key(model: str, device: torch.device) -> str:
    return f"lora-step|{model}|{device.type}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def _measure(model_name: str) -> float:
    model = load_model(model_name)
    model.train()
    model.requires_grad_(False)
    model.enable_input_require_grads()  # gradients flow through activations, as with LoRA adapters
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, PROBE_TOKENS), device=device)
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up
    start = time.perf_counter()
    for _ in range(PROBE_STEPS):
        model(input_ids=ids, labels=ids).loss.backward()
    return PROBE_TOKENS * PROBE_STEPS / (time.perf_counter() - start)


def training_tokens_per_second(model_name: str) -> float:
    """Tokens per second of a LoRA-style step (forward, backward through activations) for this model here.

    Measured once (a few seconds), then cached in TUNESMITH_HOME/throughput.json.
    """
    cache = paths.home() / "throughput.json"
    key = _key(model_name, pick_device())
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        known[key] = _measure(model_name)
        paths.write_text_atomic(cache, json.dumps(known, indent=2))
    return float(known[key])
