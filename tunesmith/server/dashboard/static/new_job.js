// The New job page: shows what "auto" means for the chosen file, model and method, then creates the job through
// POST /v1/fine_tuning/jobs (tunesmith's own hyperparameters: finetuning_type, lora_rank). The objective follows
// the file: preference pairs train with DPO (method type dpo, with its beta), anything else supervised.
"use strict";

const form = document.getElementById("new-job");
const field = (id) => document.getElementById(id);
const method = () => form.querySelector("input[name=finetuning-type]:checked").value;
let learningRates = null; // per method, for the chosen model: from the file's check


function objective() {
  field("beta").disabled = field("objective").value !== "dpo";
}

function learningRate() {
  if (learningRates) field("lr-auto").textContent = `auto: 1 (a learning rate of ${learningRates[method()]} for ${method()})`;
  field("lora-rank").disabled = method() === "full";
}

async function autoValues() {
  field("estimate").textContent = "Checking the file under this model...";
  const file = encodeURIComponent(field("training-file").value);
  const model = encodeURIComponent(field("model").value);
  const [answer, report] = await finished(await fetch(`/api/files/${file}/check?model=${model}`, { method: "POST" }));
  if (!answer.ok) {
    field("estimate").textContent = report.error.message;
    return;
  }
  field("objective").value = report.stats.training.objective === "dpo" ? "dpo" : "supervised";
  objective();
  const training = report.stats.training;
  learningRates = training.learning_rates;
  learningRate();
  field("epochs-auto").textContent = `auto: ${training.epochs} for ${report.stats.train.examples} examples`;
  field("epochs-auto").dataset.auto = String(training.epochs);
  const time = training.estimated_seconds === undefined ? "" : `, about ${duration(training.estimated_seconds)} of LoRA training here`;
  field("estimate").textContent = report.error_count
    ? `${report.error_count} errors in this file: see them on the Data page.`
    : `${training.tokens.toLocaleString()} tokens to train at the automatic epochs${time}.`;
}

function number(id) {
  const value = field(id).value.trim();
  return value === "" ? "auto" : Number(value);
}

form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const hyperparameters = {
    n_epochs: number("epochs"),
    batch_size: number("batch-size"),
    learning_rate_multiplier: number("lr-multiplier"),
    finetuning_type: method(),
  };
  if (method() !== "full") hyperparameters.lora_rank = number("lora-rank");
  const type = field("objective").value;
  if (type === "dpo") hyperparameters.beta = number("beta");
  const body = {
    model: field("model").value,
    training_file: field("training-file").value,
    method: { type, [type]: { hyperparameters } },
  };
  if (field("validation-file").value) body.validation_file = field("validation-file").value;
  if (field("suffix").value.trim()) body.suffix = field("suffix").value.trim();
  if (field("seed").value.trim()) body.seed = Number(field("seed").value);
  const answer = await fetch("/v1/fine_tuning/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const job = await answer.json();
  if (!answer.ok) {
    field("error").textContent = `The job was refused: ${job.error.message}`;
    return;
  }
  window.location.href = `/jobs/${job.id}`;
});

if (form) { // without an uploaded file the page shows a link to the Data page instead of the form
  for (const input of form.querySelectorAll("input[name=finetuning-type]")) input.addEventListener("change", learningRate);
  field("training-file").addEventListener("change", autoValues);
  field("model").addEventListener("change", autoValues);
  field("objective").addEventListener("change", objective);
  learningRate();
  autoValues();
  ready(form);
}
