"""Export round trips: merged safetensors and GGUF read back by plain transformers with the same logits."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.errors import ExportError
from tunesmith.export import writer as export_run
from tunesmith.export.gguf_file import write_gguf
from tunesmith.export.ollama import modelfile
from tunesmith.export.writer import DTYPES, ExportRequest, export
from tunesmith.models.load import cached_models, load_model, load_tokenizer, model_width
from tunesmith.models.sources import model_source

PROMPT = "<|im_start|>user\nQuestion 3?<|im_end|>\n<|im_start|>assistant\n"


def _logits(model, tokenizer, text=PROMPT):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits[0].float()


def _merged_reference(adapter_run, adapter_base):
    """The merge done by hand in float64, W + s * B @ A, and the magnitudes it sums, |W| + s * |B| @ |A|."""
    base = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch.float64)
    config = json.loads((adapter_run / "final" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    adapter = load_file(adapter_run / "final" / "adapter_model.safetensors")
    weights = {k: v.clone() for k, v in base.state_dict().items()}
    magnitudes = {k: v.abs() for k, v in weights.items()}
    for name, a in adapter.items():
        if ".lora_A." in name:
            b = adapter[name.replace(".lora_A.", ".lora_B.")].double()
            target = name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            weights[target] += scale * (b @ a.double())
            magnitudes[target] += scale * (b.abs() @ a.double().abs())
    return weights, magnitudes, config["r"]


def test_merged_export_loads_with_plain_transformers_and_equals_base_plus_adapter(adapter_runs, adapter_base, tmp_path):
    folder = export(ExportRequest(str(adapter_runs["alpha"]), "merged", "f32", tmp_path / "merged"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(adapter_base).chat_template
    assert not (folder / "adapter_config.json").exists() and (folder / "model.safetensors").is_file()
    expected, magnitudes, rank = _merged_reference(adapter_runs["alpha"], adapter_base)
    got = model.state_dict()
    assert expected.keys() == got.keys()
    for name, want in expected.items():
        # merged in float32: B @ A sums r products (gamma_r), then the scaling, the addition to W and the final
        # cast round once each: within (r + 3) * 2^-24 of the magnitudes summed
        bound = (rank + 3) * 2.0**-24 * magnitudes[name]
        assert ((got[name].double() - want).abs() <= bound).all(), name


def _cast_like_the_file(model, dtype):
    """The weights a GGUF file of `dtype` holds: matrices in dtype, norms and biases (1-d) kept in float32."""
    return {name: (w.to(DTYPES[dtype]) if w.ndim == 2 else w).float() for name, w in model.state_dict().items()}


def _read_gguf(path, reader):
    """(model, tokenizer) of a GGUF file: by plain transformers, or as a user's `--model file.gguf` (its tokenizer
    and config first, then the weights converted once into tunesmith's model cache and loaded from it)."""
    if reader == "transformers":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    source = model_source(str(path))
    tokenizer = load_tokenizer(str(path))
    assert source.kind == "gguf" and model_width(str(path)) == 64  # tokenizer and config alone: no weights yet
    assert not source.cache_dir.exists() and not cached_models()
    model = load_model(str(path), dtype="float32")
    assert cached_models() == [source.cache_dir] and (source.cache_dir / "model.safetensors").is_file()
    return model, tokenizer


@pytest.mark.parametrize(("dtype", "reader"), [("f32", "tunesmith"), ("f16", "transformers")])
def test_gguf_export_reads_back_with_the_merged_weights_bit_for_bit(adapter_runs, tmp_path, home, dtype, reader):
    run = adapter_runs["alpha"]
    merged = AutoModelForCausalLM.from_pretrained(
        export(ExportRequest(str(run), "merged", "f32", tmp_path / "merged")), dtype=torch.float32
    )
    folder = export(ExportRequest(str(run), "gguf", dtype, tmp_path / dtype))
    back, tokenizer = _read_gguf(folder / "model.gguf", reader)
    reference = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tokenizer(PROMPT).input_ids == reference(PROMPT).input_ids
    assert tokenizer.chat_template == reference.chat_template
    # storing is exact: the file holds the merged weights cast to its dtype, bit for bit, so the logits agree too
    expected = _cast_like_the_file(merged, dtype)
    got = back.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    assert (folder / "Modelfile").read_text().startswith("FROM ./model.gguf\n")


def _tiny(kind, tokenizer):
    common = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    common |= {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
    torch.manual_seed(0)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False)).eval()
    return MistralForCausalLM(MistralConfig(**common, tie_word_embeddings=False)).eval()


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_gguf_round_trips_other_llama_family_layouts(kind, small_tokenizer, tmp_path):
    tokenizer = small_tokenizer  # the layouts are the matter here; a 49k vocabulary would only cost time
    model = _tiny(kind, tokenizer)
    write_gguf(model, tokenizer, tmp_path / "m.gguf", "f32", name="tiny")  # transformers reads "mistral" names oddly
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    expected, got = model.state_dict(), back.state_dict()  # f32 storage is exact: the same bits come back
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    assert torch.equal(_logits(back, tokenizer), _logits(model, tokenizer))


def test_unsupported_architecture_gets_one_line_naming_what_is_supported(tokenizer, tmp_path):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    supported = "llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3"
    with pytest.raises(ExportError, match=f"GGUF export supports {supported} models; this one is 'gpt2'"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf", "f32", name="x")
    assert not (tmp_path / "x.gguf").exists()


def test_cli_errors_are_one_line_with_exit_code_2(adapter_runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(adapter_runs["alpha"]), "--format", "onnx"])
    assert result.exit_code == 2 and "format 'onnx' is unknown" in result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "gguf"])
    assert result.exit_code == 2 and "is not a run folder" in result.output
    result = runner.invoke(app, ["export", str(adapter_runs["alpha"]), "--format", "gguf", "--dtype", "bf16"])
    assert result.exit_code == 2 and "dtype 'bf16' is not available for gguf" in result.output


def test_adapter_export_is_the_trained_adapter(adapter_runs, tmp_path):
    folder = export(ExportRequest(str(adapter_runs["beta"]), "adapter", out=tmp_path / "a"))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 8
    original = (adapter_runs["beta"] / "final" / "adapter_model.safetensors").read_bytes()
    assert (folder / "adapter_model.safetensors").read_bytes() == original


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour.\nJust one."}],
    [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
]

GO_RENDER = """package main

import (
\t"encoding/json"
\t"os"
\t"text/template"
)

type ToolCall struct {
\tFunction map[string]any `json:"function"`
}

// Ollama's message: its tool calls too (a TEMPLATE may look at them)
type Message struct {
\tRole      string     `json:"role"`
\tContent   string     `json:"content"`
\tToolCalls []ToolCall `json:"tool_calls"`
}

func main() {
\tsource, _ := os.ReadFile(os.Args[1])
\tvar conversations [][]Message
\tjson.NewDecoder(os.Stdin).Decode(&conversations)
\ttmpl := template.Must(template.New("t").Parse(string(source)))
\tfor _, messages := range conversations {
\t\ttmpl.Execute(os.Stdout, map[string]any{"Messages": messages})
\t\tos.Stdout.WriteString("\\x00")
\t}
}
"""


def _template_of(text):
    return text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]


def go_render(template: str, conversations: list, folder, program: str = GO_RENDER) -> list[str]:
    """Each conversation rendered by Go's text/template (as Ollama renders its TEMPLATE), by `program`."""
    (folder / "render.go").write_text(program)
    (folder / "template.txt").write_text(template)
    done = subprocess.run(
        ["go", "run", str(folder / "render.go"), str(folder / "template.txt")],
        input=json.dumps(conversations),
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
        env={**os.environ, "GOCACHE": str(folder / "gocache")},
    )
    return done.stdout.split("\x00")[:-1]


@pytest.mark.skipif(
    shutil.which("go") is None, reason="needs Go's text/template (Debian golang-go; .ci/run installs it)"
)
def test_modelfile_template_renders_like_the_chat_template(tokenizer, llama3_tokenizer, tmp_path):
    for tok in (tokenizer, llama3_tokenizer):
        rendered = go_render(_template_of(modelfile(tok, "model.gguf")), CONVERSATIONS, tmp_path)
        expected = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CONVERSATIONS]
        assert rendered == expected


def test_modelfile_stops_at_the_end_of_turn_token(tokenizer, llama3_tokenizer):
    assert 'PARAMETER stop "<|im_end|>"' in modelfile(tokenizer, "model.gguf")
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile(llama3_tokenizer, "model.gguf")


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_full_disk_or_ctrl_c_during_export_keeps_the_previous_export_whole(
    adapter_runs, tmp_path, monkeypatch, fault
):
    out = tmp_path / "exports" / "gguf"
    export(ExportRequest(str(adapter_runs["alpha"]), "gguf", "f16", out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fails(model, tokenizer, path, *rest):
        path.write_bytes(b"half a file")
        raise fault

    monkeypatch.setattr(export_run, "write_gguf", fails)
    if isinstance(fault, OSError):
        with pytest.raises(ExportError, match=r"could not write the export \(No space left on device\); what was"):
            export(ExportRequest(str(adapter_runs["alpha"]), "gguf", "f32", out))
    else:
        with pytest.raises(KeyboardInterrupt):
            export(ExportRequest(str(adapter_runs["alpha"]), "gguf", "f32", out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["gguf"]  # no temporary folder left


def test_a_qlora_adapter_is_merged_into_the_full_precision_base_and_export_says_so(adapter_runs, tmp_path, caplog):
    run = tmp_path / "qlora"
    shutil.copytree(adapter_runs["alpha"], run)
    info = json.loads((run / "final" / "tunesmith-run.json").read_text())
    (run / "final" / "tunesmith-run.json").write_text(json.dumps(info | {"quantize": "4bit"}))
    with caplog.at_level("WARNING"):
        folder = export(ExportRequest(str(run), "merged", "f32", tmp_path / "merged"))
    assert "trained on a 4bit-quantised base (QLoRA)" in caplog.text and "full-precision weights" in caplog.text
    plain = export(ExportRequest(str(adapter_runs["alpha"]), "merged", "f32", tmp_path / "plain"))
    assert (folder / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()


def test_a_trained_adapter_is_one_vllm_serves_and_the_export_says_how(adapter_runs, tmp_path):
    from tunesmith.export.vllm import vllm_problems

    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, ["export", str(adapter_runs["beta"]), "--format", "adapter", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert vllm_problems(json.loads((out / "adapter_config.json").read_text())) == []
    assert "--enable-lora --max-lora-rank 8 --lora-modules" in " ".join(result.output.split())
