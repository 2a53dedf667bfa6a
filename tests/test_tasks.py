"""The six ELUE tasks as spec §1 states them: labels, text columns and layouts, metrics, split sizes."""

from __future__ import annotations

import pytest

from elue.metrics import METRICS
from elue.tasks import TASK_NAMES, get_task

# spec §1, one row per task: labels by id (None: regression), metric, official train/dev/test sizes
SPEC = {
    "sst-2": (("negative", "positive"), "accuracy", (8_544, 1_101, 2_208)),
    "imdb": (("negative", "positive"), "accuracy", (20_000, 5_000, 25_000)),
    "snli": (("entailment", "neutral", "contradiction"), "accuracy", (549_367, 9_842, 9_824)),
    "scitail": (("entails", "neutral"), "accuracy", (23_596, 1_304, 2_126)),
    "mrpc": (("not_equivalent", "equivalent"), "acc_and_f1", (3_668, 408, 1_725)),
    "sts-b": (None, "pearson_and_spearman", (5_749, 1_500, 1_379)),
}


def test_the_six_tasks_in_the_spec_order():
    assert TASK_NAMES == ("sst-2", "imdb", "snli", "scitail", "mrpc", "sts-b")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_labels_metric_and_split_sizes(name):
    labels, metric, (train, dev, test) = SPEC[name]
    task = get_task(name)
    assert task.labels == labels
    assert task.metric == metric and metric in METRICS
    assert task.split_sizes == {"train": train, "dev": dev, "test": test}
    if labels is None:
        assert task.is_regression and task.num_labels == 1 and task.label_range == (0.0, 5.0)
    else:
        assert not task.is_regression and task.num_labels == len(labels)


def test_metric_parts():
    # MRPC: (accuracy + F1 of class 1) / 2; STS-B: (Pearson + Spearman) / 2; both parts reported too
    assert METRICS["acc_and_f1"]([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(
        {"performance": (75.0 + 200 / 3) / 2, "accuracy": 75.0, "f1": 200 / 3}
    )
    assert set(METRICS["pearson_and_spearman"]([0.0, 1.0, 2.0], [0.0, 1.0, 5.0])) == {
        "performance",
        "pearson",
        "spearman",
    }


@pytest.mark.parametrize(
    ("name", "train_dev", "test"),
    [
        # single sentence: `sentence, label`, test `index, sentence`
        ("sst-2", ("sentence", "label"), ("index", "sentence")),
        ("imdb", ("sentence", "label"), ("index", "sentence")),
        # pairs: `<text a>, <text b>, label` (label last), test `index, <a>, <b>`
        ("snli", ("premise", "hypothesis", "label"), ("index", "premise", "hypothesis")),
        ("scitail", ("premise", "hypothesis", "label"), ("index", "premise", "hypothesis")),
        ("sts-b", ("sentence1", "sentence2", "label"), ("index", "sentence1", "sentence2")),
        # MRPC keeps the GLUE layout
        (
            "mrpc",
            ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
            ("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ),
    ],
)
def test_file_layouts(name, train_dev, test):
    task = get_task(name)
    assert task.train_dev_columns == train_dev and task.test_columns == test
    assert task.label_column in train_dev
    assert all(c in train_dev for c in task.text_columns)
    assert task.is_pair == (len(task.text_columns) == 2) == (name not in ("sst-2", "imdb"))


def test_titles_are_the_datasets_names_as_written():
    from elue.tasks import TASKS

    titles = [t.title for t in TASKS.values()]
    assert titles == ["SST-2", "IMDb", "SNLI", "SciTail", "MRPC", "STS-B"]  # spec §1's spelling
