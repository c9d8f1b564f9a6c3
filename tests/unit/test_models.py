"""Model sources: the embedded default, local folders, GGUF files, hub ids, and clear errors."""

from __future__ import annotations

import time

import pytest
import torch

from tests.conftest import make_tiny_model
from tunesmith.errors import ModelError
from tunesmith.models.load import load_model, load_tokenizer, pick_dtype
from tunesmith.models.sources import DEFAULT_MODEL, model_source


def test_local_folder_loads(tmp_path, tokenizer):
    folder = make_tiny_model(tmp_path / "tiny", tokenizer)
    assert model_source(str(folder)).kind == "folder"
    model = load_model(str(folder))
    assert model.config.num_hidden_layers == 2
    assert load_tokenizer(str(folder)).chat_template == tokenizer.chat_template
    assert list(folder.glob("*.safetensors"))


def test_unknown_names_get_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found: not a short name"):
        model_source("nope")
    with pytest.raises(ModelError, match="GGUF file not found"):
        model_source(str(tmp_path / "m.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"folder has no config\.json"):
        model_source(str(tmp_path / "empty"))


def test_unreachable_hub_id_says_what_was_tried():
    with pytest.raises(ModelError, match=r"not a short name, local folder or \.gguf file, and the hub could not"):
        load_tokenizer("no-such-org-xyz/no-such-model")


def test_dtype_follows_the_device():
    assert pick_dtype(torch.device("cpu"), "float32") == torch.float32
    assert pick_dtype(torch.device("cpu")) in (torch.float32, torch.bfloat16)
    with pytest.raises(ModelError, match="dtype 'fp8' is unknown"):
        pick_dtype(torch.device("cpu"), "fp8")


@pytest.mark.slow
def test_default_model_loads_fast_from_its_cache(tokenizer):
    load_model(DEFAULT_MODEL)  # converted by the tokenizer fixture already
    start = time.perf_counter()
    model = load_model(DEFAULT_MODEL)
    assert time.perf_counter() - start < 5
    assert model.config.num_hidden_layers == 30 and not hasattr(model.config, "quantization_config")
    assert tokenizer.eos_token == "<|im_end|>"


def test_atomic_writes_are_readable_and_keep_an_existing_mode(tmp_path):
    from tunesmith.paths import write_text_atomic

    target = tmp_path / "report.json"
    write_text_atomic(target, "{}")
    assert target.stat().st_mode & 0o777 == 0o644 and target.read_text() == "{}"
    target.chmod(0o600)
    write_text_atomic(target, "[]")
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_text() == "[]"


def test_a_broken_gguf_file_is_one_line_whether_its_tokenizer_or_its_model_is_asked_for(tmp_path, home):
    gguf = tmp_path / "bad.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    for load in (load_tokenizer, load_model):
        with pytest.raises(ModelError, match=r"could not convert .*bad\.gguf: ") as error:
            load(str(gguf))
        assert str(error.value).count("could not convert") == 1 and "\n" not in str(error.value)
    assert not list((home / "models").rglob("tunesmith-source.json"))  # nothing half-written is taken as done
