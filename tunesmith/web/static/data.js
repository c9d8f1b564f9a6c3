// The Data page: upload through the files API, check, and show what the check found. Text goes in as text only.
"use strict";

const form = document.getElementById("upload");
const status = document.getElementById("status");

function rows(tableId, cells) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren();
  for (const values of cells) {
    const row = body.insertRow();
    values.forEach((value, i) => {
      const cell = row.insertCell();
      cell.textContent = value;
      if (i === values.length - 1) cell.className = "message";
    });
  }
}

function problems(boxId, tableId, list) {
  document.getElementById(boxId).hidden = list.length === 0;
  rows(tableId, list.map((p) => [p.line ? String(p.line) : "file", p.code, p.message]));
}

function show(report) {
  const verdict = document.getElementById("verdict");
  verdict.textContent = report.error_count
    ? `${report.error_count} errors: fix them before training`
    : "OK: ready to train";
  verdict.className = report.error_count ? "error" : "ok";
  problems("errors-box", "errors", report.errors);
  problems("warnings-box", "warnings", report.warnings);
  const stats = report.stats.train || {};
  const training = report.stats.training || {};
  rows("stats", [
    ...Object.entries(stats).map(([key, value]) => [key, String(value)]),
    ["epochs (auto)", String(training.epochs)],
    ["tokens to train", String(training.tokens)],
  ]);
  document.getElementById("result").hidden = false;
  document.getElementById("start").hidden = report.error_count > 0;
}

let checkedFile = null;

document.getElementById("start").addEventListener("submit", async (event) => {
  event.preventDefault();
  const epochs = document.getElementById("epochs").value.trim();
  const body = {
    model: MODEL,
    training_file: checkedFile,
    method: { type: "supervised", supervised: { hyperparameters: { n_epochs: epochs === "auto" ? "auto" : Number(epochs) } } },
  };
  const suffix = document.getElementById("suffix").value.trim();
  if (suffix) body.suffix = suffix;
  const answer = await fetch("/v1/fine_tuning/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const job = await answer.json();
  if (!answer.ok) {
    status.textContent = `The job was refused: ${job.error.message}`;
    return;
  }
  window.location.href = `/jobs/${job.id}`;
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("file").files[0];
  const body = new FormData();
  body.append("purpose", "fine-tune");
  body.append("file", file);
  status.textContent = `Uploading ${file.name}...`;
  const uploaded = await fetch("/v1/files", { method: "POST", body });
  const record = await uploaded.json();
  if (!uploaded.ok) {
    status.textContent = `Upload refused: ${record.error.message}`;
    return;
  }
  status.textContent = `Checking ${record.filename} (${record.id})...`;
  const checked = await fetch(`/api/files/${record.id}/check`, { method: "POST" });
  const report = await checked.json();
  if (!checked.ok) {
    status.textContent = `Check failed: ${report.error.message}`;
    return;
  }
  status.textContent = `${record.filename} (${record.id}) checked.`;
  checkedFile = record.id;
  show(report);
});
