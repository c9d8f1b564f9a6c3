// Shared by the dashboard's pages.
"use strict";

// A number of seconds as "1h 05m" or "3m 07s".
function duration(seconds) {
  const minutes = Math.floor(seconds / 60);
  const two = (n) => String(n).padStart(2, "0");
  return minutes >= 60 ? `${Math.floor(minutes / 60)}h ${two(minutes % 60)}m` : `${minutes}m ${two(Math.round(seconds % 60))}s`;
}

// A form sent by a page's script: its button stays disabled until the handler is attached, so that a click while the
// script loads never submits the form the browser's way (a GET that loses the values).
function ready(form) {
  form.querySelector("button[type=submit]").disabled = false;
}

// The answer to a request for heavy work (a data check, an export), which the jobs worker does: while the server
// answers 202 with the task, ask again every half second. Returns the final response and its JSON body.
async function finished(answer) {
  let body = await answer.json();
  while (answer.status === 202) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    answer = await fetch(`/api/tasks/${body.id}`);
    body = await answer.json();
  }
  return [answer, body];
}
