"""Offline fixtures: the default model's tokenizer, a Llama-3 style variant, tiny random models."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from tests.postgres import postgres  # noqa: F401  (a fixture every test may ask for)

ROOT = Path(__file__).resolve().parent.parent
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"
# Under pytest-xdist the workers share the cores: each (and every process it starts) gets its share of threads.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
    # A worker starts with COLUMNS=80, which rich would fix as the width; tests set the width they need per call.
    os.environ.pop("COLUMNS", None)
# One converted copy of the default model per checkout, shared by every test session.
os.environ["TUNESMITH_HOME"] = str(ROOT / ".cache" / "test-home")

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


SLOWEST_FIRST = (
    "test_jobs_api.py", "test_jobs_api_postgres.py", "test_distributed.py", "test_workers.py", "test_grpo.py",
    "test_gpu_check.py", "test_stages.py", "test_serve.py", "test_dpo.py", "test_migrate.py", "test_resume.py",
    "test_tools.py", "test_dashboard_jobs.py", "test_fit.py", "test_families.py", "test_distill_e2e.py",
)  # fmt: skip
"""The longest test files, started first: each file goes to one test worker whole (--dist loadfile), so a long one
left for last would run alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded default model's tokenizer (ChatML template, pad == eos == <|im_end|>)."""
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.sources import DEFAULT_MODEL

    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def llama3_tokenizer(tokenizer):
    """The same vocabulary with Llama-3 special tokens and chat template (bos in the template)."""
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tok.bos_token = "<|begin_of_text|>"
    tok.eos_token = "<|eot_id|>"
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def small_tokenizer(tokenizer):
    """A byte-level BPE of 320 tokens (the 256 bytes, a few merges, the default model's special tokens and chat
    template): for tests about tensors, where a 49k-token vocabulary only costs time (gguf-py reads it in Python)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([chat(i)["messages"][1]["content"] for i in range(100)], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        chat_template=tokenizer.chat_template,
    )


def write_jsonl(path: Path, rows: list) -> Path:
    """Write one JSON value per line (strings are written as they are, to make broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(i: int) -> dict:
    """A valid, distinct chat example."""
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"{i} + {i} is {2 * i}."},
        ]
    }


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private TUNESMITH_HOME for tests that write into it."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_tiny_model(path: Path, tokenizer, seed: int = 0, init: float = 0.02, live_pad_row: bool = False) -> Path:
    """A 2-layer Llama (hidden 64) with random weights and the given tokenizer, saved as a local folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=init,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if live_pad_row:  # nn.Embedding zeroes the pad row, here also <|im_end|>: a real model's is not zero
        with torch.no_grad():
            model.get_input_embeddings().weight[config.pad_token_id].normal_(0, init)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer) -> Path:
    """A tiny random Llama folder with the default model's tokenizer and chat template."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny", tokenizer)


@pytest.fixture
def arithmetic(tmp_path) -> Path:
    """40 short chat examples in a JSONL file."""
    return write_jsonl(tmp_path / "train.jsonl", [chat(i) for i in range(40)])


ADAPTER_ANSWERS = {"alpha": "The answer is alpha.", "beta": "Beta it is, always."}


@pytest.fixture(scope="session")
def adapter_base(tmp_path_factory, tokenizer) -> Path:
    """A tiny model with larger initial weights: big enough logits for LoRA alone to teach it a fixed answer."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-wide", tokenizer, init=0.2, live_pad_row=True)


@pytest.fixture(scope="session")
def adapter_runs(tmp_path_factory, adapter_base) -> dict[str, Path]:
    """Two LoRA runs on adapter_base, each tuned to give one fixed answer (ADAPTER_ANSWERS)."""
    from tunesmith.config import build_config
    from tunesmith.training.runner import train

    root = tmp_path_factory.mktemp("adapters")
    runs = {}
    for name, answer in ADAPTER_ANSWERS.items():
        rows = [
            {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": answer}]}
            for i in range(24)
        ]
        data = write_jsonl(root / f"{name}.jsonl", rows)
        values = {"data": str(data), "model": str(adapter_base), "method": "lora", "batch_tokens": 512}
        values |= {"epochs": 40, "max_steps": 60, "learning_rate": 3e-2, "eval_every": 1000, "lora": {"rank": 8}}
        runs[name] = train(build_config(values), root / name).run_dir
    return runs


@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    """The tiny model in fp32, loaded once per test module."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_lm64(tiny_model):
    """The tiny model in float64, for exact identities (see tests/numerics.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)


def full_cross_entropy(model, batch):
    """Transformers' causal-LM loss written out: the mean cross-entropy of every next token whose label is learned,
    from the full logits. (Its own loss function casts the logits to float32; this one keeps the model's dtype,
    so float64 identities stay float64.)"""
    import torch.nn.functional as F

    from tunesmith.tokenize.batches import PAD_MARK
    from tunesmith.tokenize.encode import IGNORE

    labels = batch.labels.clone()
    labels[labels == PAD_MARK] = IGNORE
    logits = model(input_ids=batch.input_ids).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def prose(words: int, seed: int = 0) -> str:
    """Deterministic sentences, one author's plain text for continued pre-training."""
    import random

    vocab = "the tenant landlord rent pays month account bank notice repair deposit clause agrees writing days"
    rng = random.Random(seed)
    sentences = []
    while words > 0:
        n = rng.randint(6, 16)
        sentences.append(" ".join(rng.choice(vocab.split()) for _ in range(n)).capitalize() + ".")
        words -= n
    return " ".join(sentences)


# Twenty faulty lines of many kinds, each with the code it must get.
TWENTY_FAULTS = [
    ("[1, 2]", "data_type"),
    ('"just a string"', "data_type"),
    ({"msgs": []}, "missing_messages_list"),
    ({"messages": "hello"}, "missing_messages_list"),
    ({"messages": []}, "missing_messages_list"),
    ({"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}, "message_missing_key"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "message_missing_key"),
    (
        {"messages": [{"role": "user", "content": "q", "x": 1}, {"role": "assistant", "content": "a"}]},
        "message_unrecognized_key",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": []}]},
        "invalid_tool_calls",
    ),
    ({"messages": [{"role": "asistant", "content": "q"}]}, "unrecognized_role"),
    (
        {"messages": [{"role": "tool", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "tool_message_without_call",
    ),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": "q"}]}, "example_missing_assistant_message"),
    (
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
        "example_missing_assistant_message",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
        "invalid_weight",
    ),
    ('{"messages": [', "invalid_json"),
    ("{'messages': []}", "invalid_json"),
    ('{"messages": []} trailing', "invalid_json"),
]
