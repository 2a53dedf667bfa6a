"""Evaluations show on the console too, one line each (they went only to eval_log.csv)."""

from __future__ import annotations

import csv
from pathlib import Path

from elue.elasticbert.pretraining.config import PretrainConfig
from elue.elasticbert.pretraining.logs import eval_line
from elue.elasticbert.pretraining.trainer import pretrain


def test_eval_line():
    rows = [
        {"exit": 1, "mlm_loss": 7.12345, "mlm_accuracy": 0.1, "sop_loss": 0.7, "sop_accuracy": 0.5},
        {"exit": 2, "mlm_loss": 6.5, "mlm_accuracy": 0.2, "sop_loss": 0.69, "sop_accuracy": 0.625},
    ]
    assert (
        eval_line(10, rows) == "eval at step 10 (exits 1–2): MLM loss 7.123 6.500 | SOP accuracy % 50.0 62.5"
    )
    assert eval_line(0, rows[:1]).startswith("eval at step 0 (exit 1): MLM loss 7.123 |")


def test_a_run_prints_each_evaluation_it_logs(tiny_settings, corpus_files, capsys):
    cfg = PretrainConfig(
        **tiny_settings(max_steps=2, eval_files=[str(corpus_files["eval"])], eval_examples=8, eval_steps=1)
    )
    pretrain(cfg)
    printed = [x for x in capsys.readouterr().out.splitlines() if x.startswith("eval at step")]
    with (Path(cfg.output_dir) / "eval_log.csv").open() as f:
        logged = list(csv.DictReader(f))
    assert [x.split(" (")[0] for x in printed] == ["eval at step 0", "eval at step 1", "eval at step 2"]
    last = [r for r in logged if r["step"] == "2"]
    assert printed[-1].split("MLM loss ")[1].split(" |")[0] == " ".join(
        f"{float(r['mlm_loss']):.3f}" for r in last
    )
