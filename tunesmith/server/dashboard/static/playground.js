// The playground: two chat completions streamed side by side (server-sent events read from fetch).
"use strict";

async function models() {
  const listed = (await (await fetch("/v1/models")).json()).data.map((m) => m.id);
  for (const side of ["left", "right"]) {
    const select = document.getElementById(`${side}-model`);
    select.replaceChildren(...listed.map((id) => new Option(id, id)));
  }
  const asked = new URLSearchParams(window.location.search);
  const pick = (wanted, fallback) => (listed.includes(wanted) ? wanted : fallback);
  document.getElementById("left-model").value = pick(asked.get("left"), listed[0]);
  document.getElementById("right-model").value = pick(asked.get("right"), listed[listed.length - 1]);
  await systemPrompt();
}

// The system prompt the right-hand model was trained with, so that it is asked as it learned.
async function systemPrompt() {
  const model = document.getElementById("right-model").value;
  const answer = await fetch(`/api/system-prompt?model=${encodeURIComponent(model)}`);
  const system = document.getElementById("system");
  if (answer.ok && (system.dataset.filled === "yes" || !system.value)) {
    system.value = (await answer.json()).system;
    system.dataset.filled = "yes";
  }
}

async function stream(side, messages, settings) {
  const model = document.getElementById(`${side}-model`).value;
  const out = document.getElementById(`${side}-answer`);
  document.getElementById(`${side}-title`).textContent = model;
  out.textContent = "";
  out.dataset.chunks = "0";
  out.dataset.done = "no";
  const answer = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages, stream: true, ...settings }),
  });
  if (!answer.ok) {
    out.textContent = (await answer.json()).error.message;
    return;
  }
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") {
        out.dataset.done = "yes";
        return;
      }
      const chunk = JSON.parse(data);
      out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
      for (const choice of chunk.choices) out.textContent += choice.delta.content || "";
    }
  }
}

document.getElementById("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const system = document.getElementById("system").value.trim();
  const messages = [
    ...(system ? [{ role: "system", content: system }] : []),
    { role: "user", content: document.getElementById("prompt").value },
  ];
  const settings = {
    temperature: Number(document.getElementById("temperature").value),
    max_tokens: Number(document.getElementById("max-tokens").value),
  };
  const status = document.getElementById("status");
  status.textContent = "Answering...";
  await Promise.all([stream("left", messages, settings), stream("right", messages, settings)]);
  status.textContent = "Done.";
});

document.getElementById("right-model").addEventListener("change", systemPrompt);
models();
ready(document.getElementById("ask"));
