"""A fine-tuning script written against OpenAI's documentation, as teams have them: upload, create, poll, read the
events and checkpoints, then ask the tuned model. It runs unchanged against tunesmith: the openai client reads its
base URL and key from the environment.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=KEY FINE_TUNE_MODEL=smollm2-135m-instruct \
        python examples/from-openai/finetune.py examples/call-summaries/train.jsonl examples/call-summaries/eval.jsonl

Against OpenAI, leave OPENAI_BASE_URL unset and FINE_TUNE_MODEL at one of its models.
"""

from __future__ import annotations

import os
import sys
import time

from openai import OpenAI

MODEL = os.environ.get("FINE_TUNE_MODEL", "gpt-4o-mini-2024-07-18")


def main(training_path: str, validation_path: str) -> None:
    client = OpenAI()
    with open(training_path, "rb") as training_file, open(validation_path, "rb") as validation_file:
        training = client.files.create(file=training_file, purpose="fine-tune")
        validation = client.files.create(file=validation_file, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        validation_file=validation.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        suffix="calls",
    )
    print(f"created {job.id}: {job.status}")
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(5)
        job = client.fine_tuning.jobs.retrieve(job.id)
        print(f"{job.status}, {job.trained_tokens or 0} tokens trained, finish expected at {job.estimated_finish}")
    for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=10).data):
        print(f"event: {event.message}")
    if job.status != "succeeded":
        sys.exit(f"the job {job.status}: {job.error.message if job.error else ''}")
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job.id).data:
        print(f"checkpoint at step {checkpoint.step_number}: train loss {checkpoint.metrics.train_loss}")
    answer = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "Summarise this call: the customer was charged twice for May."}],
        max_tokens=60,
    )
    print(f"{job.fine_tuned_model}: {answer.choices[0].message.content}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
