"""From a data file to a tuned model's answer and its download, in a real browser, without the command line."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.browser.conftest import fits_phone, log_in, needs_chromium, shot, upload
from tests.conftest import chat, write_jsonl

pytestmark = needs_chromium()

SYSTEM = "You add two numbers and say the sum."


def _with_system(i: int) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, *chat(i)["messages"]]}


def test_a_checked_file_becomes_a_job_a_report_an_answer_and_a_download(page, tmp_path):
    log_in(page)
    upload(page, write_jsonl(tmp_path / "sums.jsonl", [_with_system(i) for i in range(400, 430)]))
    page.get_by_role("link", name="Fine-tune on it").click()
    page.wait_for_url("**/jobs/new?training_file=file-*")
    page.locator("#epochs-auto", has_text="for 30 examples").wait_for(timeout=60_000)
    assert "sums.jsonl" in page.get_by_label("Training file").locator("option:checked").inner_text()
    page.get_by_label("DoRA adapter").check()
    assert "for dora" in page.locator("#lr-auto").inner_text()
    page.get_by_label("Name suffix").fill("browser")
    page.get_by_label("Epochs").fill("4")
    shot(page, "new-job.png", tmp_path)
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url("**/jobs/ftjob-*")
    page.locator("#status", has_text="succeeded").wait_for(timeout=240_000)
    page.locator("#events li", has_text="successfully completed").wait_for()
    assert int(page.locator("#chart").get_attribute("data-points")) >= 4
    assert page.locator("#chart").get_attribute("data-base") == "1"  # the held-out loss before training, at step 0
    assert page.locator("#chart canvas").count() == 1 and page.get_by_role("button", name="Cancel").is_disabled()
    assert ":browser:" in page.locator("#model").inner_text()
    assert page.locator("#checkpoints tbody tr").count() >= 1
    page.locator("#report-box").wait_for()
    report = page.frame_locator("#report")
    assert "Did fine-tuning help?" in report.locator("body").inner_text()  # base against tuned, embedded
    shot(page, "job.png", tmp_path)
    with page.expect_popup() as opened:
        page.get_by_role("link", name="Open the report on its own").click()
    opened.value.get_by_text("Did fine-tuning help?").wait_for()
    shot(opened.value, "report.png", tmp_path)
    opened.value.close()

    page.get_by_role("link", name="Try it in the playground").click()
    page.wait_for_url("**/playground?right=ft*")
    page.wait_for_function("document.getElementById('system').value.length > 0")
    assert ":browser:" in page.get_by_label("Right model").input_value()
    assert page.get_by_label("System prompt").input_value() == SYSTEM  # asked as it was trained
    page.get_by_label("Prompt", exact=True).fill("What is 5 + 5?")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Ask both").click()
    page.locator("#status", has_text="Done.").wait_for(timeout=60_000)
    assert ":browser:" in page.locator("#right-title").inner_text()
    for side in ("left", "right"):  # a random tiny model may write only blanks: count what was streamed
        answer = page.locator(f"#{side}-answer")
        assert answer.get_attribute("data-done") == "yes" and int(answer.get_attribute("data-chunks")) >= 2
        assert "generation failed" not in answer.inner_text()  # the DoRA job's adapter answers beside the base
    shot(page, "playground.png", tmp_path)

    page.get_by_role("link", name="Export").click()
    row = page.locator("#exports tbody tr", has_text=":browser:")
    with page.expect_download(timeout=300_000) as download:  # the export waits its turn in a busy worker
        row.get_by_role("button", name="adapter of").click()
    saved = tmp_path / "adapter.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
    assert "adapter_config.json" in names and "adapter_model.safetensors" in names
    assert download.value.suggested_filename.endswith("-adapter.zip")
    shot(page, "export.png", tmp_path)

    page.get_by_role("link", name="Jobs").click()
    row = page.locator("#jobs tbody tr", has_text=":browser:")
    assert row.locator("td").nth(1).inner_text() == "succeeded"
    job_page, model = row.get_by_role("link").get_attribute("href"), row.locator("td").nth(2).inner_text()
    for path in (job_page, "/jobs", "/export", f"/playground?right={model}"):  # with content, at phone width
        fits_phone(page, path)
    shot(page, "phone-playground.png", tmp_path)


def test_a_second_job_is_cancelled_from_its_page(page, tmp_path):
    log_in(page)
    upload(page, write_jsonl(tmp_path / "long.jsonl", [chat(i) for i in range(600, 640)]))
    page.get_by_role("link", name="Fine-tune on it").click()
    page.wait_for_url("**/jobs/new?training_file=file-*")
    page.get_by_label("Epochs").fill("50")
    page.get_by_label("Name suffix").fill("cancelled")
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url("**/jobs/ftjob-*")
    cancel = page.get_by_role("button", name="Cancel")
    cancel.click()
    page.locator("#status", has_text="cancelled").wait_for(timeout=120_000)
    assert cancel.is_disabled() and page.get_by_role("button", name="Resume").is_disabled()
    page.locator("#events li", has_text="cancelled").wait_for()
    page.goto("/export")
    assert page.locator("#exports tbody tr", has_text=":cancelled:").count() == 0  # nothing to export


BRAND = Path(__file__).resolve().parents[2] / "examples" / "brand-voice"


def test_a_preference_file_trains_with_dpo_and_its_report_compares_preference_accuracy(page, tmp_path):
    pairs = (BRAND / "train-openai.jsonl").read_text().splitlines()[:20]
    log_in(page)
    upload(page, write_jsonl(tmp_path / "pairs.jsonl", pairs))
    page.get_by_role("link", name="Fine-tune on it").click()
    page.wait_for_url("**/jobs/new?training_file=file-*")
    page.locator("#epochs-auto", has_text="for 20 examples").wait_for(timeout=60_000)
    objective = page.get_by_label("Objective")
    assert objective.input_value() == "dpo" and page.get_by_label("DPO beta").is_enabled()  # from the file
    page.get_by_label("DPO beta").fill("0.2")
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Name suffix").fill("voice")
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url("**/jobs/ftjob-*")
    page.locator("#status", has_text="succeeded").wait_for(timeout=240_000)
    page.locator("#events li", has_text="preference accuracy").wait_for()  # the evaluation's headline
    report = page.frame_locator("#report")
    assert "preference accuracy" in report.locator("body").inner_text()
    objective_of_job = page.evaluate(
        "async () => (await (await fetch(location.pathname.replace('/jobs/', '/v1/fine_tuning/jobs/'))).json()).method"
    )
    assert objective_of_job["type"] == "dpo" and objective_of_job["dpo"]["hyperparameters"]["beta"] == 0.2
