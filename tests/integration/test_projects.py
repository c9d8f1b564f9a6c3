"""Projects and keys on one server (tunesmith/server/access.py, tunesmith/jobs/access.py): every route of the app,
taken from the app's own route list, walked with keys of two projects and each role; another project's ids answer
exactly as unknown ones; keys are never stored or sent back in plain text; revocation takes effect at once."""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

import pytest

from tests.conftest import chat, write_jsonl
from tunesmith.jobs.access import ROLES, Access
from tunesmith.jobs.store import Store
from tunesmith.server.access import ALLOWED, ROUTES

SERVER_KEY = "server-admin-key-for-tests"
FILL = {"line": "1", "format": "adapter", "name": "data.js"}
"""Path parameters that are not a project's resources."""
OWN_404 = {
    ("GET", "/jobs/{job_id}/report"),  # the job has no evaluation report
    ("GET", "/api/jobs/{job_id}/exports/{format}.zip"),  # not exported yet
}
"""Routes that answer 404 to the owner too, for what the resource lacks (so the walk compares bodies for them)."""
BODIES = {
    ("POST", "/v1/webhook_endpoints/{endpoint_id}"): {"name": "renamed"},
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/test"): {"event_type": "fine_tuning.job.succeeded"},
}
"""A valid body for the routes with an id that need one (else the body's 400 would come before the id's 404)."""


def app_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, from its own route list (included routers opened)."""
    found = []
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            original = getattr(context, "original_route", context)
            found += [(method, original.path) for method in sorted(original.methods or ()) if method != "HEAD"]
    return found


def _tiny_adapter(base: Path, final: Path) -> None:
    """A LoRA adapter of the tiny model where a succeeded job keeps its final adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(final)
    AutoTokenizer.from_pretrained(base).save_pretrained(final)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    """The server (in process) with keys of projects a and b in every role, and project a's resources."""
    from starlette.testclient import TestClient

    from tunesmith.runs import job_run
    from tunesmith.server.app import ServerSettings, build_server

    home = tmp_path_factory.mktemp("projects-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_HOME", str(home))
        patch.delenv("TUNESMITH_DATABASE_URL", raising=False)
        store = Store()
        access = Access(store)
        keys = {(p, r): access.create_key(p, r) for p in ("a", "b") for r in ROLES}
        settings = ServerSettings(str(tiny_model), api_key=SERVER_KEY, dtype="float32", jobs_per_project=2)
        server = build_server(settings, store)
        client = TestClient(server.app)
        a = {"Authorization": f"Bearer {keys['a', 'admin'][0]}"}
        data = write_jsonl(home / "train.jsonl", [chat(i) for i in range(4)])
        with open(data, "rb") as handle:
            file_id = client.post("/v1/files", headers=a, files={"file": handle}, data={"purpose": "fine-tune"}).json()[
                "id"
            ]
        job = client.post("/v1/fine_tuning/jobs", headers=a, json={"model": str(tiny_model), "training_file": file_id})
        job_id = job.json()["id"]
        done = client.post("/v1/fine_tuning/jobs", headers=a, json={"model": str(tiny_model), "training_file": file_id})
        done_id = done.json()["id"]
        record = store.job(done_id)
        store.update_job(done_id, {"status": "succeeded", "fine_tuned_model": record.tuned_name(), "finished_at": 1})
        _tiny_adapter(tiny_model, job_run(done_id).final)
        # a port nothing listens on: the webhook test route's delivery fails at once, without a network
        hook = {"name": "h", "url": "http://127.0.0.1:9/hook", "event_types": ["fine_tuning.job.succeeded"]}
        endpoint_id = client.post("/v1/webhook_endpoints", headers=a, json=hook).json()["id"]
        task_id = client.post(f"/api/files/{file_id}/check", headers=a).json()["id"]
        ids = {"file_id": file_id, "job_id": done_id, "endpoint_id": endpoint_id, "task_id": task_id}
        ids["model_id"] = record.tuned_name()
        yield {"client": client, "app": server.app, "keys": keys, "ids": ids, "queued": job_id, "home": home,
               "store": store, "access": access, "tiny": tiny_model}  # fmt: skip


def _call(client, method: str, path: str, ids: dict[str, str], key: str | None, body: dict | None = None):
    url = path.replace("{model_id:path}", "{model_id}")
    for name, value in {**FILL, **ids}.items():
        url = url.replace("{" + name + "}", value)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.request(method, url, headers=headers, json=body, follow_redirects=False)


def _unknown(ids: dict[str, str]) -> dict[str, str]:
    """Ids of the same shapes that name nothing."""
    fake = {k: re.sub(r"[0-9a-f]{24}$", "0" * 24, v) for k, v in ids.items()}
    return fake


def _normalised(response, ids: dict[str, str], unknown: dict[str, str]) -> str:
    text = response.text
    for name in ids:
        text = text.replace(ids[name], "ID").replace(unknown[name], "ID")
    return text


def test_every_route_has_an_access_rule_and_every_rule_a_route(world):
    assert set(app_routes(world["app"])) == set(ROUTES)


def test_every_route_walked_with_each_projects_keys_in_each_role(world):
    """Each route with project a's ids: a's keys get through where their role allows and 403 where not; b's keys
    get 403 where their role does not allow, else exactly what an unknown id gets (404, the same body but the id);
    without a key 401 (or the login page for a browser); lists seen by b hold none of a's ids. (a's own deletes
    are made by the last test, so that the walk keeps what it walks.)"""
    client, ids = world["client"], world["ids"]
    unknown = _unknown(ids)
    for method, path in app_routes(world["app"]):
        need = ROUTES[method, path]
        if need == "public":
            continue
        has_id = any("{" + name in path for name in ids)
        body = BODIES.get((method, path))
        assert _call(client, method, path, ids, None).status_code == 401, (method, path)
        for role in ROLES:
            allowed = need in ALLOWED[role]
            other = _call(client, method, path, ids, world["keys"]["b", role][0], body)
            if method == "DELETE" and allowed:
                own = None
            else:
                own = _call(client, method, path, ids, world["keys"]["a", role][0], body)
            if not allowed:
                assert own.status_code == other.status_code == 403, (method, path, role)
                continue
            if own is not None:  # a's deletes: see test_owners_delete_what_is_theirs
                assert own.status_code not in (401, 403), (method, path, role, own.text)
                if has_id and (method, path) not in OWN_404:
                    assert own.status_code != 404, (method, path, role, own.text)
            if has_id:
                stranger = _call(client, method, path, unknown, world["keys"]["b", role][0], body)
                assert other.status_code == stranger.status_code == 404, (method, path, role, other.text)
                assert _normalised(other, ids, unknown) == _normalised(stranger, ids, unknown), (method, path)
            else:
                assert not any(value in other.text for value in ids.values()), (method, path, role)


def test_a_job_cannot_be_made_on_another_projects_file(world):
    client, ids, tiny = world["client"], world["ids"], str(world["tiny"])
    b = world["keys"]["b", "member"][0]
    theirs = _call(client, "POST", "/v1/fine_tuning/jobs", {}, b, {"model": tiny, "training_file": ids["file_id"]})
    nobody = _call(client, "POST", "/v1/fine_tuning/jobs", {}, b, {"model": tiny, "training_file": "file-" + "0" * 24})
    assert theirs.status_code == nobody.status_code == 400
    assert theirs.json()["error"]["code"] == nobody.json()["error"]["code"] == "invalid_file"


def test_another_projects_model_is_neither_listed_nor_answered(world):
    client, model = world["client"], world["ids"]["model_id"]
    ask = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for project, listed, status in (("a", True, 200), ("b", False, 404)):
        key = world["keys"][project, "inference"][0]
        models = [m["id"] for m in _call(client, "GET", "/v1/models", {}, key).json()["data"]]
        assert (model in models) is listed and any(not m.startswith("ft:") for m in models)  # the base is shared
        assert _call(client, "POST", "/v1/chat/completions", {}, key, ask).status_code == status
    deleted = _call(client, "DELETE", "/v1/models/{model_id}", world["ids"], world["keys"]["b", "admin"][0])
    assert deleted.status_code == 404
    assert (
        _call(client, "GET", "/v1/models/{model_id}", world["ids"], world["keys"]["a", "reader"][0]).status_code == 200
    )


def test_the_server_key_sees_every_project_and_openai_project_narrows_it(world):
    client, ids = world["client"], world["ids"]
    files = lambda headers: [f["id"] for f in client.get("/v1/files", headers=headers).json()["data"]]  # noqa: E731
    server = {"Authorization": f"Bearer {SERVER_KEY}"}
    assert ids["file_id"] in files(server)
    assert ids["file_id"] not in files(server | {"OpenAI-Project": "b"})
    assert ids["file_id"] in files(server | {"OpenAI-Project": "a"})
    a = {"Authorization": f"Bearer {world['keys']['a', 'reader'][0]}"}
    assert ids["file_id"] in files(a | {"OpenAI-Project": "a"})
    refused = client.get("/v1/files", headers=a | {"OpenAI-Project": "b"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "mismatched_project"


@pytest.fixture
def url(world):
    """The same app served over HTTP by uvicorn in a thread, for the official client."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(world["app"], host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_the_official_client_with_a_projects_key_sees_only_that_project(world, url):
    from openai import NotFoundError, OpenAI, PermissionDeniedError

    theirs = OpenAI(api_key=world["keys"]["b", "member"][0], base_url=url, max_retries=0)
    ours = OpenAI(api_key=world["keys"]["a", "member"][0], base_url=url, max_retries=0)
    assert world["ids"]["file_id"] in [f.id for f in ours.files.list()]
    assert world["ids"]["file_id"] not in [f.id for f in theirs.files.list()]
    assert world["queued"] not in [j.id for j in theirs.fine_tuning.jobs.list()]
    with pytest.raises(NotFoundError):
        theirs.fine_tuning.jobs.retrieve(world["queued"])
    with pytest.raises(NotFoundError):
        theirs.fine_tuning.jobs.cancel(world["queued"])
    with pytest.raises(NotFoundError):
        theirs.files.content(world["ids"]["file_id"])
    assert ours.fine_tuning.jobs.retrieve(world["queued"]).id == world["queued"]
    reader = OpenAI(api_key=world["keys"]["a", "reader"][0], base_url=url, max_retries=0)
    with pytest.raises(PermissionDeniedError):
        reader.fine_tuning.jobs.cancel(world["queued"])


def test_keys_and_sessions_are_never_kept_or_sent_back_in_plain_text(world, caplog):
    """Not in the store's files, not in a listing, not in a cookie, not in any log line of the server."""
    caplog.set_level("DEBUG")
    client = world["client"]
    key = world["keys"]["a", "member"][0]
    _call(client, "GET", "/v1/files", {}, key + "x")  # a wrong key: refused, and not logged either
    _call(client, "GET", "/v1/files", {}, key)
    signed_in = client.post("/login", data={"key": key}, follow_redirects=False)
    token = signed_in.cookies.get("tunesmith_session")
    assert signed_in.status_code == 303 and token and key not in signed_in.headers.get("set-cookie", "")
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    secrets = [k for k, _ in world["keys"].values()] + [token]
    for path in world["home"].rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(s.encode() in content for s in secrets), path
    listing = json.dumps([k.as_object() for k in world["access"].list_keys()])
    assert not any(s in listing for s in secrets)
    assert caplog.records and not any(s in caplog.text for s in [*secrets, key + "x"])
    client.cookies.clear()


def test_a_session_shows_its_project_refuses_cross_site_posts_and_ends_with_its_key(world):
    from starlette.testclient import TestClient

    browser = TestClient(world["app"])
    secret, record = world["access"].create_key("a", "member")
    browser.post("/login", data={"key": secret})
    page = browser.get("/jobs")
    assert page.status_code == 200 and "<strong data-project>a</strong>" in page.text
    check = f"/api/files/{world['ids']['file_id']}/check"
    assert browser.post(check, headers={"Origin": "https://evil.example"}).status_code == 403
    assert browser.post(check).status_code == 403  # no Origin: a cookie alone is not enough to change anything
    assert browser.post(check, headers={"Origin": "http://testserver"}).status_code in (200, 202)
    world["access"].revoke_key(record.id)
    assert browser.get("/jobs", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303
    assert browser.get("/v1/files").status_code == 401


def test_revocation_takes_effect_on_the_next_request_and_cuts_an_open_stream(world):
    client = world["client"]
    secret, record = world["access"].create_key("a", "inference")
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900, "stream": True}
    ask["model"] = _call(client, "GET", "/v1/models", {}, secret).json()["data"][0]["id"]
    chunks, started = 0, time.monotonic()
    with client.stream("POST", "/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {secret}"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            chunks += line.startswith("data: {")
            if chunks == 1:
                world["access"].revoke_key(record.id)
            assert line != "data: [DONE]", "the stream ran to its end after its key was revoked"
    assert chunks < 900 and time.monotonic() - started < 30
    assert _call(client, "GET", "/v1/models", {}, secret).status_code == 401


def test_an_expired_key_is_refused_and_a_keys_rate_limit_answers_429_with_retry_after(world):
    client, access = world["client"], world["access"]
    expired, _ = access.create_key("a", "reader", expires_days=1e-9)
    time.sleep(0.01)
    assert _call(client, "GET", "/v1/files", {}, expired).status_code == 401
    limited, _ = access.create_key("a", "reader", requests_per_minute=3)
    codes = [_call(client, "GET", "/v1/files", {}, limited).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    last = _call(client, "GET", "/v1/files", {}, limited)
    assert last.json()["error"]["code"] == "rate_limit_exceeded" and 1 <= int(last.headers["Retry-After"]) <= 60


def test_a_project_at_its_jobs_limit_gets_429_and_another_project_does_not(world, tmp_path):
    """The server allows 2 jobs not yet ended per project: a has one queued, so one more, then 429."""
    client, tiny = world["client"], str(world["tiny"])
    a, b = world["keys"]["a", "member"][0], world["keys"]["b", "member"][0]
    data = write_jsonl(tmp_path / "b.jsonl", [chat(i) for i in range(4)])
    with open(data, "rb") as handle:
        upload = client.post("/v1/files", headers={"Authorization": f"Bearer {b}"}, files={"file": handle},
                             data={"purpose": "fine-tune"})  # fmt: skip
    job = {"model": tiny, "training_file": world["ids"]["file_id"]}
    assert _call(client, "POST", "/v1/fine_tuning/jobs", {}, a, job).status_code == 200
    refused = _call(client, "POST", "/v1/fine_tuning/jobs", {}, a, job)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["Retry-After"]) > 0
    theirs = {"model": tiny, "training_file": upload.json()["id"]}
    assert _call(client, "POST", "/v1/fine_tuning/jobs", {}, b, theirs).status_code == 200


def test_another_projects_id_takes_as_long_as_an_unknown_one(world):
    """The same query answers both (the id and the project in one indexed lookup): interleaved, their medians are
    within noise of each other."""
    client, ids = world["client"], world["ids"]
    key = world["keys"]["b", "reader"][0]
    times: dict[str, list[float]] = {"theirs": [], "unknown": []}
    for _ in range(40):
        for name, chosen in (("theirs", ids), ("unknown", _unknown(ids))):
            start = time.perf_counter()
            assert _call(client, "GET", "/v1/files/{file_id}", chosen, key).status_code == 404
            times[name].append(time.perf_counter() - start)
    theirs, unknown = statistics.median(times["theirs"]), statistics.median(times["unknown"])
    assert abs(theirs - unknown) <= 0.5 * max(theirs, unknown) + 0.005, times  # loose: the suite loads the machine


def test_the_audit_log_says_who_did_what(world):
    actions = {(e["action"], e["project"]) for e in world["access"].audit(limit=1000).items}
    assert {("file.upload", "a"), ("job.create", "a"), ("webhook.create", "a"), ("key.create", "b")} <= actions


def test_owners_delete_what_is_theirs(world):
    """Last: project a's keys delete a's model and webhook endpoint (b's could not); its file is still a queued
    job's (409, not 404)."""
    client, ids = world["client"], world["ids"]
    assert _call(client, "DELETE", "/v1/models/{model_id}", ids, world["keys"]["a", "admin"][0]).status_code == 200
    assert _call(client, "DELETE", "/v1/webhook_endpoints/{endpoint_id}", ids, world["keys"]["a", "admin"][0]).json()[
        "deleted"
    ]
    assert _call(client, "DELETE", "/v1/files/{file_id}", ids, world["keys"]["a", "member"][0]).status_code == 409
