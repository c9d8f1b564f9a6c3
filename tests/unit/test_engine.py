"""Continuous batching: rows that join a running batch, or leave it, get the answers they would get alone."""

from __future__ import annotations

import queue
import threading
from functools import partial

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.runs import write_run_file
from tunesmith.serve.engine import Busy, Delta, Engine, Job, RequestSampling, _rows
from tunesmith.serve.loaded import load_models

PROMPTS = {
    "a": "The weather today is",
    "b": "Summarise the call: the customer asked about a refund for order 1234 and was told",
    "c": " ".join(["A long prompt about invoices, payments and the dates they are due."] * 4),
    "d": "Hi",
}
MAX_TOKENS = {"a": 4, "b": 9, "c": 12, "d": 6}


@pytest.fixture(scope="module")
def engine(adapter_base):
    """The tiny model with large weights: its answers depend on every position it attends to. In float64, so that
    batching cannot flip a greedy choice (see test_batched_greedy_answers_equal_one_by_one)."""
    return Engine(load_models(str(adapter_base), [], dtype="float64", device="cpu"), max_batch=8)


def _jobs(engine: Engine, names: str, answers: dict[str, list[Delta]], model: str | None = None) -> list[Job]:
    served = engine.models.served[model] if model else next(iter(engine.models.served.values()))
    jobs = []
    for name in names:
        prompt = engine.models.tokenizer(PROMPTS[name], add_special_tokens=False).input_ids
        sampling = RequestSampling(MAX_TOKENS[name], temperature=0.0, top_p=1.0, stop=(), seed=None)
        jobs.append(Job(prompt, served, sampling, 1, answers.setdefault(name, []).append))
    return jobs


def _text(pieces: list[Delta]) -> tuple[str, int]:
    return "".join(p.text for p in pieces), pieces[-1].tokens


def _alone(engine: Engine, name: str, model: str | None = None) -> tuple[str, int]:
    answers: dict[str, list[Delta]] = {}
    with torch.inference_mode():
        batch = engine._step(None, _rows(_jobs(engine, name, answers, model)))
        while batch is not None:
            batch = engine._step(batch, [])
    return _text(answers[name])


def test_rows_joining_and_leaving_a_running_batch_get_their_one_by_one_answers(engine):
    answers: dict[str, list[Delta]] = {}
    sizes = []
    with torch.inference_mode():
        batch = engine._step(None, _rows(_jobs(engine, "ab", answers)))
        for _ in range(2):
            batch = engine._step(batch, [])
        batch = engine._step(batch, _rows(_jobs(engine, "c", answers)))  # longer than the running rows
        for _ in range(5):
            sizes.append(len(batch.rows))
            batch = engine._step(batch, [])
        batch = engine._step(batch, _rows(_jobs(engine, "d", answers)))  # shorter than the running rows
        while batch is not None:
            sizes.append(len(batch.rows))
            batch = engine._step(batch, [])
    assert max(sizes) == 3 and min(sizes) == 1  # a and b left while c ran; d joined; the last row ran alone
    for name in PROMPTS:
        text, tokens = _text(answers[name])
        assert tokens == MAX_TOKENS[name]  # a random model does not say its end-of-turn token this early
        assert (text, tokens) == _alone(engine, name), name


def test_a_cancelled_request_leaves_the_batch_at_the_next_token_and_the_others_go_on(engine):
    answers: dict[str, list[Delta]] = {}
    with torch.inference_mode():
        jobs = _jobs(engine, "bc", answers)
        batch = engine._step(None, _rows(jobs))
        batch = engine._step(batch, [])
        jobs[0].cancelled.set()  # b's client went away
        batch = engine._step(batch, [])
        assert [row.job for row in batch.rows] == [jobs[1]]
        while batch is not None:
            batch = engine._step(batch, [])
    assert not answers["b"][-1].finish  # b never got a last piece: nobody was listening
    assert _text(answers["c"]) == _alone(engine, "c")


def test_a_full_queue_refuses_instead_of_growing():
    idle = Engine.__new__(Engine)  # the queue alone, without a worker thread taking from it
    idle.waiting = queue.Queue(maxsize=2)
    job = Job([1, 2], None, RequestSampling(4, 0.0, 1.0, (), None), 1, lambda piece: None)  # type: ignore[arg-type]
    idle.submit(job)
    idle.submit(job)
    with pytest.raises(Busy):
        idle.submit(job)


@pytest.fixture(scope="module")
def mixed(adapter_base, tmp_path_factory):
    """The base with a LoRA and a DoRA adapter (random, non-zero weights), served together."""
    finals = []
    for method in ("lora", "dora"):
        torch.manual_seed(len(method) + len(finals))
        model = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch.float64)
        config = LoraConfig(r=4, target_modules="all-linear", use_dora=method == "dora", init_lora_weights=False)
        final = tmp_path_factory.mktemp(method) / "final"
        get_peft_model(model, config).save_pretrained(final)
        AutoTokenizer.from_pretrained(adapter_base).save_pretrained(final)
        write_run_file(final, str(adapter_base), method, "sft")
        finals.append(str(final))
    return Engine(load_models(str(adapter_base), finals, dtype="float64", device="cpu"), max_batch=8)


def _collect(sink: list[Delta], done: threading.Semaphore, piece: Delta) -> None:
    sink.append(piece)
    if piece.finish:
        done.release()


def test_a_dora_adapter_answers_beside_the_base_and_lora_as_it_does_alone(mixed):
    """PEFT cannot mix DoRA rows into a batch: they wait for a batch of their own, and nothing fails."""
    models = list(mixed.models.served)  # the base, then the two runs in the order given
    answers: dict[str, list[Delta]] = {}
    done = threading.Semaphore(0)
    jobs = []
    for model, name in zip(models, "bcb", strict=True):
        (job,) = _jobs(mixed, name, {}, model)
        job.send = partial(_collect, answers.setdefault(model, []), done)
        jobs.append(job)
    for job in jobs:
        mixed.submit(job)
    for _ in jobs:
        assert done.acquire(timeout=60)
    texts = {model: _text(answers[model]) for model in models}
    assert all(answers[model][-1].finish == "length" for model in models)  # none failed
    for model, name in zip(models, "bcb", strict=True):
        assert texts[model] == _alone(mixed, name, model), model
    assert texts[models[2]] != _alone(mixed, "b", models[0])  # the DoRA adapter does change the answer
