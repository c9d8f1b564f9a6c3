#!/usr/bin/env bash
# The small wheels a GPU image with torch, transformers, peft, accelerate, typer, rich and pytest lacks for
# tunesmith and bench/gpu_check.sh, downloaded into wheels/ (git-ignored) to be carried to a machine without
# network. Pinned by constraints.txt; pure-Python or small, so they fit a 64 MiB carry. bitsandbytes (QLoRA) and
# datasets' pyarrow are larger: bring them on an image that has them, or gpu_check.sh skips QLoRA / TRL, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p wheels
pin() { grep -i "^$1==" constraints.txt || echo "$1"; }
for package in gguf safetensors pydantic pydantic-core annotated-types typing-inspection pyyaml jinja2 \
  rouge-score fastapi starlette uvicorn filelock trl llguidance jsonschema jsonschema-specifications referencing \
  rpds-py attrs; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_31_x86_64 --platform any -d wheels "$(pin "$package")" \
    || echo "not downloaded: $package"
done
du -sh wheels
