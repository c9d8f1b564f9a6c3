"""vLLM's own adapter loader run on a tunesmith adapter export, on CPU: what `vllm serve --enable-lora
--lora-modules` does with the folder before any GPU work (vllm/lora: PEFTHelper.from_local_dir, validate_legal against
the LoRAConfig of the printed --max-lora-rank, LoRAModel.from_local_checkpoint with the modules vLLM's Llama maps LoRA
onto), and the weights it loaded compared with PEFT's. Then the same loader on variants of the adapter that vLLM
refuses, each verdict compared with tunesmith/export/vllm.py's.

vLLM's engine needs CUDA and its wheel depends on a CUDA torch, so only its Python sources are used: unpack the wheel
and the few small pure-Python packages its lora modules import into a folder and put it on PYTHONPATH:

    pip download --no-deps vllm==0.34.0 -d /tmp/vllm && unzip -q /tmp/vllm/vllm-*.whl -x '*.so' -d /tmp/vllm/src
    pip install --no-deps --target /tmp/vllm/deps pyzmq aiohttp multidict yarl propcache aiohappyeyeballs \\
        aiosignal frozenlist einops apache-tvm-ffi xgrammar prometheus_client py-cpuinfo uvloop msgspec cbor2 pybase64
    PYTHONPATH=/tmp/vllm/src:/tmp/vllm/deps .venv/bin/python -m bench.vllm_adapter runs/demo
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunesmith.export.vllm import adapter_modules, largest_rank, max_lora_rank, vllm_problems
from tunesmith.export.writer import ExportRequest, export

RESULTS = Path(__file__).resolve().parent / "results" / "vllm_adapter.json"
VARIANTS = {
    "DoRA": {"use_dora": True},
    "modules_to_save lm_head": {"modules_to_save": ["lm_head"]},
    "bias lora_only": {"bias": "lora_only"},
    "lora_bias": {"lora_bias": True},
    "rank_pattern 600": {"rank_pattern": {"q_proj": 600}},
    "PiSSA init": {"init_lora_weights": "pissa"},
    "QALoRA": {"use_qalora": True},
    "layer_replication": {"layer_replication": [[0, 1]]},
    "gaussian init (plain LoRA)": {"init_lora_weights": "gaussian"},
}
"""adapter_config.json changes, each tried by vLLM's loader and by our rules."""


def _vllm_expected_modules() -> set[str]:
    """The module names vLLM's Llama takes LoRA on, as its worker computes them: its packed layers unpacked
    (packed_modules_mapping, read from vLLM's llama.py: importing the model pulls in its GPU kernels) plus its
    unpacked linear layers, o_proj and down_proj."""
    spec = importlib.util.find_spec("vllm")
    source = Path(spec.submodule_search_locations[0]) / "model_executor" / "models" / "llama.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == "LlamaForCausalLM":
            for item in node.body:
                if isinstance(item, ast.Assign) and getattr(item.targets[0], "id", "") == "packed_modules_mapping":
                    packed = ast.literal_eval(item.value)
                    return {m for modules in packed.values() for m in modules} | {"o_proj", "down_proj"}
    raise RuntimeError(f"{source}: LlamaForCausalLM.packed_modules_mapping not found")


def vllm_loads(folder: Path, vocab_size: int) -> tuple[object | None, str]:
    """vLLM's loader on an adapter folder: (the LoRAModel, "") or (None, why it refused)."""
    import vllm.lora.lora_model
    from vllm.config.lora import LoRAConfig
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper

    # without its compiled parts vLLM cannot tell its platform and would pin the CPU copies for a GPU; its CPU
    # platform does not pin
    vllm.lora.lora_model.PIN_MEMORY = False

    config = json.loads((folder / "adapter_config.json").read_text())
    try:
        helper = PEFTHelper.from_local_dir(str(folder), max_position_embeddings=None)
        helper.validate_legal(LoRAConfig(max_lora_rank=max_lora_rank(min(largest_rank(config), 512))))
        model = LoRAModel.from_local_checkpoint(
            str(folder), _vllm_expected_modules(), helper, device="cpu", dtype=torch.float32,
            model_vocab_size=vocab_size,
        )  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        return None, str(exc).splitlines()[0][:160]
    return model, ""


def largest_difference(model: object, folder: Path) -> float:
    """Largest |vLLM's scaling x B @ A - PEFT's alpha/r x B @ A| over every adapted layer."""
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    weights = load_file(str(folder / "adapter_model.safetensors"))
    worst = 0.0
    for name, layer in model.loras.items():
        prefix = f"base_model.model.{name}"
        peft = scale * weights[f"{prefix}.lora_B.weight"] @ weights[f"{prefix}.lora_A.weight"]
        theirs = layer.scaling * layer.lora_b @ layer.lora_a
        worst = max(worst, float((theirs - peft).abs().max()))
    return worst


def _variant(folder: Path, change: dict, into: Path) -> Path:
    shutil.copytree(folder, into)
    config = json.loads((folder / "adapter_config.json").read_text()) | change
    (into / "adapter_config.json").write_text(json.dumps(config))
    return into


def _embedding_variant(folder: Path, into: Path) -> Path:
    """The adapter with LoRA weights on the token embeddings too (a module vLLM's Llama does not adapt)."""
    shutil.copytree(folder, into)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    r = json.loads((folder / "adapter_config.json").read_text())["r"]
    weights["base_model.model.model.embed_tokens.lora_A.weight"] = torch.zeros(r, 8)
    weights["base_model.model.model.embed_tokens.lora_B.weight"] = torch.zeros(8, r)
    save_file(weights, str(into / "adapter_model.safetensors"))
    return into


def main(run: str) -> dict:
    from transformers import AutoConfig

    from tunesmith.models.load import local_path
    from tunesmith.runs import base_model_of, result_folder

    root = Path(tempfile.mkdtemp(prefix="vllm-adapter-"))
    try:
        folder = export(ExportRequest(run, "adapter", out=root / "adapter"))
        vocab = AutoConfig.from_pretrained(local_path(base_model_of(result_folder(Path(run))))).vocab_size
        model, why = vllm_loads(folder, vocab)
        assert model is not None, f"vLLM refused tunesmith's adapter: {why}"
        ours = vllm_problems(json.loads((folder / "adapter_config.json").read_text()), adapter_modules(folder))
        result = {
            "adapter": {"layers": len(model.loras), "largest_difference": largest_difference(model, folder)},
            "ours_refuses_it": bool(ours),
            "variants": [],
        }
        folders = {name: _variant(folder, change, root / f"v{i}") for i, (name, change) in enumerate(VARIANTS.items())}
        folders["LoRA on embed_tokens"] = _embedding_variant(folder, root / "embedding")
        for name, variant in folders.items():
            _, why = vllm_loads(variant, vocab)
            config = json.loads((variant / "adapter_config.json").read_text())
            problems = vllm_problems(config, adapter_modules(variant))
            result["variants"].append({"variant": name, "vllm": why or "loads", "ours": "; ".join(problems) or "loads"})
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    found = main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
    RESULTS.write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps(found, indent=2))
    agree = all((v["vllm"] == "loads") == (v["ours"] == "loads") for v in found["variants"])
    print("verdicts agree" if agree else "VERDICTS DIFFER")
    sys.exit(0 if agree and not found["ours_refuses_it"] else 1)
