"""The dashboard's login and Data page in a real browser (Debian's chromium) against a real `tunesmith serve`."""

from __future__ import annotations

from tests.browser.conftest import fits_phone, log_in, needs_chromium, shot, upload
from tests.conftest import chat, write_jsonl
from tests.integration.test_serve import KEY

pytestmark = needs_chromium()

PAGES = ("/data", "/jobs/new", "/jobs", "/playground", "/export")


def test_a_page_without_the_key_goes_to_the_login_and_a_wrong_key_stays_there(page):
    page.goto("/data")
    assert page.url.endswith("/login")
    page.get_by_label("API key").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "That key is not one of this server's (or was revoked)."
    for path in ("/static/data.js", "/api/files/file-x/lines/1", "/jobs/ftjob-x/report", "/api/system-prompt?model=x"):
        assert page.request.get(path).status == 401, path  # scripts and data need the key too
    assert page.request.post("/api/files/file-x/check").status == 401
    assert page.request.get("/static/app.css").status == 200  # the login page's style is public
    icon = page.request.get("/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"


def test_the_new_job_page_before_any_upload_says_where_to_start_without_a_script_error(page):
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page)
    page.goto("/jobs/new")
    page.get_by_role("link", name="upload and check one").wait_for()
    page.wait_for_load_state("networkidle")
    assert errors == []


def test_a_file_with_a_fault_shows_its_line_and_code_and_the_line_itself(page, tmp_path):
    log_in(page)
    rows = [chat(i) for i in range(12)] + [{"messages": [{"role": "asistant", "content": "x"}]}]
    upload(page, write_jsonl(tmp_path / "calls.jsonl", rows))
    error = page.locator("#errors tbody tr")
    assert error.count() == 1
    assert error.first.locator("td").all_inner_texts()[:2] == ["13", "unrecognized_role"]
    assert page.locator("#verdict").inner_text() == "1 errors: fix them before training"
    assert page.get_by_role("link", name="Fine-tune on it").is_hidden()
    page.get_by_role("button", name="See line 13").focus()  # the keyboard reaches it and opens it
    page.keyboard.press("Enter")
    page.locator("#line-box").wait_for()
    assert '"role": "asistant"' in page.locator("#line-text").inner_text()
    assert page.locator("#line-title").inner_text() == "Line 13"
    shot(page, "data-errors.png", tmp_path)


def test_a_good_file_shows_statistics_a_histogram_the_estimate_and_trained_tokens(page, tmp_path):
    log_in(page)
    upload(page, write_jsonl(tmp_path / "good.jsonl", [chat(i) for i in range(30)]))
    page.locator("#verdict.ok").wait_for()
    stats = dict(row.locator("th, td").all_inner_texts() for row in page.locator("#stats tr").all())
    assert stats["examples"] == "30" and stats["format"] == "chat" and int(stats["tokens"]) > 0
    assert stats["epochs (auto)"].isdigit() and "tokens/s" in stats["estimated time here"]
    assert int(page.locator("#histogram").get_attribute("data-bars")) >= 1
    assert page.locator("#histogram canvas").count() == 1
    page.locator("#preview article").first.wait_for()
    first = page.locator("#preview article").first
    assert first.locator("h4").inner_text().startswith("line 1:")
    assert first.locator("mark.trained").first.inner_text().startswith("0 + 0 is 0.")  # the answer is learned
    assert "What is 0 + 0?" in first.locator("span.masked").first.inner_text()  # the question is not
    assert page.get_by_role("link", name="Fine-tune on it").is_visible()
    shot(page, "data-ok.png", tmp_path)


def test_every_page_fits_a_phone_screen_and_names_its_controls(page):
    log_in(page)
    for path in PAGES:
        fits_phone(page, path)


def test_the_pages_are_reached_with_the_keyboard_alone(page):
    log_in(page)
    focused = []
    for _ in range(9):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    expected = ["Skip to content", "tunesmith", "Data", "New job", "Jobs", "Playground", "Export", "Log out", "file"]
    assert focused == expected
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # Export, from the keyboard
    page.wait_for_url("**/export")
    assert KEY not in page.content()  # the key is never in a page, nor in the cookie (a session's token is)


def test_two_projects_signed_in_side_by_side_each_see_only_their_own(browser, server, web_home, tmp_path):
    """Two browsers signed in with keys of projects a and b: each page says its project, a's uploaded file is on
    a's new-job page and nowhere in b's, b's page fetching a's file gets 404, and a revoked key's session ends."""
    from tests.browser.conftest import DESKTOP
    from tunesmith.jobs.access import Access
    from tunesmith.jobs.store import Store

    access = Access(Store(web_home / "tunesmith.db"))
    (key_a, _), (key_b, record_b) = access.create_key("a", "member"), access.create_key("b", "member")
    contexts = [browser.new_context(viewport=DESKTOP, base_url=server) for _ in range(2)]
    try:
        page_a, page_b = (context.new_page() for context in contexts)
        log_in(page_a, key_a)
        log_in(page_b, key_b)
        data = write_jsonl(tmp_path / "calls.jsonl", [chat(i) for i in range(3)])
        made = page_a.request.post(
            "/v1/files",
            headers={"Authorization": f"Bearer {key_a}"},
            multipart={"purpose": "fine-tune", "file": {"name": "calls.jsonl", "mimeType": "text/plain",
                                                        "buffer": data.read_bytes()}},
        )  # fmt: skip
        file_id = made.json()["id"]
        for page, project, sees in ((page_a, "a", True), (page_b, "b", False)):
            page.goto("/jobs/new")
            assert page.locator("[data-project]").inner_text() == project
            assert (file_id in page.content()) is sees
        assert page_b.request.get(f"/api/files/{file_id}/lines/1").status == 404
        assert page_a.request.get(f"/api/files/{file_id}/lines/1").status == 200
        access.revoke_key(record_b.id)
        page_b.goto("/jobs")
        assert page_b.url.endswith("/login")
        page_a.get_by_role("button", name="Log out").click()
        page_a.wait_for_url("**/login")
    finally:
        for context in contexts:
            context.close()
