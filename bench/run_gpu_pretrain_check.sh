#!/usr/bin/env bash
# The GPU check of the trainer itself, sized for one device call (about 4 minutes on an H100/H200):
#  1. the pre-training benchmark's best figure with the engine's defaults (no engine flags: dropout_masks auto,
#     the MLM loss engine by device), ElasticBERT-base at 512 x 128;
#  2. `elue pretrain` (the trainer: data pipeline, Accelerate, bf16, compiled regions, dropout_masks auto) on a
#     local corpus, ElasticBERT-base from scratch, length 512; its train_log.csv comes back.
# EXTRA holds what the GPU machine lacks: a local tokenizer, the corpus, and wheels unpacked under site/
# (datasets, dill, multiprocess). Prepared with bench/prepare_gpu_extra.sh.
#
#   OUT=bench-results EXTRA=.gpu-extra bash bench/run_gpu_pretrain_check.sh
set -uo pipefail
OUT=${OUT:-bench-results}
EXTRA=${EXTRA:-.gpu-extra}
SEQ=${SEQ:-512} BATCH=${BATCH:-128} STEPS=${STEPS:-30} TRAIN_STEPS=${TRAIN_STEPS:-60} DEVICE_ARGS=${DEVICE_ARGS:-}
mkdir -p "$OUT"
export PYTHONPATH=src:$EXTRA/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, transformers, datasets, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__)"
  timeout "${BENCH_TIMEOUT:-150}" $PY bench/bench_pretrain.py --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" \
    --compile --bf16-residual --profile 0 $DEVICE_ARGS
} > "$OUT/bench.txt" 2>&1
tail -4 "$OUT/bench.txt"
cat > "$OUT/pretrain.json" <<JSON
{"tokenizer_name_or_path": "$EXTRA/tokenizer", "model_config": {"residual_in_fp32": false ${MODEL_CONFIG:-}},
 "train_files": ["$EXTRA/corpus/train.txt"], "eval_files": ["$EXTRA/corpus/eval.txt"], "eval_examples": 256,
 "max_seq_length": $SEQ, "per_device_batch_size": $BATCH, "max_steps": $TRAIN_STEPS, "logging_steps": 10,
 "warmup_steps": 10, "compile": true, "output_dir": "$OUT/run", "save_steps": 0, "save_total_limit": 1 ${TRAIN_EXTRA:-}}
JSON
timeout "${TRAIN_TIMEOUT:-240}" $PY -m elue.elasticbert.pretraining --config "$OUT/pretrain.json" > "$OUT/pretrain.txt" 2>&1
echo "pretrain rc=$?"
cp "$OUT/run/train_log.csv" "$OUT/train_log.csv" 2>/dev/null
cp "$OUT/run/eval_log.csv" "$OUT/eval_log.csv" 2>/dev/null
rm -rf "$OUT/run"  # the model (and its checkpoint) stays there: only the logs come back
tail -c 3000 "$OUT/pretrain.txt"
cut -d, -f1-9 "$OUT/train_log.csv" 2>/dev/null
