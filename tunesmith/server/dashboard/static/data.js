// The Data page: upload through the files API, check, and show what the check found. Text goes in as text only.
"use strict";

const form = document.getElementById("upload");
const status = document.getElementById("status");
let checkedFile = null;


async function showLine(line) {
  const answer = await fetch(`/api/files/${checkedFile}/lines/${line}`);
  const body = await answer.json();
  document.getElementById("line-title").textContent = `Line ${line}`;
  document.getElementById("line-text").textContent = answer.ok ? body.text : body.error.message;
  document.getElementById("line-box").hidden = false;
  document.getElementById("line-text").focus();
}

function problems(boxId, tableId, list) {
  document.getElementById(boxId).hidden = list.length === 0;
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren();
  for (const p of list) {
    const row = body.insertRow();
    const where = row.insertCell();
    if (p.line) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.textContent = String(p.line);
      button.setAttribute("aria-label", `See line ${p.line}`);
      button.addEventListener("click", () => showLine(p.line));
      where.append(button);
    } else {
      where.textContent = "file";
    }
    row.insertCell().textContent = p.code;
    const message = row.insertCell();
    message.textContent = p.message;
    message.className = "message";
  }
}

function statistics(report) {
  const stats = report.stats.train || {};
  const training = report.stats.training || {};
  const shown = Object.entries(stats).filter(([key]) => key !== "length_histogram");
  shown.push(["epochs (auto)", training.epochs], ["tokens to train", training.tokens]);
  if (training.estimated_seconds !== undefined) {
    shown.push(["estimated time here", `${duration(training.estimated_seconds)} (${training.tokens_per_second} tokens/s)`]);
  }
  const body = document.querySelector("#stats tbody");
  body.replaceChildren();
  for (const [key, value] of shown) {
    const row = body.insertRow();
    const head = document.createElement("th");
    head.scope = "row";
    head.textContent = key;
    row.append(head);
    row.insertCell().textContent = String(value);
  }
}

function histogram(report) {
  const figure = document.getElementById("histogram");
  figure.querySelector(".uplot")?.remove();
  const bins = (report.stats.train || {}).length_histogram;
  if (!bins) return;
  const middles = bins.counts.map((_, i) => (bins.edges[i] + bins.edges[i + 1]) / 2);
  const options = {
    width: Math.min(480, figure.clientWidth || 480),
    height: 220,
    scales: { x: { time: false } },
    legend: { show: false },
    series: [{ label: "tokens" }, { label: "examples", fill: "#1f5fbf88", stroke: "#1f5fbf", paths: uPlot.paths.bars({ size: [0.9] }) }],
  };
  new uPlot(options, [middles, bins.counts], figure);
  figure.dataset.bars = String(bins.counts.length);
}

async function preview() {
  const box = document.getElementById("preview");
  box.replaceChildren();
  const answer = await fetch(`/api/files/${checkedFile}/preview?n=3`);
  if (!answer.ok) return;
  for (const example of (await answer.json()).examples) {
    const article = document.createElement("article");
    article.className = "example";
    const title = document.createElement("h4");
    title.textContent = `line ${example.line}: ${example.tokens} tokens, ${example.trained} trained`;
    const text = document.createElement("pre");
    for (const mark of example.marks) {
      const piece = document.createElement(mark.trained ? "mark" : "span");
      piece.className = mark.trained ? "trained" : "masked";
      piece.textContent = mark.text;
      text.append(piece);
    }
    article.append(title, text);
    box.append(article);
  }
}

function show(report) {
  const verdict = document.getElementById("verdict");
  verdict.textContent = report.error_count
    ? `${report.error_count} errors: fix them before training`
    : "OK: ready to train";
  verdict.className = report.error_count ? "error" : "ok";
  problems("errors-box", "errors", report.errors);
  problems("warnings-box", "warnings", report.warnings);
  document.getElementById("line-box").hidden = true;
  document.getElementById("result").hidden = false;
  statistics(report);
  histogram(report);
  document.getElementById("next").hidden = report.error_count > 0;
  document.getElementById("fine-tune").href = `/jobs/new?training_file=${encodeURIComponent(checkedFile)}`;
}

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
  const [checked, report] = await finished(await fetch(`/api/files/${record.id}/check`, { method: "POST" }));
  if (!checked.ok) {
    status.textContent = `Check failed: ${report.error.message}`;
    return;
  }
  status.textContent = `${record.filename} (${record.id}) checked.`;
  checkedFile = record.id;
  show(report);
  preview();
});
ready(form);
