"""Exports run by real llama.cpp (llama-cpp-python, built from source by `make setup`): a tuned run's GGUF answers
held-out prompts as tunesmith does, its perplexity measured by llama.cpp agrees with ours in f32, and the export
reports each type's size and perplexity."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.data.schema import Message
from tunesmith.engine.sampling import Sampling
from tunesmith.evaluate.generate import load_generator
from tunesmith.export import llama_cpp
from tunesmith.export.quality import QUALITY_FILE, held_out_texts
from tunesmith.export.writer import ExportRequest, export

pytestmark = pytest.mark.skipif(
    llama_cpp.missing() is not None, reason=f"{llama_cpp.missing()}; `make setup` builds it"
)
PROMPTS = [f"Question {i}?" for i in range(100, 110)]
"""Held out: the runs learned from Question 0..23."""
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def ours(adapter_runs) -> list[str]:
    """tunesmith's own greedy answers (fp32, the engine every command uses)."""
    generator = load_generator(str(adapter_runs["alpha"]), device="cpu", dtype="float32")
    conversations = [(Message("user", p),) for p in PROMPTS]
    return [a.text for a in generator.generate(conversations, Sampling(max_tokens=MAX_TOKENS))]


@pytest.fixture(scope="module")
def files(adapter_runs, tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("llama-cpp")
    run = str(adapter_runs["alpha"])
    return {d: export(ExportRequest(run, "gguf", d, root / d, measure=d == "q8_0")) for d in ("f32", "f16", "q8_0")}


def _answers(path) -> list[str]:
    llm = llama_cpp.load(path, context=512)
    try:
        return [llama_cpp.greedy_chat(llm, [{"role": "user", "content": p}], MAX_TOKENS).strip() for p in PROMPTS]
    finally:
        llm.close()


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_llama_cpp_gives_tunesmiths_greedy_answers(dtype, files, ours):
    theirs = _answers(files[dtype] / "model.gguf")
    same = sum(a == b for a, b in zip(theirs, ours, strict=True))
    assert same >= 9, list(zip(theirs, ours, strict=True))


def test_q8_0_starts_its_answers_the_same_way(files, ours):
    theirs = _answers(files["q8_0"] / "model.gguf")
    same = sum(a.split("\n")[0] == b.split("\n")[0] for a, b in zip(theirs, ours, strict=True))
    assert same >= 7, list(zip(theirs, ours, strict=True))


def test_llama_cpps_perplexity_in_f32_is_the_models_own(adapter_runs, files, tmp_path):
    """llama.cpp's logits of an f32 file (with an f32 attention cache) are the model's up to the order of f32 sums:
    the mean log-likelihood of the held-out tokens within 1e-5 of transformers' (each log-prob of ~11 nats off by
    about 1e-6 relative), so the perplexity within 1e-5 relative."""
    run = adapter_runs["alpha"]
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    texts = held_out_texts(run / "final", tokenizer)
    llm = llama_cpp.load(files["f32"] / "model.gguf", context=1024, all_logits=True, f32_cache=True)
    try:
        theirs = llama_cpp.perplexity(llm, texts)
    finally:
        llm.close()
    merged = AutoModelForCausalLM.from_pretrained(
        export(ExportRequest(str(run), "merged", "f32", tmp_path)), dtype=torch.float32
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
            logits = merged(ids).logits[0, :-1].double()
            total -= float(torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).sum())
            count += ids.shape[1] - 1
    assert math.log(theirs) == pytest.approx(total / count, abs=1e-5)


def test_the_export_reports_each_files_size_and_perplexity_by_llama_cpp(files):
    rows = json.loads((files["q8_0"] / QUALITY_FILE).read_text())
    assert [r["dtype"] for r in rows] == ["f16", "q8_0"]
    f16, q8 = rows
    assert q8["bytes"] == (files["q8_0"] / "model.gguf").stat().st_size
    assert f16["bytes"] > 1.5 * q8["bytes"]  # 16 bits a weight against 8.5
    assert min(f16["perplexity"], q8["perplexity"]) > 1.0
    assert q8["perplexity"] == pytest.approx(f16["perplexity"], rel=0.05)  # 8-bit blocks barely move a tuned model


def test_k_quants_are_written_by_llama_cpps_own_quantiser(adapter_runs, files, tmp_path):
    folder = export(ExportRequest(str(adapter_runs["alpha"]), "gguf", "q4_k_m", tmp_path / "k"))
    path = folder / "model.gguf"
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "model.gguf"]  # the f16 step is gone
    assert path.stat().st_size < (files["q8_0"] / "model.gguf").stat().st_size
    llm = llama_cpp.load(path, context=512)
    try:
        assert llm.metadata["general.file_type"] == str(llama_cpp.K_QUANTS["q4_k_m"])
        assert llama_cpp.greedy_chat(llm, [{"role": "user", "content": PROMPTS[0]}], MAX_TOKENS).strip()
    finally:
        llm.close()


def test_each_block_type_is_byte_for_byte_llama_cpps_own_quantisation(small_tokenizer, tmp_path):
    """The `gguf` package's quantisers against llama.cpp's (llama_model_quantize from our f32 file, every tensor
    in the one type): the same bytes for every tensor but the head, which we keep at q8_0 on purpose."""
    import ctypes

    import gguf
    import llama_cpp as low
    import numpy as np

    from tests.conftest import make_tiny_model
    from tunesmith.export.gguf_file import write_gguf

    path = make_tiny_model(tmp_path / "model", small_tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    write_gguf(model, small_tokenizer, tmp_path / "f32.gguf", "f32", name="tiny")
    for dtype, ftype in (("q8_0", 7), ("q5_1", 9), ("q5_0", 8), ("q4_1", 3), ("q4_0", 2)):
        ours, theirs = tmp_path / f"{dtype}.gguf", tmp_path / f"llama-{dtype}.gguf"
        write_gguf(model, small_tokenizer, ours, dtype, name="tiny")
        params = low.llama_model_quantize_default_params()
        params.ftype, params.pure = ftype, True
        assert (
            low.llama_model_quantize(str(tmp_path / "f32.gguf").encode(), str(theirs).encode(), ctypes.byref(params))
            == 0
        )
        a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
        b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
        assert a.keys() == b.keys()
        for name in a.keys() - {"token_embd.weight", "output.weight"}:
            assert a[name].tensor_type == b[name].tensor_type, (dtype, name)
            assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), (dtype, name)


def test_a_gguf_lora_over_the_base_gguf_is_the_merged_model_in_llama_cpp(
    adapter_runs, adapter_base, files, ours, tmp_path
):
    """The adapter alone as a GGUF LoRA (llama.cpp's --lora), applied by llama.cpp over the base model's GGUF: the
    same logits as the merged f32 file within fp32 rounding (W x + s B (A x) against (W + s B A) x), and the same
    greedy answers as tunesmith; the base alone answers otherwise."""
    import numpy as np

    from tunesmith.export.gguf_file import write_gguf

    run = adapter_runs["alpha"]
    folder = export(ExportRequest(str(run), "gguf-lora", out=tmp_path / "lora"))
    base = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch.float32)
    write_gguf(base, AutoTokenizer.from_pretrained(adapter_base), tmp_path / "base.gguf", "f32", name="base")
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False)
    logits = {}
    for name, path, lora in (
        ("lora", tmp_path / "base.gguf", folder / "adapter.gguf"),
        ("merged", files["f32"] / "model.gguf", None),
        ("base", tmp_path / "base.gguf", None),
    ):
        llm = llama_cpp.load(path, context=512, lora=lora, all_logits=True, f32_cache=True)
        try:
            tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
            llm.reset()
            llm.eval(tokens)
            logits[name] = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
            if lora is not None:
                answers = [
                    llama_cpp.greedy_chat(llm, [{"role": "user", "content": p}], MAX_TOKENS).strip() for p in PROMPTS
                ]
        finally:
            llm.close()
    scale = np.abs(logits["merged"]).max()
    assert np.abs(logits["lora"] - logits["merged"]).max() <= 1e-4 * scale  # fp32 sums in another order
    assert np.abs(logits["base"] - logits["merged"]).max() > 0.1 * scale  # the adapter does change the model
    assert sum(a == b for a, b in zip(answers, ours, strict=True)) >= 9


def test_a_dora_adapter_is_refused_as_a_gguf_lora_with_one_line(tmp_path):
    from tunesmith.errors import ExportError
    from tunesmith.export.gguf_lora import _check

    with pytest.raises(ExportError, match="a DoRA adapter cannot be a GGUF LoRA"):
        _check({"use_dora": True, "r": 8, "lora_alpha": 16}, "llama")


@pytest.mark.parametrize(
    ("kind", "rope"),
    [
        ("llama", {"rope_type": "linear", "factor": 2.0}),
        ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    ],
    ids=["llama-linear", "qwen2-yarn"],
)
def test_rope_scaling_is_written_as_llama_cpp_reads_it(kind, rope, small_tokenizer, tmp_path):
    """A model with linear or YaRN rope scaling: llama.cpp's logits of its f32 file over 200 positions (past YaRN's
    original 64) are transformers' within 1e-4 of their scale (fp32 sums in another order: measured 3e-6); the same
    weights written without the scaling give logits that differ by far more."""
    import numpy as np
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from tunesmith.export.gguf_file import write_gguf

    shape = {"vocab_size": len(small_tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    shape |= {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    shape |= {"tie_word_embeddings": False}
    config, cls = (LlamaConfig, LlamaForCausalLM) if kind == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    ids = torch.randint(3, len(small_tokenizer), (1, 200), generator=torch.Generator().manual_seed(1))
    logits = {}
    for name, parameters in (("scaled", rope), ("plain", {})):
        torch.manual_seed(0)  # the same weights: rope scaling has none
        model = cls(config(**shape, rope_parameters={"rope_theta": 10000.0, **parameters})).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(3)  # logits that depend on the positions clearly
            if name == "scaled":
                ours = model(ids).logits[0].double().numpy()
        write_gguf(model, small_tokenizer, tmp_path / f"{name}.gguf", "f32", name="rope")
        llm = llama_cpp.load(tmp_path / f"{name}.gguf", context=256, all_logits=True, f32_cache=True)
        try:
            llm.reset()
            llm.eval(ids[0].tolist())
            logits[name] = np.asarray(llm.scores[:200], dtype=np.float64)
        finally:
            llm.close()
    scale = np.abs(ours).max()
    assert np.abs(logits["scaled"] - ours).max() <= 1e-4 * scale
    assert np.abs(logits["plain"] - ours).max() > 1e-2 * scale
