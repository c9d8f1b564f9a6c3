"""Continuous batching: rows that join a running batch, or leave it, get the answers they would get alone."""

from __future__ import annotations

import queue

import pytest
import torch

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


def _jobs(engine: Engine, names: str, answers: dict[str, list[Delta]]) -> list[Job]:
    served = next(iter(engine.models.served.values()))
    jobs = []
    for name in names:
        prompt = engine.models.tokenizer(PROMPTS[name], add_special_tokens=False).input_ids
        sampling = RequestSampling(MAX_TOKENS[name], temperature=0.0, top_p=1.0, stop=(), seed=None)
        jobs.append(Job(prompt, served, sampling, 1, answers.setdefault(name, []).append))
    return jobs


def _text(pieces: list[Delta]) -> tuple[str, int]:
    return "".join(p.text for p in pieces), pieces[-1].tokens


def _alone(engine: Engine, name: str) -> tuple[str, int]:
    answers: dict[str, list[Delta]] = {}
    with torch.inference_mode():
        batch = engine._step(None, _rows(_jobs(engine, name, answers)))
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
