"""`tunesmith distill collect` against a faulty teacher: every prompt ends answered or reported, none asked twice."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import launch
from tunesmith.distill.collect import CollectSettings, TeacherSettings, collect
from tunesmith.errors import DataError

FAULTS = ("429", "500", "timeout", "drop", "malformed")
"""What the teacher does on the first attempt at a prompt whose text names it (then it answers)."""


class Teacher(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint that misbehaves on a schedule and counts what it was asked."""

    daemon_threads = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay = delay
        self.attempts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: Teacher

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = request["messages"][-1]["content"]
        with self.server.lock:
            self.server.attempts[prompt] += 1
            first = self.server.attempts[prompt] == 1
        fault = next((f for f in FAULTS if f in prompt), None)
        if "always-500" in prompt or (first and fault == "500"):
            return self._send(500, b'{"error": {"message": "boom"}}')
        if first and fault == "429":
            return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.2"})
        if first and fault == "timeout":
            time.sleep(1.5)  # past the client's timeout; it has gone
            return None
        if first and fault == "drop":
            self.close_connection = True
            return None
        if first and fault == "malformed":
            return self._send(200, b'{"id": "x", "choices": [{"message": ')
        time.sleep(self.server.delay)
        with self.server.lock:
            self.server.answered[prompt] += 1
        answer = {"role": "assistant", "content": f"answer to {prompt}"}
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": request["model"],
            "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        self._send(200, json.dumps(body).encode())


@pytest.fixture
def teacher():
    server = Teacher()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _settings(url: str) -> CollectSettings:
    return CollectSettings(TeacherSettings(url, "big"), api_key="k", concurrency=3, retries=3, timeout=1.0)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_prompt_ends_answered_or_reported_and_none_is_answered_twice(tmp_path, teacher):
    prompts = [f"prompt {i} {FAULTS[i % len(FAULTS)]}" for i in range(15)] + ["plain", "always-500"]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    out = tmp_path / "teacher.jsonl"

    first = collect(str(source), out, _settings(teacher.url))
    answered = {r["messages"][0]["content"] for r in _lines(out)}
    reported = {prompts[f["line"] - 1] for f in first.failed}
    assert answered | reported == set(prompts) and not answered & reported
    assert reported == {"always-500"}  # every transient fault retried, a body cut short too
    assert all("500" in f["error"] for f in first.failed)
    assert Path(first.errors).is_file() and len(_lines(Path(first.errors))) == len(reported)

    second = collect(str(source), out, _settings(teacher.url))  # the same command again: only the failures
    assert second.already == len(answered) and second.answered == len(reported) - 1
    assert [f["line"] for f in second.failed] == [prompts.index("always-500") + 1]
    rows = _lines(out)
    assert sorted(r["messages"][0]["content"] for r in rows) == sorted(set(prompts) - {"always-500"})
    assert all(r["messages"][-1] == {"role": "assistant", "content": f"answer to {r['messages'][0]['content']}"}
               for r in rows)  # fmt: skip
    assert max(teacher.answered.values()) == 1  # no prompt was answered twice by the teacher
    assert rows[0]["teacher"]["prompt_tokens"] == 7 and second.tokens_out == 3 * second.answered


def test_a_collection_killed_with_sigkill_goes_on_where_it_stopped(tmp_path):
    server = Teacher(delay=0.15)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(40)))
    out = tmp_path / "teacher.jsonl"
    command = ["distill", "collect", "--teacher", server.url]
    command += ["--teacher-model", "big", "--prompts", str(source), "--out", str(out), "--api-key", "k"]
    command += ["--concurrency", "2"]
    child = launch.start(command)
    deadline = time.monotonic() + 60
    while (not out.is_file() or len(out.read_text().splitlines()) < 8) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.kill()
    child.wait()
    kept = set()
    for line in out.read_text().splitlines():  # the whole lines: a kill may leave the last one cut short
        with contextlib.suppress(ValueError):
            kept.add(json.loads(line)["messages"][0]["content"])
    before = Counter(server.answered)

    done = launch.run(command)
    server.shutdown()
    assert done.returncode == 0, done.stderr
    rows = [r["messages"][0]["content"] for r in _lines(out)]
    assert sorted(rows) == sorted(f"question {i}" for i in range(40))  # each prompt once
    asked_again = {p for p in server.answered if server.answered[p] > before[p]}
    assert len(kept) >= 8 and not asked_again & kept


def test_a_bad_prompt_line_is_a_one_line_error_naming_it(tmp_path, teacher):
    source = tmp_path / "prompts.jsonl"
    answered = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    source.write_text('"fine"\n' + json.dumps(answered) + "\n")
    with pytest.raises(DataError, match=r"prompts.jsonl:2: the last message is the assistant's"):
        collect(str(source), tmp_path / "out.jsonl", _settings(teacher.url))
    done = launch.run(
        ["distill", "collect", "--teacher", teacher.url, "--teacher-model", "m", "--prompts", str(source), "--out",
         str(tmp_path / "out.jsonl"), "--api-key", "k"],
    )  # fmt: skip
    assert done.returncode == 2 and "prompts.jsonl:2" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_text()
