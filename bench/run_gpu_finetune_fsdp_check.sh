#!/usr/bin/env bash
# GPU checks of what had only run on the CPU, sized for one device call (about 5 minutes on an H100/H200):
#  1. the real SST-2 run of examples/elasticbert_sst2_minilm.sh (MiniLM-L6 -> ElasticBERT, 6 exits, 3 epochs,
#     lr 2e-4, length 64) with `elue finetune` on the GPU through Accelerate, in bf16 autocast and in fp32; then
#     `elue predict` (GPU), `elue validate` and `elue evaluate`, and the table of docs/finetune.md for each;
#  2. the pre-training trainer under Accelerate's FSDP2 (`distributed: fsdp`, one process under torchrun):
#     40 steps straight, and 20 + resume 20 from the FSDP checkpoint (the losses must agree), and the same 40 steps
#     as one plain process (DDP path, no torchrun) and under FSDP with the compiled regions beside them.
# EXTRA holds what the GPU machine lacks (bench/prepare_gpu_extra.sh, plus minilm16/: the converted MiniLM with its
# weights stored in fp16 to fit the 64 MiB transfer limit, upcast to fp32 here before training; data/sst-2/).
#
#   OUT=bench-results EXTRA=.gpu-extra bash bench/run_gpu_finetune_fsdp_check.sh   (FINETUNE=0: part 2 alone)
# On the CPU (a trial of the script): DEVICE_ARGS=--cpu PT_ARGS=cpu=true EPOCHS=1 TRAIN_LIMIT=128 EVAL_EVERY=4 PT_STEPS=4
set -uo pipefail
OUT=${OUT:-bench-results}
EXTRA=${EXTRA:-.gpu-extra}
WORK=${WORK:-/tmp/elue-gpu-check}
EPOCHS=${EPOCHS:-3} EVAL_EVERY=${EVAL_EVERY:-108} PT_STEPS=${PT_STEPS:-40} DEVICE_ARGS=${DEVICE_ARGS:-}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=src:$EXTRA/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
  HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
elue() { $PY -c "from elue.cli import main; main()" "$@"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, transformers, datasets, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__)"
  # the carried fp16 weights (when fine-tuning), upcast to fp32 (what `elue convert` wrote, to fp16 rounding)
  [ "${FINETUNE:-1}" = 1 ] && rm -rf "$WORK/minilm" && cp -r "$EXTRA/minilm16" "$WORK/minilm" &&
  $PY -c "import sys; from safetensors.torch import load_file, save_file; p = sys.argv[1]; \
save_file({k: v.float() for k, v in load_file(p).items()}, p, metadata={'format': 'pt'})" "$WORK/minilm/model.safetensors"

  ft() { # name, mixed precision
    local name=$1 run=$WORK/$1
    echo "== fine-tuning: $name"
    SECONDS=0
    elue finetune sst-2 --model "$WORK/minilm" --output "$run/finetune" --data "$EXTRA/data" --max-length 64 \
      --batch-size 32 --lr 2e-4 --epochs "$EPOCHS" --eval-every "$EVAL_EVERY" --early-stopping 2 \
      --mixed-precision "$2" --no-progress --overwrite ${TRAIN_LIMIT:+--train-limit $TRAIN_LIMIT} $DEVICE_ARGS
    echo "finetune rc=$? in ${SECONDS}s"
    SECONDS=0
    elue predict sst-2 --model "$run/finetune/best" --output "$run/submission" --overwrite --data "$EXTRA/data" \
      --static 1-6 --entropy 0.05,0.1,0.2,0.3,0.4,0.5,0.6 --patience 1,2,3,4 --dev --no-progress $DEVICE_ARGS \
      > "$run/predict.txt"
    echo "predict rc=$? in ${SECONDS}s"
    tail -3 "$run/predict.txt"
    elue validate "$run/submission" --data "$EXTRA/data" --trust-model-code | tail -2
    elue evaluate "$run/submission" --answers "$EXTRA/data" --json "$run/evaluate.json" --trust-model-code \
      > "$run/evaluate.txt"
    echo "evaluate rc=$?"
    $PY examples/elasticbert_results_table.py "$run" --out "$OUT/ft_$name" && cat "$OUT/ft_$name.md"
  }
  if [ "${FINETUNE:-1}" = 1 ]; then
    ft bf16 bf16
    ft fp32 no
  fi

  echo "== pre-training under FSDP2 (torchrun, 1 process) and as one plain process"
  cat > "$WORK/pt.json" <<JSON
{"tokenizer_name_or_path": "$EXTRA/tokenizer",
 "model_config": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
                  "max_position_embeddings": 128},
 "train_files": ["$EXTRA/corpus/train.txt"], "eval_files": ["$EXTRA/corpus/eval.txt"], "eval_examples": 64,
 "max_seq_length": 128, "per_device_batch_size": 32, "max_steps": $PT_STEPS, "logging_steps": 1,
 "warmup_steps": 5, "save_steps": $((PT_STEPS / 2)), "eval_steps": $((PT_STEPS / 2)), "compile": false,
 "report_to": ["csv"], "output_dir": "$WORK/pt-none"}
JSON
  pt() { # launcher ("torchrun" or "plain"), output dir, overrides...
    local how=$1 dir=$2 rc; shift 2
    SECONDS=0
    if [ "$how" = torchrun ]; then
      timeout 240 torchrun --nproc_per_node 1 -m elue.elasticbert.pretraining --config "$WORK/pt.json" \
        output_dir="$dir" "$@" > "$dir.txt" 2>&1
    else
      timeout 240 $PY -m elue.elasticbert.pretraining --config "$WORK/pt.json" output_dir="$dir" "$@" > "$dir.txt" 2>&1
    fi
    rc=$?
    echo "$how ${dir##*/} $* rc=$rc in ${SECONDS}s"
    grep -E "^pre-training:|not available|Error|error" "$dir.txt" | head -5
  }
  pt torchrun "$WORK/pt-fsdp" distributed=fsdp
  pt torchrun "$WORK/pt-fsdp-resumed" distributed=fsdp stop_after_steps=$((PT_STEPS / 2))
  pt torchrun "$WORK/pt-fsdp-resumed" distributed=fsdp
  pt plain "$WORK/pt-plain" ${PT_ARGS:-}
  pt torchrun "$WORK/pt-fsdp-compiled" distributed=fsdp compile=true ${PT_ARGS:-}
  tail -c 1500 "$WORK/pt-fsdp-resumed.txt"
  $PY - "$WORK" <<'EOF'
import csv, sys
work = sys.argv[1]
def losses(name):
    with open(f"{work}/{name}/train_log.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k == "loss" or k.startswith(("mlm_", "sop_"))]
    return {int(r["step"]): [float(r[k]) for k in keys if r[k] not in ("", None)] for r in rows}, keys
ref, keys = losses("pt-fsdp")
print("train_log columns compared:", ", ".join(keys))
for other in ("pt-fsdp-resumed", "pt-plain", "pt-fsdp-compiled"):
    got, _ = losses(other)
    steps = sorted(set(ref) & set(got))
    diff = max((abs(a - b) / max(abs(a), 1e-9) for s in steps for a, b in zip(ref[s], got[s])), default=None)
    late = [s for s in steps if s > max(steps) // 2]
    print(f"pt-fsdp vs {other}: {len(steps)} common steps (of {len(ref)} / {len(got)}), max relative loss "
          f"difference {diff}, loss at steps {late[:1] + late[-1:]}: "
          + "; ".join(f"{ref[s][0]:.6f} / {got[s][0]:.6f}" for s in late[:1] + late[-1:]))
EOF
  for d in pt-fsdp pt-fsdp-resumed pt-plain pt-fsdp-compiled; do
    echo "-- $d"; cut -d, -f1-6 "$WORK/$d/train_log.csv" | sed -n '1p;2p;21p;22p;$p'
    cp "$WORK/$d/train_log.csv" "$OUT/$d.csv"
  done
  ls "$WORK/pt-fsdp/checkpoints/"* 2>&1 | head -12
} 2>&1 | tee "$OUT/log.txt"
