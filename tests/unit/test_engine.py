"""The one generation engine: greedy answers are HF generate's, batched answers are one-by-one answers, rows that
join or leave a running batch get the answers they would get alone, a failing request fails alone, the same seed
gives the same sample from every entry point, and text comes out incrementally as whole decoding gives it."""

from __future__ import annotations

import queue
import threading
from functools import partial

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.data.schema import Message
from tunesmith.engine.core import Engine, Request, generate
from tunesmith.engine.sampling import Sampling
from tunesmith.engine.text import TextStream
from tunesmith.evaluate.generate import Generator
from tunesmith.runs import write_run_file
from tunesmith.serve.batcher import Batcher, Busy, Delta, Generation
from tunesmith.serve.loaded import load_models
from tunesmith.tokenize.render import ChatRenderer

PROMPTS = {
    "a": "The weather today is",
    "b": "Summarise the call: the customer asked about a refund for order 1234 and was told",
    "c": " ".join(["A long prompt about invoices, payments and the dates they are due."] * 4),
    "d": "Hi",
}
MAX_TOKENS = {"a": 4, "b": 9, "c": 12, "d": 6}


def _model(path, dtype):
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


@pytest.fixture(scope="module")
def model64(adapter_base):
    """The tiny model with large weights, in float64, so that batching cannot flip a greedy choice: its answers
    depend on every position it attends to."""
    return _model(adapter_base, torch.float64)


@pytest.fixture(scope="module")
def tok(adapter_base):
    return AutoTokenizer.from_pretrained(adapter_base)


def _ids(tok, name):
    return tok(PROMPTS[name], add_special_tokens=False).input_ids


def _request(tok, name, **sampling):
    values = {"max_tokens": MAX_TOKENS[name]} | sampling
    return Request(_ids(tok, name), Sampling(**values), frozenset({int(tok.eos_token_id)}))


def _alone(model, tok, name, **sampling):
    engine = Engine(model, int(tok.pad_token_id))
    request = _request(tok, name, **sampling)
    engine.add(request)
    with torch.inference_mode():
        engine.run()
    return request.answers[0].ids


def test_greedy_answers_are_hf_generates_token_for_token_in_float32(adapter_base, tok):
    model = _model(adapter_base, torch.float32)
    for name in PROMPTS:
        prompt = torch.tensor([_ids(tok, name)])
        with torch.inference_mode():
            out = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=MAX_TOKENS[name], do_sample=False
            )
        assert _alone(model, tok, name) == out[0, prompt.shape[1] :].tolist(), name


def test_batched_answers_equal_one_by_one(model64, tok):
    prompts = [_ids(tok, name) for name in PROMPTS]
    samplings = [Sampling(max_tokens=MAX_TOKENS[name]) for name in PROMPTS]
    options = {"pad_id": int(tok.pad_token_id), "stop_ids": [int(tok.eos_token_id)]}
    together = generate(model64, prompts, samplings, max_batch=8, **options)
    one_by_one = generate(model64, prompts, samplings, max_batch=1, **options)
    assert [a.ids for a in together] == [a.ids for a in one_by_one]
    assert [len(a.ids) for a in together] == list(MAX_TOKENS.values())  # a random model does not stop this early


def test_rows_joining_and_leaving_a_running_batch_get_their_one_by_one_answers(model64, tok):
    engine = Engine(model64, int(tok.pad_token_id), max_batch=8)
    requests = {name: _request(tok, name) for name in PROMPTS}
    sizes = []
    with torch.inference_mode():
        engine.add(requests["a"])
        engine.add(requests["b"])
        for _ in range(3):
            engine.step()
        engine.add(requests["c"])  # longer than the running rows
        for _ in range(6):
            sizes.append(engine.running)
            engine.step()
        engine.add(requests["d"])  # shorter than the running rows
        while not engine.idle:
            sizes.append(engine.running)
            engine.step()
    assert max(sizes) == 3 and min(sizes) == 1  # a and b left while c ran; d joined; the last row ran alone
    for name, request in requests.items():
        assert request.answers[0].ids == _alone(model64, tok, name), name


def test_a_cancelled_request_leaves_at_the_next_step_and_the_others_go_on(model64, tok):
    engine = Engine(model64, int(tok.pad_token_id))
    b, c = _request(tok, "b"), _request(tok, "c")
    with torch.inference_mode():
        engine.add(b)
        engine.add(c)
        engine.step()
        engine.step()
        b.cancelled.set()  # b's client went away
        engine.step()
        assert [row.request for row in engine.batch.rows] == [c]
        engine.run()
    assert b.answers[0].finish == "cancelled" and len(b.answers[0].ids) < MAX_TOKENS["b"]
    assert c.answers[0].ids == _alone(model64, tok, "c")


def test_a_request_that_fails_fails_alone_and_the_engine_goes_on(model64, tok):
    engine = Engine(model64, int(tok.pad_token_id))
    good, bad = _request(tok, "a"), _request(tok, "d")
    bad.prompt = [10**7]  # beyond the vocabulary: the embedding refuses it
    with torch.inference_mode():
        engine.add(_request(tok, "c"))
        engine.step()  # c runs when the two join
        engine.add(bad)
        engine.add(good)
        engine.run()
    assert bad.answers[0].finish == "error" and isinstance(bad.answers[0].error, IndexError)
    assert good.answers[0].ids == _alone(model64, tok, "a")
    later = _request(tok, "b")
    engine.add(later)
    with torch.inference_mode():
        engine.run()
    assert later.answers[0].ids == _alone(model64, tok, "b")


def test_a_seed_gives_the_same_sample_in_every_entry_point_and_alone_or_batched(adapter_base, model64, tok):
    sampling = {"temperature": 1.3, "top_p": 0.9, "seed": 2**63 - 1, "max_tokens": 12}
    alone = _alone(model64, tok, "b", **sampling)
    assert alone != _alone(model64, tok, "b", **(sampling | {"seed": 5}))  # the seed matters
    options = {"pad_id": int(tok.pad_token_id), "stop_ids": [int(tok.eos_token_id)]}
    prompts = [_ids(tok, name) for name in "cbd"]
    batched = generate(model64, prompts, [Sampling(**sampling)] * 3, max_batch=8, **options)
    assert batched[1].ids == alone
    renderer = ChatRenderer(tok)
    generator = Generator(model64, tok, renderer, renderer.stop_token_ids())
    conversation = (Message("user", PROMPTS["b"]),)
    prompt = generator.chat_prompt(conversation)
    chat = Request(prompt, Sampling(**sampling), frozenset(renderer.stop_token_ids()))
    engine = Engine(model64, int(tok.pad_token_id))
    engine.add(chat)
    with torch.inference_mode():
        engine.run()
    expected = tok.decode(chat.answers[0].ids, skip_special_tokens=True)
    assert "".join(generator.stream(conversation, Sampling(**sampling))) == expected
    assert generator.generate([conversation], Sampling(**sampling))[0].text == expected.strip()
    served = _served_answer(adapter_base, prompt, Sampling(**sampling))
    assert served == expected


def _served_answer(adapter_base, prompt, sampling):
    """What the server's generation thread answers (float64, as above)."""
    batcher = Batcher(load_models(str(adapter_base), [], dtype="float64", device="cpu"))
    pieces: queue.Queue[Delta] = queue.Queue()
    served = next(iter(batcher.models.served.values()))
    batcher.submit(Generation(prompt, served, sampling, (), 1, pieces.put))
    text = ""
    while True:
        piece = pieces.get(timeout=60)
        text += piece.text
        if piece.finish:
            return text


def test_text_comes_out_incrementally_as_whole_decoding_gives_it_and_stops_at_a_stop_string(tok):
    text = "Grüße, 世界! Refund 1234 approved.\nNext steps: call back."
    ids = tok(text, add_special_tokens=False).input_ids
    stream = TextStream(tok)
    pieces = [stream.update(ids[: i + 1], i == len(ids) - 1) for i in range(len(ids))]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)  # half characters are held back
    stopping = TextStream(tok, stop=("approved",))
    shown = "".join(stopping.update(ids[: i + 1], i == len(ids) - 1) for i in range(len(ids)))
    assert shown == "Grüße, 世界! Refund 1234 " and stopping.stopped


def test_a_full_queue_refuses_instead_of_growing():
    idle = Batcher.__new__(Batcher)  # the queue alone, without a thread taking from it
    idle.waiting = queue.Queue(maxsize=2)
    job = Generation([1, 2], None, Sampling(4), (), 1, lambda piece: None)  # type: ignore[arg-type]
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
    return Batcher(load_models(str(adapter_base), finals, dtype="float64", device="cpu"), max_batch=8)


def _collect(sink: list[Delta], done: threading.Semaphore, piece: Delta) -> None:
    sink.append(piece)
    if piece.finish:
        done.release()


def _submit_all(batcher: Batcher, asks: list[tuple[str, str]]) -> dict[str, str]:
    """Submit (model, prompt name) pairs at once; the text each model answered."""
    answers: dict[str, list[Delta]] = {}
    done = threading.Semaphore(0)
    for model, name in asks:
        served = batcher.models.served[model]
        send = partial(_collect, answers.setdefault(model, []), done)
        batcher.submit(
            Generation(_ids(batcher.models.tokenizer, name), served, Sampling(MAX_TOKENS[name]), (), 1, send)
        )
    for _ in asks:
        assert done.acquire(timeout=60)
    assert all(pieces[-1].finish == "length" for pieces in answers.values())  # none failed
    return {model: "".join(p.text for p in pieces) for model, pieces in answers.items()}


def test_a_dora_adapter_answers_beside_the_base_and_lora_as_it_does_alone(mixed):
    """PEFT cannot mix DoRA rows into a batch: they wait for a batch of their own, and nothing fails."""
    models = list(mixed.models.served)  # the base, then the two runs in the order given
    asks = list(zip(models, "bcb", strict=True))
    together = _submit_all(mixed, asks)
    for ask in asks:
        assert together[ask[0]] == _submit_all(mixed, [ask])[ask[0]], ask
    assert together[models[2]] != _submit_all(mixed, [(models[0], "b")])[models[0]]  # DoRA changes the answer
