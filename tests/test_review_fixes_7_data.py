"""Seventh review round of the task registry, data loaders and metrics: each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from elue.data import load_hub_split


def _parquet(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def test_hub_snli_test_drops_pairs_without_gold_label(tmp_path):
    """ELUE's SNLI test set is the 9,824 gold-labelled pairs of the hub's 10,000, numbered 0..9,823 (as
    the real test.tsv is). The hub loader kept all 10,000 on test, so a test file written from it had
    176 rows too many and indices shifted against the answer key."""
    root = tmp_path / "snli"
    cols = {
        "premise": ["p0", "p1", "p2", "p3"],
        "hypothesis": ["h0", "h1", "h2", "h3"],
        "label": [0, -1, 2, 1],
    }
    _parquet(root / "data" / "test-00000-of-00001.parquet", cols)
    test = load_hub_split("snli", "test", path=str(root), cache_dir=tmp_path / "c")
    assert test.column_names == ["premise", "hypothesis", "index"]  # still no labels on test
    assert test["premise"] == ["p0", "p2", "p3"] and test["index"] == [0, 1, 2]


@pytest.mark.parametrize("task, label", [("mrpc", -1), ("sts-b", -1.0)])
def test_hub_glue_test_keeps_every_row(tmp_path, task, label):
    """GLUE hides its test labels as -1 on every row: nothing may be dropped there."""
    config = "mrpc" if task == "mrpc" else "stsb"
    root = tmp_path / config
    cols = {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [label, label], "idx": [0, 1]}
    _parquet(root / config / "test-00000-of-00001.parquet", cols)
    (root / "README.md").write_text(
        f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: test\n    path: {config}/test-*\n---\n"
    )
    test = load_hub_split(task, "test", path=str(root), cache_dir=tmp_path / "c")
    assert len(test) == 2 and test["index"] == [0, 1]


@pytest.mark.parametrize(
    "task, y_true, y_pred, match",
    [
        # MRPC: sklearn's "Target is multiclass but average='binary'" said nothing of the bad class
        ("mrpc", [0, 1], [0, 2], "y_pred holds class 2, outside mrpc's labels 0..1"),
        # SST-2: a -1 ("no prediction") was silently scored as a wrong answer
        ("sst-2", [0, 1], [-1, 1], "y_pred holds class -1, outside sst-2's labels 0..1"),
        ("snli", [0, 3], [0, 1], "y_true holds class 3, outside snli's labels 0..2"),
    ],
)
def test_compute_metrics_rejects_classes_outside_the_task(task, y_true, y_pred, match):
    from elue.metrics import compute_metrics

    with pytest.raises(ValueError, match=match):
        compute_metrics(task, y_true, y_pred)


def test_hub_sst_parquet_export_reads_only_the_default_config(tmp_path, monkeypatch):
    """stanfordnlp/sst's Parquet export keeps each config in `<config>/<split>/0000.parquet` (default, ptb,
    dictionary). Asked by config name alone, `load_dataset` infers its data files over the whole branch
    and mixes `ptb/train` into `default/train`: loading failed with a cast error. The loader now reads
    the config's folder (`data_dir`). The real `load_dataset` runs here, on a local copy of that layout."""
    import datasets

    export = tmp_path / "sst_export"
    for split, n in (("train", 3), ("validation", 2), ("test", 2)):
        cols = {
            "sentence": [f"{split} {i}" for i in range(n)],
            "label": [0.9, 0.1, 0.6][:n],
            "tokens": ["x"] * n,
        }
        _parquet(export / "default" / split / "0000.parquet", cols)
        _parquet(export / "ptb" / split / "0000.parquet", {"ptb_tree": ["(2 x)"] * 5})
    _parquet(export / "dictionary" / "dictionary" / "0000.parquet", {"phrase": ["x"], "label": [0.5]})

    real_load = datasets.load_dataset
    asked = []

    def offline(path, name=None, **kw):  # noqa: ANN001, ANN003, ANN202
        asked.append((path, name, kw.get("revision"), kw.get("data_dir")))
        assert path == "stanfordnlp/sst" and kw.pop("revision") == "refs/convert/parquet"
        return real_load(str(export), name, **kw)  # the hub branch, served from the local copy

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cache = tmp_path / "c"
    train = load_hub_split("sst-2", "train", cache_dir=cache)
    assert train["sentence"] == ["train 0", "train 1", "train 2"] and train["label"] == [1, 0, 1]
    assert len(load_hub_split("sst-2", "dev", cache_dir=cache)) == 2
    assert load_hub_split("sst-2", "test", cache_dir=cache).column_names == ["sentence", "index"]
    assert asked[0] == ("stanfordnlp/sst", "default", "refs/convert/parquet", "default")
