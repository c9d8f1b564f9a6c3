#!/usr/bin/env bash
# Distil the call-summaries run (the teacher, served by `tunesmith serve`) into the base default model.
# Run from the repository root after `make demo` (which trains the teacher into runs/demo):
#     bash examples/distill/run.sh [distill|sft]
# Every step can be rerun: the collection resumes, training starts afresh in its own folder, the report keeps
# the teacher's answers. The report lands in runs/distill-<objective>/distill-report/.
set -euo pipefail
OBJECTIVE=${1:-distill}
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8011}
TEACHER_URL=http://127.0.0.1:$PORT/v1
test -d runs/demo/final || { echo "runs/demo/final is missing: run make demo first (it trains the teacher)" >&2; exit 2; }

# 1. The teacher: the call-summaries adapter on the default model, on this machine.
"$BIN/tunesmith" serve --adapter runs/demo --port "$PORT" --no-worker > runs/distill-teacher.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 120); do curl -sf "$TEACHER_URL/models" > /dev/null && break; sleep 1; done
TEACHER=$(curl -sf "$TEACHER_URL/models" | "$BIN/python" -c \
    "import json, sys; print(next(m['id'] for m in json.load(sys.stdin)['data'] if m['id'].startswith('ft:')))")
echo "teacher: $TEACHER at $TEACHER_URL"

# 2. Its notes for 200 calls nobody summarised, with the top-20 log-probs of every token.
"$BIN/tunesmith" distill collect --teacher "$TEACHER_URL" --teacher-model "$TEACHER" --api-key local \
    --prompts examples/distill/prompts.jsonl --out runs/distill-teacher.jsonl \
    --logprobs 20 --max-tokens 160 --concurrency 8

# 3. The student: the base default model, trained on those notes (at 1.3e-3, the rate the README's results were
# measured at: auto before 2026-12-02, 1.8e-3 now).
rm -rf "runs/distill-$OBJECTIVE"
"$BIN/tunesmith" train --data runs/distill-teacher.jsonl --objective "$OBJECTIVE" --epochs 1 --lr 1.3e-3 \
    --out "runs/distill-$OBJECTIVE" --no-eval

# 4. Student vs teacher on the 40 held-out calls of call-summaries (their expert notes are the references).
"$BIN/tunesmith" distill report "runs/distill-$OBJECTIVE" --teacher "$TEACHER_URL" --teacher-model "$TEACHER" \
    --api-key local --data examples/call-summaries/eval.jsonl --max-tokens 160 \
    --concurrency 4 --price-in 0.15 --price-out 0.60 --hourly-cost 0.10
