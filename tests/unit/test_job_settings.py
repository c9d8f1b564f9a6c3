"""A job's OpenAI hyperparameters, and tunesmith's own, become training settings (docs/from-openai.md)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import chat
from tunesmith.auto import auto_learning_rate
from tunesmith.config import build_config
from tunesmith.jobs.files import store_bytes
from tunesmith.jobs.records import JobRecord, new_id
from tunesmith.jobs.schemas import JobRequest
from tunesmith.jobs.store import Store
from tunesmith.jobs.validation import job_settings
from tunesmith.models.load import model_width


def _job(store: Store, model: str, hyper: dict) -> JobRecord:
    data = "".join(json.dumps(chat(i)) + "\n" for i in range(12)).encode()
    record = store_bytes(data, "sums.jsonl", "fine-tune")
    store.add_file(record)
    return JobRecord(new_id("ftjob-"), 1, model, record.id, None, hyper, {"type": "supervised"}, None, 7, None, "x")


@pytest.mark.parametrize(
    ("hyper", "expected"),
    [
        ({}, {"method": "lora", "learning_rate": 1.0, "rank": 16}),
        (
            {"finetuning_type": "dora", "lora_rank": 4, "learning_rate_multiplier": 2.0},
            {"method": "dora", "learning_rate": 2.0, "rank": 4},
        ),
        (
            {"finetuning_type": "full", "learning_rate_multiplier": 0.5, "n_epochs": 2},
            {"method": "full", "learning_rate": 0.5, "epochs": 2},
        ),
    ],
)
def test_hyperparameters_become_the_run_settings(home, tiny_model, hyper, expected):
    store = Store()
    given = JobRequest(model="m", training_file="f", hyperparameters=hyper).chosen_hyperparameters().model_dump()
    config = build_config(job_settings(store, _job(store, str(tiny_model), given)), "test")
    assert config.method == expected["method"] and config.seed == 7
    if "rank" in expected:
        assert config.lora.rank == expected["rank"]
    assert config.epochs == expected.get("epochs", "auto")
    auto = auto_learning_rate(config.method, model_width(str(tiny_model)))  # expected: multiples of it
    rate = config.learning_rate if config.learning_rate != "auto" else auto
    assert rate == pytest.approx(expected["learning_rate"] * auto)


@pytest.mark.parametrize("hyper", [{"n_epochs": "auto", "lora_rank": "auto", "batch_size": "auto"}, {}])
def test_auto_may_be_said_or_left_out(hyper):
    assert JobRequest(model="m", training_file="f", hyperparameters=hyper).chosen_hyperparameters().n_epochs == "auto"


def test_a_finished_openai_job_maps_by_the_values_its_auto_became_and_its_wandb_integration(tmp_path, tiny_model):
    from tunesmith.jobs.validation import OpenAIJob, openai_settings

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(12)))
    shown = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8, "eval_interval": 7, "beta": None}
    wandb = [{"type": "wandb", "wandb": {"project": "moved", "tags": ["openai"]}}]
    asked = OpenAIJob(str(tiny_model), str(train), None, shown, "supervised", 11, {}, wandb, "ftjob-abc")
    config = build_config(openai_settings(asked, "test"), "test")
    auto = auto_learning_rate("lora", model_width(str(tiny_model)))
    assert config.epochs == 3 and config.seed == 11 and config.learning_rate == pytest.approx(1.8 * auto)
    assert config.grad_accum == 1 and config.preference.beta == "auto"  # unknown keys and None are left alone
    assert config.report_to == ("wandb",) and config.tracking.project == "moved"
    assert config.tracking.name == "ftjob-abc" and config.tracking.tags == ("openai",)
