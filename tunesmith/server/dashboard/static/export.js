// The Export page: ask the server to export (once), then download the zip it made.
"use strict";

const status = document.getElementById("status");

async function download(button) {
  const job = button.closest("tr").dataset.job;
  const format = button.dataset.format;
  status.textContent = `Exporting ${format} of ${job}...`;
  button.disabled = true;
  try {
    const [answer, body] = await finished(await fetch(`/api/jobs/${job}/exports/${format}`, { method: "POST" }));
    if (!answer.ok) {
      status.textContent = `Export failed: ${body.error.message}`;
      return;
    }
    status.textContent = `${format} of ${job} ready (${(body.bytes / 1e6).toFixed(1)} MB): downloading.`;
    status.dataset.url = body.url;
    const link = document.createElement("a");
    link.href = body.url;
    link.download = "";
    document.body.append(link);
    link.click();
    link.remove();
  } finally {
    button.disabled = false;
  }
}

for (const button of document.querySelectorAll("#exports button")) {
  button.addEventListener("click", () => download(button));
}
