"""A real `tunesmith serve` (tiny model, API key) and Debian's chromium through Playwright, per test module."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.test_serve import KEY, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PHONE = {"width": 390, "height": 844}
"""A phone-width screen."""
DESKTOP = {"width": 1280, "height": 800}
"""The laptop screen the pages are laid out for."""


def needs_chromium() -> pytest.MarkDecorator:
    """Skip, saying why, where no browser can be installed."""
    return pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium to drive (apt-get install chromium; .ci/run installs it)"
    )


@pytest.fixture(scope="module")
def web_home(tmp_path_factory) -> Path:
    """The module's server's TUNESMITH_HOME (its jobs store: keys of projects are made there)."""
    return tmp_path_factory.mktemp("web-home")


@pytest.fixture(scope="module")
def server(web_home, tiny_model):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_HOME", str(web_home))
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
    context = browser.new_context(viewport=DESKTOP, base_url=server, accept_downloads=True)
    yield context.new_page()
    context.close()


def shot(page, name: str, tmp_path: Path) -> None:
    """A screenshot of the page: into $TUNESMITH_SCREENSHOTS when set (docs/images/ is made that way), else tmp."""
    folder = Path(os.environ.get("TUNESMITH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def log_in(page, key: str = KEY) -> None:
    """Through the login form, with the keyboard: the key field has the focus, Enter sends it."""
    page.goto("/")
    assert page.url.endswith("/login")
    page.locator("#key:focus").wait_for()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/data")


def upload(page, path: Path) -> None:
    """Upload a file on the Data page and wait for its check."""
    page.goto("/data")
    page.get_by_label("Data file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and check").click()
    page.locator("#status", has_text="checked").wait_for(timeout=60_000)


def fits_phone(page, path: str) -> None:
    """At phone width the page does not scroll sideways, and every control has a name a screen reader says."""
    page.set_viewport_size(PHONE)
    page.goto(path)
    page.wait_for_load_state("networkidle")
    wide = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert wide <= 0, f"{path} scrolls sideways by {wide}px at phone width"
    unnamed = page.evaluate(
        """[...document.querySelectorAll('input, select, textarea, button')]
           .filter((c) => c.type !== 'hidden' && !c.labels?.length && !c.getAttribute('aria-label')
                          && !c.textContent.trim()).map((c) => c.id || c.outerHTML)"""
    )
    assert unnamed == [], f"{path}: controls without a label: {unnamed}"
