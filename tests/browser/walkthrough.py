"""A new user's path on the real default model, in a real browser: `tunesmith serve`, then only the dashboard.

Not part of the suite (it trains the 135M model for about 4 minutes). Run it by hand:

    .venv/bin/python -m tests.browser.walkthrough [--shots docs/images]

It uploads examples/call-summaries (train and held-out), starts a one-epoch LoRA job from the New job page, waits
for it to succeed, asks the base and the tuned model one held-out call in the Playground, and downloads the adapter
and the GGUF from the Export page; it prints the headline, both answers and each step's time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "call-summaries"
URL = "http://127.0.0.1:8000"


def _serve(home: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tunesmith", "serve", "--port", "8000"]
    server = subprocess.Popen(command, env=dict(os.environ, TUNESMITH_HOME=home))
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{URL}/v1/models")
            return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("the server did not answer in 5 minutes")


def _upload(page, name: str) -> None:
    page.get_by_label("Data file").set_input_files(str(EXAMPLE / name))
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_function(
        f"document.getElementById('status').textContent.startsWith('{name}') && "
        "document.getElementById('status').textContent.endsWith('checked.')"
    )


def walk(page, shots: Path, started: float, downloads: Path) -> None:
    def said(what: str) -> None:
        print(f"{time.perf_counter() - started:6.0f} s  {what}", flush=True)

    page.goto("/")
    for name in ("eval.jsonl", "train.jsonl"):
        _upload(page, name)
    page.locator("#preview article").first.wait_for()
    said("both files uploaded and checked")
    page.screenshot(path=str(shots / "walkthrough-data.png"), full_page=True)
    page.get_by_role("link", name="Fine-tune on it").click()
    page.locator("#epochs-auto", has_text="examples").wait_for()
    held_out = next(o for o in page.locator("#validation-file option").all_inner_texts() if o.startswith("eval.jsonl"))
    page.get_by_label("Held-out file").select_option(label=held_out)
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Name suffix").fill("calls")
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url("**/jobs/ftjob-*")
    page.locator("#status", has_text="succeeded").wait_for(timeout=3_600_000)
    page.locator("#report-box").wait_for()
    said(page.locator("#headline").inner_text())
    page.screenshot(path=str(shots / "walkthrough-job.png"), full_page=True)
    page.get_by_role("link", name="Try it in the playground").click()
    page.wait_for_function("document.getElementById('system').value.length > 0")
    call = json.loads((EXAMPLE / "eval.jsonl").read_text().splitlines()[0])["messages"][1]["content"]
    page.get_by_label("Prompt", exact=True).fill(call)
    page.get_by_label("Max tokens").fill("160")
    page.get_by_role("button", name="Ask both").click()
    page.locator("#status", has_text="Done.").wait_for(timeout=600_000)
    said("answered")
    for side in ("left", "right"):
        print(f"{page.locator(f'#{side}-title').inner_text()}:\n{page.locator(f'#{side}-answer').inner_text()}")
    page.screenshot(path=str(shots / "walkthrough-playground.png"), full_page=True)
    page.get_by_role("link", name="Export").click()
    for format in ("adapter", "gguf"):
        with page.expect_download(timeout=1_800_000) as download:
            page.locator("#exports tbody tr").first.locator(f"button[data-format={format}]").click()
        target = downloads / f"{format}.zip"
        download.value.save_as(target)
        said(f"downloaded {format}: {target.stat().st_size / 1e6:.1f} MB")


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=Path, default=Path(tempfile.mkdtemp()), help="where screenshots go")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        server = _serve(home)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=URL)
                page = context.new_page()
                page.set_default_timeout(300_000)
                walk(page, args.shots, started, Path(home))
                browser.close()
        finally:
            server.terminate()
            server.wait(60)
    print(f"screenshots in {args.shots}")


if __name__ == "__main__":
    main()
