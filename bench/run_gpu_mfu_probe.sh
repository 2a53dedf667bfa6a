#!/usr/bin/env bash
# The next GPU check for the pre-training MFU target (issue 4 §7: >= 40 % at length 512), prepared to fit one
# device call (about 6-8 minutes on an H100/H200): the compiled step of ElasticBERT-base at 512 x 64 with a
# breakdown of GPU time by kind of kernel, then one change at a time against it.
#
#   OUT=bench-results bash bench/run_gpu_mfu_probe.sh
set -uo pipefail
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
probe() { # name, then extra bench_pretrain arguments
  local name=$1; shift
  echo "== $name"
  timeout 200 $PY bench/bench_pretrain.py --seq 512 --batch 64 --modes all --compile --steps 20 --warmup 5 \
    --json "$OUT/mfu_$name.json" "$@"
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__)"
  probe compiled --profile 30                                  # where the compiled step's time goes
  probe no_mask --no-mask                                      # SDPA without the all-ones mask
  probe batch128 --batch 128                                   # larger GEMMs, fewer steps per token
  probe autotune --compile-mode max-autotune-no-cudagraphs     # inductor's GEMM templates, fused epilogues
} 2>&1 | tee "$OUT/mfu_probe.txt"
