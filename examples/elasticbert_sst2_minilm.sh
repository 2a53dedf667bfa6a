#!/usr/bin/env bash
# The real ElasticBERT run of docs/finetune.md, on the CPU:
#   all-MiniLM-L6-v2 (6 layers, hidden 384) -> ElasticBERT with an exit on each of its 6 layers,
#   fine-tuned jointly (gradient equilibrium) on the SST-2 train set of the ELUE-layout data,
#   then static-k, entropy and patience operating points written as an ELUE submission and scored
#   on the test set with `elue evaluate` (the answer key is read by `elue evaluate` alone).
#
# Usage: examples/elasticbert_sst2_minilm.sh   (from the repository root; 651 training steps took ~9 min on 2 cores)
# Environment: ELUE_DATA_DIR (default ../shared/data), RUN (default runs/elasticbert_sst2_minilm),
#   EPOCHS (3), LR (2e-4), MAXLEN (64), THREADS (2), CONVERTED (an existing converted checkpoint: skip step 1),
#   STOP_AFTER (end training at this step, keeping the best checkpoint so far; docs/finetune.md's trial uses 108; at
#   least 108, the first evaluation, or there is no best checkpoint to predict with),
#   RESULTS (default examples/results/elasticbert_sst2_minilm: the .json/.md of the table; set it elsewhere for
#   a trial run, so that the committed results stay).
set -euo pipefail

DATA=${ELUE_DATA_DIR:-../shared/data}
RUN=${RUN:-runs/elasticbert_sst2_minilm}
EPOCHS=${EPOCHS:-3}
LR=${LR:-2e-4}
MAXLEN=${MAXLEN:-64}
RESULTS=${RESULTS:-examples/results/elasticbert_sst2_minilm}
export OMP_NUM_THREADS=${THREADS:-2} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$RUN" "$(dirname "$RESULTS")"

# 1. MiniLM-L6 -> ElasticBERT (6 layers, a pooler and an exit on every layer)
CONVERTED=${CONVERTED:-$RUN/minilm-elasticbert}
if [ ! -f "$CONVERTED/config.json" ]; then
  elue convert --output "$CONVERTED"
fi

# 2. joint fine-tuning of the 6 exits (gradient equilibrium), AdamW + 10% warm-up, dev every half epoch
elue finetune sst-2 --model "$CONVERTED" --output "$RUN/finetune" --data "$DATA" \
  --max-length "$MAXLEN" --batch-size 32 --lr "$LR" --epochs "$EPOCHS" --eval-every 108 \
  --early-stopping 2 --cpu --no-progress --resume ${STOP_AFTER:+--stop-after "$STOP_AFTER"}

# 3. operating points on the test set (and on dev, for the table): static k = exit k with layers 1..k,
#    entropy thresholds (nats; ln 2 = 0.69 is the maximum for 2 classes) and PABEE patience
elue predict sst-2 --model "$RUN/finetune/best" --output "$RUN/submission" --overwrite --data "$DATA" \
  --static 1-6 --entropy 0.05,0.1,0.2,0.3,0.4,0.5,0.6 --patience 1,2,3,4 --dev --cpu --no-progress \
  | tee "$RUN/predict.txt"

# 4. score the submission as the leaderboard would (model.py priced by elue.costs)
elue validate "$RUN/submission" --data "$DATA"
elue evaluate "$RUN/submission" --answers "$DATA" --json "$RUN/evaluate.json"

# 5. the table of docs/finetune.md
python examples/elasticbert_results_table.py "$RUN" --out "$RESULTS"
