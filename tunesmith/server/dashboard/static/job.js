// A job's page: its state, loss chart (uPlot) and events, polled every 2 s without reloading.
"use strict";

const api = `/v1/fine_tuning/jobs/${JOB_ID}`;
let chart = null;

function lossChart(steps, train, held, rewards) {
  // a reinforcement job learns a reward, not a loss: its chart shows the mean reward, training and held out
  const data = rewards ? [steps, rewards.train, rewards.held] : [steps, train, held];
  const kind = rewards ? "reward" : "loss";
  if (chart && chart.kind === kind) {
    chart.setData(data);
    return;
  }
  if (chart) {
    chart.destroy();
  }
  const options = {
    width: Math.min(900, document.getElementById("chart").clientWidth || 900),
    height: 280,
    scales: { x: { time: false } },
    series: [
      { label: "step" },
      { label: `training ${rewards ? "mean reward" : "loss"}`, stroke: "#1f5fbf", width: 2 },
      { label: `held-out ${rewards ? "mean reward" : "loss"}`, stroke: "#c0392b", width: 2, points: { show: true, size: 6 } },
    ],
  };
  chart = new uPlot(options, data, document.getElementById("chart"));
  chart.kind = kind;
  document.getElementById("chart").dataset.kind = kind;
}

async function act(action) {
  const answer = await fetch(`${api}/${action}`, { method: "POST" });
  if (!answer.ok) {
    document.getElementById("error").textContent = (await answer.json()).error.message;
  }
  refresh();
}

function checkpoints(list) {
  const body = document.querySelector("#checkpoints tbody");
  body.replaceChildren();
  for (const c of list.slice().reverse()) {
    const row = body.insertRow();
    row.insertCell().textContent = String(c.step_number);
    row.insertCell().textContent = c.metrics.train_loss?.toFixed(4) ?? "-";
    row.insertCell().textContent = c.metrics.full_valid_loss?.toFixed(4) ?? c.metrics.valid_loss?.toFixed(4) ?? "-";
    const link = document.createElement("a");
    link.href = `/playground?right=${encodeURIComponent(c.fine_tuned_model_checkpoint)}`;
    link.textContent = c.fine_tuned_model_checkpoint;
    row.insertCell().append(link);
  }
}

async function outcome(job, events) {
  document.getElementById("outcome").hidden = false;
  const done = events.data.find((e) => e.type === "message" && e.message.startsWith("The job has successfully"));
  document.getElementById("headline").textContent = done ? done.message : "";
  document.getElementById("try").href = `/playground?right=${encodeURIComponent(job.fine_tuned_model)}`;
  const report = await fetch(`/jobs/${JOB_ID}/report`);
  if (report.ok) {
    document.getElementById("report").src = `/jobs/${JOB_ID}/report`;
    document.getElementById("report-box").hidden = false;
  }
}

async function refresh() {
  const [job, events, saved] = await Promise.all([
    fetch(api).then((r) => r.json()),
    fetch(`${api}/events?limit=100`).then((r) => r.json()),
    fetch(`${api}/checkpoints?limit=10`).then((r) => r.json()),
  ]);
  checkpoints(saved.data);
  document.getElementById("status").textContent = job.status + (job.error ? `: ${job.error.message}` : "");
  document.getElementById("model").textContent = job.fine_tuned_model || job.model;
  document.getElementById("tokens").textContent = job.trained_tokens ?? "-";
  document.getElementById("eta").textContent = job.estimated_finish
    ? new Date(job.estimated_finish * 1000).toLocaleTimeString()
    : "-";
  document.getElementById("pause").disabled = job.status !== "running";
  document.getElementById("resume").disabled = job.status !== "paused";
  document.getElementById("cancel").disabled = ["succeeded", "failed", "cancelled"].includes(job.status);
  const oldestFirst = events.data.slice().reverse();
  const base = oldestFirst.filter((e) => e.data && e.data.step === 0);  // the held-out loss before training
  const metrics = oldestFirst.filter((e) => e.type === "metrics");
  const last = metrics[metrics.length - 1];
  document.getElementById("speed").textContent = last && last.data.tokens_per_second
    ? `${Math.round(last.data.tokens_per_second)} tokens/s`
    : "-";
  const points = [...base, ...metrics];
  const rewarded = points.some((e) => e.data.train_reward_mean !== undefined || e.data.valid_reward_mean !== undefined);
  lossChart(
    points.map((e) => e.data.step),
    points.map((e) => e.data.train_loss ?? null),
    points.map((e) => e.data.valid_loss ?? null),
    rewarded
      ? {
          train: points.map((e) => e.data.train_reward_mean ?? null),
          held: points.map((e) => e.data.valid_reward_mean ?? null),
        }
      : null,
  );
  document.getElementById("chart").dataset.points = String(metrics.length);
  document.getElementById("chart").dataset.base = String(base.length);
  const list = document.getElementById("events");
  list.replaceChildren(...oldestFirst.map((e) => {
    const item = document.createElement("li");
    item.textContent = e.message;
    item.className = e.level;
    return item;
  }));
  if (job.status === "succeeded") {
    outcome(job, events);
  } else if (!["failed", "cancelled"].includes(job.status)) {
    setTimeout(refresh, 2000);
  }
}

for (const action of ["pause", "resume", "cancel"]) {
  document.getElementById(action).addEventListener("click", () => act(action));
}
refresh();
