"""Summarise a run of examples/elasticbert_sst2_minilm.sh: dev accuracy per exit, and per operating point
the test performance and MFLOPs as `elue evaluate` scored them (plus dev performance and mean exit layer).

    python examples/elasticbert_results_table.py RUN_DIR --out examples/results/NAME

writes NAME.json (all numbers) and NAME.md (the tables of docs/finetune.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="output path without extension")
    ap.add_argument("--task", default="sst-2")
    args = ap.parse_args()

    best = json.loads((args.run / "finetune" / "best" / "finetune.json").read_text())
    log = [json.loads(x) for x in (args.run / "finetune" / "log.jsonl").read_text().splitlines() if x.strip()]
    points = json.loads((args.run / "submission" / args.task / "points.json").read_text())["points"]
    scored = json.loads((args.run / "evaluate.json").read_text())["tasks"][args.task]
    by_file = {Path(p["file"]).stem: p for p in scored["points"]}

    rows = []
    for p in points:
        s = by_file[p["name"]]
        rows.append(
            {
                "point": p["name"],
                "kind": p["kind"],
                "value": p["value"],
                "test": s["performance"],
                "mflops": s["mflops"],
                "formula_mflops": p["formula_mflops"],
                "dev": (p.get("dev") or {}).get("performance"),
                "mean_exit_layer": p["mean_exit_layer"],
            }
        )
    full = next(r for r in rows if r["point"] == "static_k6")
    for r in rows:
        r["flops_vs_full"] = r["mflops"] / full["mflops"]
        r["test_vs_full"] = r["test"] - full["test"]

    summary = {
        "task": args.task,
        "best_step": best["step"],
        "selection": best["selection"],
        "dev_per_exit": {k: v["performance"] for k, v in best["dev"].items()},
        "evaluations": [{"step": r["step"], "score": r["score"]} for r in log],
        "params_m": scored["params_m"],
        "elue_score": scored["elue_score"],
        "points": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")

    md = [f"Dev accuracy per exit (best checkpoint, step {best['step']}):", ""]
    md.append("| exit | " + " | ".join(summary["dev_per_exit"]) + " |")
    md.append("|---|" + "---|" * len(summary["dev_per_exit"]))
    md.append("| dev acc. | " + " | ".join(f"{v:.2f}" for v in summary["dev_per_exit"].values()) + " |")
    md += ["", f"Test set ({args.task}), scored by `elue evaluate` (params {scored['params_m']:.2f}M):", ""]
    md.append("| point | test acc. | Δ vs k=6 | MFLOPs | FLOPs vs k=6 | mean exit layer | dev acc. |")
    md.append("|---|---|---|---|---|---|---|")
    for r in rows:
        dev = "—" if r["dev"] is None else f"{r['dev']:.2f}"
        md.append(
            f"| {r['point']} | {r['test']:.2f} | {r['test_vs_full']:+.2f} | {r['mflops']:.1f} "
            f"| {100 * r['flops_vs_full']:.0f}% "
            f"| {r['mean_exit_layer']:.2f} | {dev} |"
        )
    if scored.get("elue_score") is not None:
        md += ["", f"ELUE score against the ElasticBERT-BASE baseline: {scored['elue_score']:.2f}"]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
