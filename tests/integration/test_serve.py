"""The server, through the official openai client: a real process on 127.0.0.1, a tiny base and two adapters."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests import launch
from tests.conftest import ADAPTER_ANSWERS

KEY = "test-key-123"


def _http(method, url, key=None):
    """(status, JSON body) of a raw request."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, method=method, headers=headers, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model, *options: str) -> tuple[launch.Launched, str]:
    """`tunesmith serve` on a free port of 127.0.0.1, once it answers: (process, base URL)."""
    port = _port()
    process = launch.start(["serve", "--model", str(model), "--port", str(port), *options])
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.output()[1]}")
        try:
            _http("GET", f"{url}/v1/models")
            return process, url
        except OSError:
            time.sleep(0.25)
    pytest.fail("the server did not answer in 60 s")


@contextmanager
def serving(model, *options: str, home: Path | None = None) -> Iterator[tuple[launch.Launched, str]]:
    """`tunesmith serve` for the length of the block, with its own TUNESMITH_HOME when given: (process, URL)."""
    with pytest.MonkeyPatch.context() as patch:
        if home is not None:
            patch.setenv("TUNESMITH_HOME", str(home))
        process, url = start_server(model, *options)
    try:
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(adapter_runs, adapter_base):
    adapters = ["--adapter", str(adapter_runs["alpha"]), "--adapter", str(adapter_runs["beta"])]
    process, url = start_server(adapter_base, *adapters, "--api-key", KEY, "--dtype", "float32")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def ids(client):
    """Model ids by name: base, alpha, beta."""
    listed = [m.id for m in client.models.list().data]
    found = {"base": listed[0]}
    for name in ADAPTER_ANSWERS:
        found[name] = next(i for i in listed if i.startswith("ft:") and f":{name}:" in i)
    return found


def _ask(client, model, content="Question 5?", **options):
    values = {"temperature": 0, "max_tokens": 24} | options
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **values)
    return reply


def test_models_are_the_base_and_one_ft_id_per_run(client, ids, adapter_base):
    listed = client.models.list().data
    assert len(listed) == 3 and all(m.object == "model" for m in listed)
    assert ids["base"] == adapter_base.name
    assert ids["alpha"].startswith(f"ft:{adapter_base.name}:alpha:") and ids["beta"].startswith(
        f"ft:{adapter_base.name}:beta:"
    )
    assert client.models.retrieve(ids["alpha"]).id == ids["alpha"]


def test_each_adapter_answers_with_its_tuned_behaviour_and_the_base_does_not(client, ids):
    for name, answer in ADAPTER_ANSWERS.items():
        reply = _ask(client, ids[name], "Question 31?")
        assert reply.choices[0].message.content == answer
        assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
        assert (
            reply.usage.prompt_tokens > 0
            and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        )
    assert _ask(client, ids["base"], "Question 31?").choices[0].message.content not in ADAPTER_ANSWERS.values()


def test_concurrent_requests_for_different_models_are_batched_and_each_gets_its_own(client, ids):
    names = ["alpha", "beta", "base", "beta", "alpha", "alpha", "base", "beta"]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda n: _ask(client, ids[n]).choices[0].message.content, names))
    base_answer = _ask(client, ids["base"]).choices[0].message.content
    expected = [ADAPTER_ANSWERS.get(n, base_answer) for n in names]
    assert replies == expected


def test_streaming_sends_the_same_answer_piece_by_piece(client, ids):
    stream = client.chat.completions.create(
        model=ids["beta"],
        messages=[{"role": "user", "content": "Question 8?"}],
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ADAPTER_ANSWERS["beta"]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stop_strings_end_the_answer(client, ids):
    reply = _ask(client, ids["alpha"], stop=["alpha"])
    assert reply.choices[0].message.content == "The answer is "
    assert reply.choices[0].finish_reason == "stop"


def test_completions_continue_text_and_respect_max_tokens(client, ids):
    reply = client.completions.create(model=ids["base"], prompt="Once upon a time", max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5 and len(reply.choices[0].text) > 0
    streamed = client.completions.create(
        model=ids["base"], prompt="Once upon a time", max_tokens=5, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


def test_completion_logprobs_are_the_models_own(client, ids, adapter_base):
    """The first token's log-prob and alternatives equal the model's log-softmax, computed here on its own."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reply = client.completions.create(model=ids["base"], prompt="Once upon a time", max_tokens=4, temperature=0,
                                      logprobs=3)  # fmt: skip
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == 4
    tokenizer = AutoTokenizer.from_pretrained(adapter_base)
    model = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch.float32)
    with torch.no_grad():
        ids_in = torch.tensor([tokenizer("Once upon a time").input_ids])
        want = model(input_ids=ids_in).logits[0, -1].log_softmax(-1)
    values, top = want.topk(3)
    assert logprobs.token_logprobs[0] == pytest.approx(float(values[0]), abs=1e-4)  # greedy: the likeliest token
    assert list(logprobs.top_logprobs[0]) == [tokenizer.decode([i]) for i in top.tolist()]
    assert list(logprobs.top_logprobs[0].values()) == pytest.approx(values.tolist(), abs=1e-4)


def test_chat_logprobs_stream_and_whole_agree_and_top_logprobs_are_sorted(client, ids):
    options = {"logprobs": True, "top_logprobs": 5}
    reply = _ask(client, ids["beta"], **options)
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for token in content:
        tops = [t.logprob for t in token.top_logprobs]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True) and token.logprob == tops[0] <= 0
        assert bytes(token.bytes).decode() == token.token
    stream = client.chat.completions.create(
        model=ids["beta"], messages=[{"role": "user", "content": "Question 5?"}], temperature=0, max_tokens=24,
        stream=True, **options,
    )  # fmt: skip
    streamed = [t for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]
    assert _ask(client, ids["beta"]).choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError):
        _ask(client, ids["beta"], top_logprobs=2)  # top_logprobs without logprobs, as OpenAI refuses it
    with pytest.raises(openai.BadRequestError):
        _ask(client, ids["beta"], logprobs=True, top_logprobs=21)


def test_sampling_with_a_seed_repeats_and_n_gives_several_answers(client, ids):
    options = {"temperature": 1.0, "top_p": 0.9, "seed": 7, "n": 2}
    first = _ask(client, ids["base"], **options)
    second = _ask(client, ids["base"], **options)
    assert len(first.choices) == 2 and [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]


def test_a_seed_gives_the_api_and_the_command_line_the_same_sampled_answer(client, ids, adapter_runs):
    """float32 on both sides: the server's adapter per row, the command line's adapter merged into its model."""
    options = {"temperature": 1.0, "top_p": 0.9, "seed": 11, "max_tokens": 16}
    served = _ask(client, ids["alpha"], "Question 3?", **options).choices[0].message.content
    assert served != _ask(client, ids["alpha"], "Question 3?", **(options | {"seed": 12})).choices[0].message.content
    command = ["generate", "--model", str(adapter_runs["alpha"]), "--prompt", "Question 3?", "--dtype", "float32"]
    command += ["--temperature", "1.0", "--top-p", "0.9", "--seed", "11", "--max-tokens", "16"]
    done = launch.run(command, env={**os.environ, "COLUMNS": "1000"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == served.strip()


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
    ],
)
def test_invalid_parameters_are_400_errors_naming_the_parameter(client, ids, options, param):
    values = {"temperature": 0, "max_tokens": 8} | options
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=ids["base"], messages=[{"role": "user", "content": "hi"}], **values)
    error = caught.value.body
    assert caught.value.status_code == 400 and error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_prompt_beyond_the_context_is_a_400_error(client, ids):
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, ids["base"], "word " * 1100)
    assert caught.value.code == "context_length_exceeded" and caught.value.body["param"] == "max_tokens"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        _ask(client, "ft:nothing:here:00000000")
    assert caught.value.code == "model_not_found" and caught.value.body["param"] == "model"


def test_every_route_needs_the_key(server, ids):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        _ask(wrong, ids["alpha"])
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/nothing"), ("GET", "/docs")]:
        status, body = _http(method, f"{server}{path}")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = _http("GET", f"{server}/nothing", KEY)
    assert status == 404 and body["error"]["code"] == "not_found"
