"""The dashboard in a real browser (Debian's chromium through Playwright) against a real `tunesmith serve`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import chat, write_jsonl
from tests.integration.test_serve import KEY, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium to drive (apt-get install chromium; .ci/run installs it)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_HOME", str(tmp_path_factory.mktemp("web-home")))
        process, url = start_server(tiny_model, "--api-key", KEY, "--dtype", "float32")
    yield url
    process.terminate()
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server)
    yield context.new_page()
    context.close()


def _shot(page, name: str, tmp_path: Path) -> None:
    """A screenshot of the page: into $TUNESMITH_SCREENSHOTS when set (docs/images/ is made that way), else tmp."""
    folder = Path(os.environ.get("TUNESMITH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def _log_in(page) -> None:
    page.goto("/")
    assert page.url.endswith("/login")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/data")


def test_a_page_without_the_key_goes_to_the_login_and_a_wrong_key_stays_there(page):
    page.goto("/data")
    assert page.url.endswith("/login")
    page.get_by_label("API key").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "That key is not this server's."
    assert page.request.get("/static/data.js").status == 401  # assets need the key too
    assert page.request.post("/api/files/file-x/check").status == 401
    assert page.request.get("/static/app.css").status == 200  # the login page's style is public


def test_a_file_with_a_fault_shows_its_line_and_code(page, tmp_path):
    _log_in(page)
    rows = [chat(i) for i in range(12)] + [{"messages": [{"role": "asistant", "content": "x"}]}]
    page.get_by_label("Data file").set_input_files(str(write_jsonl(tmp_path / "calls.jsonl", rows)))
    page.get_by_role("button", name="Upload and check").click()
    error = page.locator("#errors tbody tr")
    error.first.wait_for()
    assert error.count() == 1
    assert error.first.locator("td").all_inner_texts()[:2] == ["13", "unrecognized_role"]
    assert page.locator("#verdict").inner_text() == "1 errors: fix them before training"
    _shot(page, "data-errors.png", tmp_path)


def test_a_good_file_is_ready_to_train_with_its_statistics(page, tmp_path):
    _log_in(page)
    page.get_by_label("Data file").set_input_files(
        str(write_jsonl(tmp_path / "good.jsonl", [chat(i) for i in range(30)]))
    )
    page.get_by_role("button", name="Upload and check").click()
    page.locator("#verdict.ok").wait_for()
    stats = dict(row.locator("td").all_inner_texts() for row in page.locator("#stats tr").all())
    assert stats["examples"] == "30" and stats["format"] == "chat" and int(stats["tokens"]) > 0
    _shot(page, "data-ok.png", tmp_path)


def test_a_checked_file_starts_a_job_whose_loss_chart_fills_until_it_succeeds(page, tmp_path):
    _log_in(page)
    good = write_jsonl(tmp_path / "sums.jsonl", [chat(i) for i in range(400, 430)])
    page.get_by_label("Data file").set_input_files(str(good))
    page.get_by_role("button", name="Upload and check").click()
    page.locator("#verdict.ok").wait_for()
    page.get_by_label("Name suffix").fill("browser")
    page.get_by_label("Epochs").fill("4")
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url("**/jobs/ftjob-*")
    page.locator("#status", has_text="succeeded").wait_for(timeout=180_000)
    page.locator("#events li", has_text="successfully completed").wait_for()
    assert int(page.locator("#chart").get_attribute("data-points")) >= 4
    assert page.locator("#chart canvas").count() == 1 and page.get_by_role("button", name="Cancel").is_disabled()
    assert ":browser:" in page.locator("#model").inner_text()
    _shot(page, "job.png", tmp_path)
    page.get_by_role("link", name="Jobs").click()
    row = page.locator("#jobs tbody tr", has_text=":browser:")
    assert row.locator("td").nth(1).inner_text() == "succeeded"


def test_the_playground_streams_two_answers_side_by_side(page, tmp_path):
    _log_in(page)
    page.get_by_role("link", name="Playground").click()
    page.locator("#right-model option").first.wait_for(state="attached")
    models = page.locator("#right-model option").all_inner_texts()
    page.get_by_label("Prompt", exact=True).fill("What is 5 + 5?")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Ask both").click()
    page.locator("#status", has_text="Done.").wait_for(timeout=60_000)
    assert page.locator("#left-title").inner_text() == models[0]
    assert page.locator("#right-title").inner_text() == models[-1]
    for side in ("left", "right"):  # a random tiny model may write only blanks: count what was streamed
        answer = page.locator(f"#{side}-answer")
        assert answer.get_attribute("data-done") == "yes" and int(answer.get_attribute("data-chunks")) >= 2
    _shot(page, "playground.png", tmp_path)
