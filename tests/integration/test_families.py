"""Every family people fine-tune, through every stage: a tiny random model of each (tests/families.py) is trained with
LoRA, DoRA and every weight, merged, written as GGUF (read back by transformers with the same weights and logits),
given an Ollama TEMPLATE that Go's text/template renders as the chat template does, and served with its adapter
chosen per request."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import write_jsonl
from tests.families import FAMILIES, Family, make_family_model
from tests.integration.test_export import CONVERSATIONS, _cast_like_the_file, _template_of, go_render
from tunesmith.config import build_config
from tunesmith.data.schema import Message
from tunesmith.export import llama_cpp
from tunesmith.export.gguf_file import llama3_rope_factors
from tunesmith.export.gguf_vocab import adds_bos
from tunesmith.export.writer import ExportRequest, export
from tunesmith.runs import RunFolder
from tunesmith.server.app import ServerSettings, build_server
from tunesmith.training.runner import train

ANSWER = "The answer is alpha."

PARAMS = [pytest.param(family, id=family.name) for family in FAMILIES]


def _rows() -> list[dict]:
    system = [{"role": "system", "content": "Be brief."}]
    return [
        {
            "messages": (system if i % 2 else [])
            + [{"role": "user", "content": f"What is {i} + {i}?"}]
            + [{"role": "assistant", "content": ANSWER}]
        }
        for i in range(24)
    ]


def _train(model: Path, data: Path, out: Path, method: str, steps: int, lr: float):
    values = {"data": str(data), "model": str(model), "method": method, "batch_tokens": 512, "precision": "fp32"}
    values |= {"epochs": 100, "max_steps": steps, "learning_rate": lr, "eval_every": 1000, "lora": {"rank": 8}}
    return train(build_config(values), out)


def _losses(run: Path) -> list[float]:
    return [row["loss"] for row in RunFolder(run).read_metrics() if "loss" in row and row.get("event") != "eval"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per family: (its tiny model, a LoRA run that learned to give ANSWER)."""
    root = tmp_path_factory.mktemp("families")
    data = write_jsonl(root / "train.jsonl", _rows())
    out = {}
    for family in FAMILIES:
        model = make_family_model(family, root / family.name)
        out[family.name] = (model, _train(model, data, root / f"{family.name}-lora", "lora", 40, 3e-2).run_dir)
    return out


@pytest.mark.parametrize("method", ["dora", "full"])
@pytest.mark.parametrize("family", PARAMS)
def test_dora_and_full_training_lower_the_loss(family: Family, method, trained, tmp_path):
    model, _ = trained[family.name]
    data = write_jsonl(tmp_path / "train.jsonl", _rows())
    result = _train(model, data, tmp_path / method, method, 8, 3e-2 if method == "dora" else 3e-3)
    losses = _losses(result.run_dir)
    assert result.final is not None and len(losses) == 8
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("family", PARAMS)
def test_merged_and_gguf_exports_hold_the_tuned_weights(family: Family, trained, tmp_path):
    _, run = trained[family.name]
    assert _losses(run)[-1] < 0.1 * _losses(run)[0]
    merged_dir = export(ExportRequest(str(run), "merged", "f32", tmp_path / "merged"))
    # a SentencePiece model's own file goes with the weights, for llama.cpp's converter and the like
    assert (merged_dir / "tokenizer.model").is_file() == bool(family.sentencepiece)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    folder = export(ExportRequest(str(run), "gguf", "f32", tmp_path / "gguf"))
    back = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", dtype=torch.float32).eval()
    expected, got = _cast_like_the_file(merged, "f32"), back.state_dict()
    assert set(expected) <= set(got) and all(torch.equal(got[name], expected[name]) for name in expected)
    if family.name == "llama3":  # transformers reads llama.cpp's rope_freqs as nothing: put them into its rotary
        base = back.model.rotary_emb.inv_freq
        factors = torch.from_numpy(llama3_rope_factors(merged.config))
        assert torch.allclose(base / factors, merged.model.rotary_emb.inv_freq, rtol=4 * 2.0**-24, atol=0)
        back.model.rotary_emb.inv_freq = merged.model.rotary_emb.inv_freq
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    prompt = [{"role": "user", "content": "What is 7 + 7?"}]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    read = AutoTokenizer.from_pretrained(folder, gguf_file="model.gguf")  # the file's vocabulary, merges or scores
    sample = "What is 7 + 7? Numbers 1234, caf\u00e9 \u2764 and  two spaces."  # byte fallback and merges both
    assert read(sample, add_special_tokens=False).input_ids == tokenizer(sample, add_special_tokens=False).input_ids
    with torch.no_grad():
        assert torch.equal(back(ids).logits, merged(ids).logits)


@pytest.mark.skipif(
    shutil.which("go") is None, reason="needs Go's text/template (Debian golang-go; .ci/run installs it)"
)
@pytest.mark.parametrize("family", PARAMS)
def test_ollama_template_renders_prompts_as_the_chat_template(family: Family, trained, tmp_path):
    from tunesmith.export.ollama import modelfile
    from tunesmith.tokenize.render import ChatRenderer

    tokenizer = AutoTokenizer.from_pretrained(trained[family.name][0])
    text = modelfile(tokenizer, "model.gguf")
    assert f'PARAMETER stop "{family.end_of_turn}"' in text
    renderer = ChatRenderer(tokenizer)  # the prompts training and serving use (Gemma 2: system merged)
    expected = [renderer.prompt(tuple(Message(m["role"], m["content"]) for m in c)) for c in CONVERSATIONS]
    if adds_bos(tokenizer):  # Ollama adds bos when tokenizing (the GGUF says so): the TEMPLATE leaves it out
        expected = [text.removeprefix(tokenizer.bos_token) for text in expected]
    assert go_render(_template_of(text), CONVERSATIONS, tmp_path) == expected


@pytest.mark.parametrize("family", PARAMS)
def test_served_with_its_adapter_chosen_per_request(family: Family, trained, home):
    model, run = trained[family.name]
    server = build_server(ServerSettings(model=str(model), adapters=(str(run),), dtype="float32"))
    with TestClient(server.app) as client:
        listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
        tuned = next(i for i in listed if i.startswith("ft:"))
        answers = {}
        for name in (tuned, listed[0]):
            body = {"model": name, "messages": [{"role": "user", "content": "What is 31 + 31?"}], "temperature": 0}
            reply = client.post("/v1/chat/completions", json=body | {"max_tokens": 16}).json()
            answers[name] = reply["choices"][0]
        if family.name == "qwen3":  # thinking off: the template writes the empty think block, the model answers
            body |= {"model": tuned, "chat_template_kwargs": {"enable_thinking": False}}
            off = client.post("/v1/chat/completions", json=body | {"max_tokens": 16}).json()
            assert off["choices"][0]["message"]["content"] == ANSWER
    # Qwen3 writes the empty think block it was trained to write before its answer, as the family does (Mistral's
    # answer starts with the space its template puts after [/INST], which SentencePiece's decoder drops)
    assert answers[tuned]["message"]["content"].removeprefix("<think>\n\n</think>\n\n") == ANSWER
    assert answers[tuned]["finish_reason"] == "stop"
    assert answers[listed[0]]["message"]["content"].strip() != ANSWER


@pytest.mark.skipif(llama_cpp.missing() is not None, reason=f"{llama_cpp.missing()}; `make setup` builds it")
@pytest.mark.parametrize("family", PARAMS)
def test_llama_cpp_runs_the_gguf_as_tunesmith_runs_the_model(family: Family, trained, tmp_path):
    """Real llama.cpp loads the tuned run's GGUF and gives tunesmith's greedy answer; its own C++ chat formats
    render conversations as the Modelfile's TEMPLATE does (where llama.cpp recognises the family's template)."""
    from tunesmith.engine.sampling import Sampling
    from tunesmith.evaluate.generate import load_generator
    from tunesmith.export.ollama import modelfile

    _, run = trained[family.name]
    folder = export(ExportRequest(str(run), "gguf", "f32", tmp_path / "gguf"))
    question = [{"role": "user", "content": "What is 7 + 7?"}]
    ours = load_generator(str(run), device="cpu", dtype="float32").generate(
        [(Message("user", question[0]["content"]),)], Sampling(max_tokens=16)
    )[0]
    llm = llama_cpp.load(folder / "model.gguf", context=512)
    try:
        theirs = llama_cpp.greedy_chat(llm, question, 16)
    finally:
        llm.close()
    assert theirs.removeprefix("<think>\n\n</think>\n\n").strip() == ours.text  # as in the test above
    # Ollama's prompt (the Modelfile's TEMPLATE in Go, bos as the GGUF says) and llama-cpp-python's (the chat
    # template in Jinja) are the same tokens, so the model sees one bos whichever serves it
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    rendered = go_render(_template_of(modelfile(tokenizer, "model.gguf")), CONVERSATIONS, tmp_path)
    llm = llama_cpp.load(folder / "model.gguf", context=512)
    try:
        stops = [
            line.split('"')[1] for line in modelfile(tokenizer, "model.gguf").splitlines() if "PARAMETER stop" in line
        ]
        assert stops and all(llama_cpp.ends_generation(llm, stop) for stop in stops)  # llama.cpp stops there too
        for conversation, text in zip(CONVERSATIONS, rendered, strict=True):
            if family.name == "gemma2" and conversation[0]["role"] == "system":
                continue  # Gemma 2's template refuses a system message (training merges it; tested above)
            bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
            theirs = llama_cpp.chat_tokens(llm, tokenizer.chat_template, conversation, bos, eos)
            assert llama_cpp.ollama_tokens(llm, text) == theirs, conversation
    finally:
        llm.close()
