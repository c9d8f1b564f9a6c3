"""The server under bad and heavy use: malformed and absurd requests, oversized bodies, overload, clients that
leave mid-stream, many clients at once. Never a 5xx; every error an OpenAI error object; the server keeps answering."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.test_serve import serving

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def small_server(adapter_base):
    """One answer at a time and one request waiting, so that overload is easy to reach: (process, URL)."""
    with serving(adapter_base, "--dtype", "float32", "--max-batch", "1", "--max-waiting", "1") as (process, url):
        yield process, urlparse(url)


@pytest.fixture(scope="module")
def small(small_server):
    return small_server[1]


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (all threads, user + system): unlike wall time, other load does not inflate it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send(url, method, path, body=b"", headers=None):
    """(status, headers, JSON body) of one raw request."""
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _chat(url, model="tiny", **fields):
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4} | fields
    return _send(url, "POST", CHAT, json.dumps(body).encode())


def _model(url):
    return _send(url, "GET", "/v1/models")[2]["data"][0]["id"]


def _assert_error(status, body, expected_status, code=None, param=None):
    assert status == expected_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert code is None or error["code"] == code, error
    assert param is None or error["param"] == param, error


BAD_BODIES = [
    (b"{not json", None),
    (b"[1, 2, 3]", None),
    (b'{"model": 5, "messages": "hi"}', None),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "model"),
    (json.dumps({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}).encode(), None),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": [1, 2]}]}).encode(), None),
    (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
    ("\udcff".encode("utf-8", "surrogatepass"), None),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
def test_malformed_requests_are_400_error_objects(small, body, param):
    status, _, answer = _send(small, "POST", CHAT, body)
    _assert_error(status, answer, 400, param=param)


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"n": 1000}, "invalid_value", "n"),
        ({"max_tokens": 10**9}, "context_length_exceeded", "max_tokens"),
        ({"max_tokens": 10**30}, "context_length_exceeded", "max_tokens"),
        ({"stop": [f"s{i}" for i in range(50)]}, "invalid_value", "stop"),
        ({"temperature": 1e308}, "invalid_value", "temperature"),
        ({"temperature": "hot"}, "invalid_value", "temperature"),
        ({"top_p": -1}, "invalid_value", "top_p"),
    ],
)
def test_absurd_values_are_400_errors_naming_the_parameter(small, fields, code, param):
    status, _, answer = _chat(small, _model(small), **fields)
    _assert_error(status, answer, 400, code, param)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "ft:../../x:y:z", "", "a" * 5000])
def test_unknown_and_path_like_model_names_are_404(small, name):
    status, _, answer = _chat(small, name)
    _assert_error(status, answer, 404, "model_not_found", "model")


def test_a_body_over_the_limit_is_413_before_it_is_read(small):
    big = json.dumps({"model": _model(small), "messages": [{"role": "user", "content": "x" * 10_000_000}]})
    status, _, answer = _send(small, "POST", CHAT, big.encode())
    _assert_error(status, answer, 413, "request_too_large")
    connection = http.client.HTTPConnection(small.hostname, small.port, timeout=60)  # no length given: streamed
    connection.putrequest("POST", CHAT)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for _ in range(10):
        chunk = b"x" * 1_000_000
        connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    _assert_error(response.status, json.loads(response.read()), 413, "request_too_large")
    connection.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads a process's CPU time from Linux's /proc")
def test_overload_is_429_with_retry_after_and_a_client_that_leaves_frees_its_slot(small_server):
    process, small = small_server
    model = _model(small)
    started = _cpu_seconds(process.pid)
    status, _, alone = _chat(small, model, max_tokens=600, temperature=0)
    full = _cpu_seconds(process.pid) - started  # the server's work on the long answer when nobody leaves
    assert status == 200 and alone["usage"]["completion_tokens"] == 600
    long = http.client.HTTPConnection(small.hostname, small.port, timeout=120)
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 600, "stream": True}
    long.request("POST", CHAT, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    stream = long.getresponse()
    stream.readline()  # the first event: the answer is being made, the only slot is taken
    answers: dict[str, tuple] = {}

    def ask(name):
        answers[name] = _chat(small, model)

    # two more: one waits in the queue of 1 for the only slot, the other is refused at once (which one is which
    # depends on which arrives first, on a loaded machine either)
    asking = [threading.Thread(target=ask, args=(name,)) for name in ("first", "second")]
    for thread in asking:
        thread.start()
        time.sleep(0.3)
    for _ in range(1200):
        if answers:
            break
        time.sleep(0.05)
    [(refused, (status, headers, answer))] = answers.items()  # only the refused one is back
    _assert_error(status, answer, 429, "rate_limited")
    assert int(headers["retry-after"]) > 0
    left = _cpu_seconds(process.pid)
    long.close()  # the client goes away mid-answer
    for thread in asking:
        thread.join(timeout=120)
    waited = "second" if refused == "first" else "first"
    assert answers[waited][0] == 200
    assert _cpu_seconds(process.pid) - left < full / 2  # the abandoned answer was not finished before theirs
    assert _chat(small, model)[0] == 200


def test_sixteen_clients_at_once_all_get_answers(small):
    model = _model(small)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: _chat(small, model)[0], range(16)))
    assert all(s in (200, 429) for s in statuses) and statuses.count(200) >= 2  # the queue holds 1: the rest 429
    assert _chat(small, model)[0] == 200
