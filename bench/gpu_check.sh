#!/usr/bin/env bash
# The GPU check, one script of at most 8 minutes on one H100/H200: the CUDA tests, then the same LoRA job with
# tunesmith and with TRL's SFTTrainer defaults on a random model of Llama-3.2-1B's shape, then QLoRA on a random
# model of Llama-3.1-8B's shape, then the memory plan against torch.cuda.max_memory_allocated. Figures go to
# $OUT_DIR (default bench/results/gpu/): copy them into docs/benchmarks.md with the device named.
#
#   bench/gpu_check.sh          on a CUDA machine whose image has torch, transformers, peft, accelerate: installs
#                               tunesmith with --no-deps, and the wheels it lacks from wheels/ (bench/gpu_wheels.sh)
#   bench/gpu_check.sh --dry    the same steps on this CPU with a tiny model (the CUDA-only tests skip, QLoRA is
#                               refused with one line): the script itself, checked by tests/integration
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
PY=${PYTHON:-python3}
OUT=${OUT_DIR:-bench/results/gpu}
mkdir -p "$OUT"
failed=0
step() { echo "== $1 ($(date +%T))"; }
run() {  # a step that may fail without stopping the others; its status is the script's
  "$@" || { echo "!! failed ($?): $*"; failed=1; }
}

if [[ $DRY == 0 ]]; then
  step "install"
  if compgen -G "wheels/*.whl" > /dev/null; then $PY -m pip install -q --no-deps --no-index wheels/*.whl; fi
  $PY -m pip install -q --no-deps --no-build-isolation -e .  # no network there: the image's setuptools builds it
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/device.txt"
  SHAPE=llama-3.2-1b BIG=llama-3.1-8b STEPS=30 DEVICE=cuda
else
  SHAPE=tiny BIG=tiny STEPS=3 DEVICE=cpu
fi
TOOLS=tunesmith,tunesmith-eager
[[ $DRY == 1 ]] && TOOLS=tunesmith  # the dry run checks the script's steps, not compile's speed-up
$PY -c "import trl" 2> /dev/null && TOOLS=$TOOLS,trl || echo "trl is not installed here: tunesmith alone"

step "CUDA tests"
if [[ $DRY == 0 ]]; then
  run timeout 90 $PY -m pytest -q -p no:cacheprovider tests/cuda -o addopts=-ra
else  # make test itself collects tests/cuda, which skip without a GPU
  echo "skipped in the dry run: no CUDA here"
fi

step "LoRA on $SHAPE: $TOOLS"
run timeout 140 $PY -m bench.gpu_lora --shape $SHAPE --steps $STEPS --device $DEVICE --tools $TOOLS \
  --json "$OUT/lora-$SHAPE.json"

step "QLoRA on $BIG"
if [[ $DRY == 0 ]] && $PY -c "import bitsandbytes" 2> /dev/null; then
  run timeout 140 $PY -m bench.gpu_lora --shape $BIG --steps 5 --quantize 4bit --device cuda --tools ${TOOLS//,tunesmith-eager/} \
    --json "$OUT/qlora-$BIG.json"
else  # QLoRA must be refused here with one line, exit 2
  refusal=$($PY -m tunesmith data check examples/call-summaries/train.jsonl --no-estimate --quantize 4bit 2>&1)
  status=$?
  echo "$refusal"
  [[ $status == 2 && $(echo "$refusal" | wc -l) == 1 ]] || { echo "!! QLoRA was not refused with one line"; failed=1; }
fi

step "fused output-head loss: tunesmith, plain, Liger Kernel where installed"
if [[ $DRY == 0 ]]; then
  run timeout 40 $PY -m bench.fused_loss --device cuda --json "$OUT/fused-loss.json"
else
  run timeout 60 $PY -m bench.fused_loss --rows 512 --hidden 64 --vocab 1000 --device cpu --json "$OUT/fused-loss.json"
fi

step "memory plan against the measured peak"
if [[ $DRY == 0 ]]; then
  run timeout 60 $PY bench/memory_fit.py --random $SHAPE --device cuda --precision bf16 --json "$OUT/memory-fit.json"
else  # tests/integration/test_fit.py measures the same on this CPU
  echo "skipped in the dry run: tests/integration/test_fit.py measures the plan here"
fi
step "done: figures in $OUT"
exit $failed
