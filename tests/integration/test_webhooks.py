"""Webhooks from a real `tunesmith serve` and its worker to a real receiver on 127.0.0.1, endpoints made with the
official client, every delivery verified with its `client.webhooks.unwrap(...)`: succeeded, failed and cancelled
jobs, a receiver that fails first (retried, delivered at least once), a job that never waits for an endpoint."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.conftest import chat, write_jsonl
from tests.integration.test_jobs_api import wait
from tests.integration.test_serve import KEY, serving
from tests.integration.test_tracking import wandb_history

ENDS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


class Receiver(ThreadingHTTPServer):
    """Keeps every POST (headers and body); answers 500 to the first `failures` of them."""

    daemon_threads = True

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures, self.delay = failures, delay
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.delay)
        with self.server.lock:
            self.server.posts.append((dict(self.headers.items()), body))
            failing = len(self.server.posts) <= self.server.failures
        self.send_response(500 if failing else 204)
        self.end_headers()


def _receiver(**options) -> Receiver:
    server = Receiver(**options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("hooks-home")


@pytest.fixture(scope="module")
def server(home, tiny_model):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_WEBHOOK_RETRY_SECONDS", "0.3")
        patch.delenv("WANDB_API_KEY", raising=False)  # the job's W&B run stays offline, in its run folder
        with serving(tiny_model, "--api-key", KEY, "--dtype", "float32", home=home) as (_, url):
            yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def _events(receiver: Receiver, client, secret: str, count: int, seconds: float = 60) -> list:
    """The first `count` distinct events the receiver accepted, each verified by the official client."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with receiver.lock:
            posts = list(receiver.posts)
        accepted = {}
        for number, (headers, body) in enumerate(posts, start=1):
            event = client.webhooks.unwrap(body, headers, secret=secret)  # raises unless signed with the secret
            if number > receiver.failures:
                accepted.setdefault(event.id, event)
        if len(accepted) >= count:
            return list(accepted.values())
        time.sleep(0.1)
    pytest.fail(f"{len(receiver.posts)} posts after {seconds} s")


def test_endpoints_are_made_listed_changed_and_deleted_with_the_official_client(client):
    made = client.webhooks.create(name="ops", url="http://127.0.0.1:9/x", event_types=ENDS[:1])
    assert made.signing_secret.startswith("whsec_") and made.signing_secret_hint.endswith(made.signing_secret[-4:])
    assert client.webhooks.retrieve(made.id).url == "http://127.0.0.1:9/x"
    changed = client.webhooks.update(made.id, event_types=ENDS, name="all")
    assert changed.event_types == ENDS and changed.name == "all"
    rotated = client.webhooks.rotate_secret(made.id)
    assert rotated.signing_secret != made.signing_secret
    assert made.id in [e.id for e in client.webhooks.list()]
    with pytest.raises(openai.BadRequestError, match="url"):
        client.webhooks.create(name="bad", url="file:///etc/passwd", event_types=ENDS)
    assert client.webhooks.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(made.id)


def test_every_end_of_a_job_is_posted_signed_and_retried_until_accepted(client, tmp_path, tiny_model, home):
    receiver = _receiver(failures=2)
    endpoint = client.webhooks.create(name="ends", url=receiver.url, event_types=ENDS)
    good = client.files.create(file=write_jsonl(tmp_path / "t.jsonl", [chat(i) for i in range(20)]).open("rb"),
                               purpose="fine-tune")  # fmt: skip
    bad = client.files.create(file=write_jsonl(tmp_path / "b.jsonl", ["{broken"] * 3).open("rb"), purpose="fine-tune")
    hyper = {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}}
    wandb = [{"type": "wandb", "wandb": {"project": "ends", "tags": ["hooks"]}}]
    succeeded = client.fine_tuning.jobs.create(
        model=str(tiny_model), training_file=good.id, integrations=wandb, **hyper
    )
    failed = client.fine_tuning.jobs.create(model=str(tiny_model), training_file=bad.id)
    cancelled = client.fine_tuning.jobs.create(model=str(tiny_model), training_file=good.id)
    client.fine_tuning.jobs.cancel(cancelled.id)
    for job in (succeeded, failed):
        wait(client, job.id)
    events = _events(receiver, client, endpoint.signing_secret, 3)
    ends = {event.data.id: event.type for event in events}
    assert ends == {succeeded.id: ENDS[0], failed.id: ENDS[1], cancelled.id: ENDS[2]}
    assert len(receiver.posts) >= 5  # the two refused posts were sent again
    with pytest.raises(openai.InvalidWebhookSignatureError):
        headers, body = receiver.posts[-1]
        client.webhooks.unwrap(body, headers, secret="whsec_" + "A" * 44)
    job = client.fine_tuning.jobs.retrieve(succeeded.id)  # its wandb integration honoured, offline in its run
    assert job.integrations[0].wandb.project == "ends" and job.to_dict()["usage_metrics"]["trained_tokens"] > 0
    logged = [row for row in wandb_history(home / "runs" / succeeded.id) if "train/loss" in row]
    assert logged and logged[0]["_step"] == 1
    sample = client.webhooks.test(endpoint.id, event_type=ENDS[0])
    assert sample.status_code == 204 and sample.webhook_endpoint_id == endpoint.id
    receiver.shutdown()


def test_a_slow_endpoint_never_holds_a_job_up(client, tmp_path, tiny_model):
    receiver = _receiver(delay=5.0)
    endpoint = client.webhooks.create(name="slow", url=receiver.url, event_types=ENDS)
    first = client.files.create(file=write_jsonl(tmp_path / "t.jsonl", ["{broken"]).open("rb"), purpose="fine-tune")
    started = time.monotonic()
    jobs = [client.fine_tuning.jobs.create(model=str(tiny_model), training_file=first.id) for _ in range(3)]
    for job in jobs:
        assert wait(client, job.id).status == "failed"
    assert time.monotonic() - started < 5.0  # three jobs ended while the endpoint was still on the first post
    assert len(_events(receiver, client, endpoint.signing_secret, 3, seconds=60)) == 3
    client.webhooks.delete(endpoint.id)
    receiver.shutdown()
