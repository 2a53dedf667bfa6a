#!/usr/bin/env bash
# The GPU check for the pre-training MFU target (issue 4 §7: >= 40 % at length 512), sized for one device call
# (about 7-9 minutes on an H100/H200): `bench/mfu_probe.py` compiles and times ElasticBERT-base at 512 x 64 with
# one change at a time, keeping what helps, and profiles each run by kind of kernel.
#
#   OUT=bench-results bash bench/run_gpu_mfu_probe.sh
set -uo pipefail
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  timeout "${PROBE_TIMEOUT:-540}" $PY bench/mfu_probe.py --out "$OUT" ${PROBE_ARGS:-}
} > "$OUT/mfu_probe.txt" 2>&1
grep -v -e "^AUTOTUNE" -e "^  " -e "^SingleProcess" -e "^strides" -e "^dtypes" "$OUT/mfu_probe.txt" | tail -c 11000
