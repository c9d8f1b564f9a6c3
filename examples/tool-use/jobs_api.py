"""The tool-use recipe through the fine-tuning jobs API, written as OpenAI's documentation shows it: upload the
files, create a supervised job, poll it, then call the tuned model with `tools` and run the calls it makes (here for
real, by reading the manual page on this machine) until it answers. Against tunesmith or OpenAI alike: the openai
client reads its base URL and key from the environment.

    tunesmith serve --api-key KEY &
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=KEY FINE_TUNE_MODEL=smollm2-135m-instruct \\
        python examples/tool-use/jobs_api.py [--epochs 2] [--question "What does the -n option of nl do?"]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

from openai import OpenAI

HERE = Path(__file__).resolve().parent
MODEL = os.environ.get("FINE_TUNE_MODEL", "gpt-4o-mini-2024-07-18")
SYSTEM = "You are a shell assistant. Use the tools to look things up in the manual pages before you answer."


def _manual(command: str) -> str:
    env = os.environ | {"MANWIDTH": "1000", "LANG": "C.UTF-8"}
    done = subprocess.run(["man", "-P", "cat", command], capture_output=True, text=True, env=env, check=False)
    return re.sub(r".\x08", "", done.stdout)


def describe_option(command: str, option: str) -> str:
    """The manual's text for an option: the line after the one that lists it."""
    lines = _manual(command).splitlines()
    for i, line in enumerate(lines):
        listed = [part.split("=")[0].split("[")[0].strip() for part in line.strip().split("  ")[0].split(",")]
        if line.startswith("       -") and option in listed:
            inline = line.strip()[len(line.strip().split("  ")[0]) :].strip()
            return inline or (lines[i + 1].strip() if i + 1 < len(lines) else "")
    return f"{command} has no option {option} in its manual page"


def command_summary(command: str) -> str:
    match = re.search(r"^NAME\n {7}(.+)$", _manual(command), re.M)
    return match.group(1).strip() if match else f"no manual page for {command}"


FUNCTIONS = {"describe_option": describe_option, "command_summary": command_summary}


def fine_tune(client: OpenAI, epochs: int) -> str:
    """Upload, create, poll: the tuned model's name."""
    with open(HERE / "train.jsonl", "rb") as training, open(HERE / "eval.jsonl", "rb") as validation:
        training_file = client.files.create(file=training, purpose="fine-tune")
        validation_file = client.files.create(file=validation, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training_file.id,
        validation_file=validation_file.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs}}},
        suffix="tools",
    )
    print(f"created {job.id}: {job.status}")
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(10)
        job = client.fine_tuning.jobs.retrieve(job.id)
        print(f"{job.status}, {job.trained_tokens or 0} tokens trained")
    if job.status != "succeeded":
        raise SystemExit(f"the job {job.status}: {job.error.message if job.error else ''}")
    return job.fine_tuned_model


def ask(client: OpenAI, model: str, question: str) -> str:
    """The tool loop: the model calls functions, we run them and send the results back, until it answers."""
    tools = json.loads((HERE / "eval.jsonl").read_text().splitlines()[0])["tools"]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    for _ in range(3):
        reply = client.chat.completions.create(model=model, messages=messages, tools=tools, temperature=0)
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = FUNCTIONS[call.function.name](**json.loads(call.function.arguments))
            print(f"  called {call.function.name}({call.function.arguments}) -> {result}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return messages[-1]["content"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", help="an already tuned model: skip the fine-tuning")
    parser.add_argument("--question", default="What does the -n option of nl do?")
    args = parser.parse_args()
    client = OpenAI()
    model = args.model or fine_tune(client, args.epochs)
    print(f"{model}: {ask(client, model, args.question)}")


if __name__ == "__main__":
    main()
