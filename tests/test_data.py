"""Data loaders: ELUE-layout folders (made-up fixtures and the real copies), hub layouts offline, GLUE."""

from __future__ import annotations

import dataclasses
import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from elue.data import (
    GLUE_TASKS,
    SPLITS,
    DataFileError,
    _resplit_rows,
    get_glue_task,
    load_elue_split,
    load_glue_split,
    load_hub_split,
    load_split,
    read_answer_key,
    read_test_indices,
    split_path,
)
from elue.metrics import METRICS
from elue.tasks import TASK_NAMES, get_task

FIXTURES = Path(__file__).parent / "fixtures" / "elue_data"


# --- ELUE layout, made-up rows -------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_fixture_splits_normalised(name):
    task = get_task(name)
    for split in SPLITS:
        if not (FIXTURES / name / f"{split}.tsv").exists():
            continue
        ds = load_elue_split(name, split, FIXTURES)
        expected = [*task.text_columns, *([] if split == "test" else ["label"]), "index"]
        assert ds.column_names == expected
        assert ds.features["index"].dtype == "int64"
        if split != "test":
            assert ds["index"] == list(range(len(ds)))
            if task.is_regression:
                assert ds.features["label"].dtype == "float64"
            else:
                assert ds.features["label"].names == list(task.labels)


def test_fixture_values_verbatim():
    ds = load_elue_split("sst-2", "train", FIXTURES)
    assert ds[0] == {"sentence": 'A "quoted" gem of a film .', "label": 1, "index": 0}
    test = load_elue_split("imdb", "test", FIXTURES)
    assert test["index"] == [10, 11, 12] and test[1]["sentence"] == '"Meh"'
    mrpc = load_elue_split("mrpc", "train", FIXTURES)
    assert mrpc[0]["label"] == 1 and mrpc[0]["#1 String"] == 'He said "yes" on Monday.'
    assert load_elue_split("sts-b", "train", FIXTURES)["label"] == [5.0, 0.25, 4.75]
    assert len(load_elue_split("SST2", "validation", FIXTURES)) == 2


def test_gzip_bom_crlf(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    text = "sentence\tlabel\r\nGreat .\t1\r\nBad .\t0\r\n\r\n"
    (folder / "train.tsv.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + text.encode()))
    shutil.copy(FIXTURES / "imdb" / "test.tsv", folder / "test.tsv")
    with open(folder / "test.tsv", "rb") as f:
        (folder / "test.tsv.gz").write_bytes(gzip.compress(f.read()))
    (folder / "test.tsv").unlink()
    assert split_path(tmp_path, "imdb", "train").name == "train.tsv.gz"
    ds = load_elue_split("imdb", "train", tmp_path)
    assert ds["sentence"] == ["Great .", "Bad ."] and ds["label"] == [1, 0]
    assert read_test_indices(tmp_path, "imdb").tolist() == [10, 11, 12]


def test_test_indices_of_a_bom_crlf_test_set(tmp_path):
    """read_test_indices reads bytes (to skip decoding IMDb's texts): a test.tsv saved with a BOM and CRLF
    line ends, blank lines at the end, must give the same indices as load_elue_split, whose texts (the last
    column here) keep no CR."""
    folder = tmp_path / "sst-2"
    folder.mkdir()
    (folder / "test.tsv").write_bytes(b"\xef\xbb\xbfindex\tsentence\r\n7\ta .\r\n3\tb .\r\n\r\n")
    assert read_test_indices(tmp_path, "sst-2").tolist() == [7, 3]
    test = load_elue_split("sst-2", "test", tmp_path)
    assert test["index"] == [7, 3] and test["sentence"] == ["a .", "b ."]  # no CR left on the last column


def _write(tmp_path, task, split, text):
    folder = tmp_path / task
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder / f"{split}.tsv"


@pytest.mark.parametrize(
    "task, split, text, line, match",
    [
        ("sst-2", "train", "text\tlabel\nx\t1\n", 1, "header"),
        ("sst-2", "train", "sentence\tlabel\nok\t1\nbad row\n", 3, "found 1"),
        ("sst-2", "train", "sentence\tlabel\nok\t1\nx\t2\n", 3, "outside sst-2's labels 0..1"),
        ("sst-2", "train", "sentence\tlabel\nok\t1\nx\tpos\n", 3, "not a class id"),
        ("sts-b", "dev", "sentence1\tsentence2\tlabel\na\tb\tnan\n", 2, "not finite"),
        ("sts-b", "dev", "sentence1\tsentence2\tlabel\na\tb\t\n", 2, "not a number"),
        ("sst-2", "test", "index\tsentence\n0\ta\n0\tb\n", 3, "duplicate index 0 (first on line 2)"),
        ("sst-2", "test", "index\tsentence\n0\ta\nx\tb\n", 3, "not an integer"),
        ("snli", "dev", "premise\thypothesis\tlabel\na\tb\t0\tc\n", 2, "found 4"),
    ],
)
def test_bad_files(tmp_path, task, split, text, line, match):
    path = _write(tmp_path, task, split, text)
    with pytest.raises(DataFileError, match=re.escape(match)) as e:
        load_elue_split(task, split, tmp_path)
    assert str(path) in str(e.value) and e.value.problems[0][0] == line
    assert f"line {line}" in str(e.value)


def test_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.tsv"):
        load_elue_split("snli", "train", FIXTURES)
    _write(tmp_path, "sst-2", "dev", "\n")
    with pytest.raises(DataFileError, match="empty"):
        load_elue_split("sst-2", "dev", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_elue_split("sst-2", "eval", FIXTURES)
    # header only: an empty split
    _write(tmp_path, "sst-2", "train", "sentence\tlabel\n")
    assert len(load_elue_split("sst-2", "train", tmp_path)) == 0


def test_answer_key_fixture(tmp_path):
    folder = tmp_path / "sts-b"
    folder.mkdir()
    (folder / "test_labels.tsv").write_text("index\tlabel\n0\t2.5\n1\t0.4\n")
    index, label = read_answer_key(tmp_path, "sts-b")
    assert index.tolist() == [0, 1] and label.dtype == np.float64 and label.tolist() == [2.5, 0.4]
    with pytest.raises(FileNotFoundError, match="no answer key for mrpc"):
        read_answer_key(tmp_path, "mrpc")
    # indices that int() takes or chokes on but no writer means: a superscript digit, 5,000 digits
    for bad, shown in (("\u00b2", "'\u00b2'"), ("9" * 5000, "'999")):
        (folder / "test_labels.tsv").write_text(f"index\tlabel\n0\t2.5\n{bad}\t0.4\n")
        with pytest.raises(DataFileError, match="line 3: index " + shown) as e:
            read_answer_key(tmp_path, "sts-b")
        assert len(str(e.value)) < 500


# --- the real copies (../shared/data) ------------------------------------------------------------

REAL_SIZES = {
    "sst-2": {"train": 6920, "dev": 872, "test": 1821},
    "imdb": {"train": 20000, "dev": 5000, "test": 25000},
    "snli": {"dev": 9842, "test": 9824},
    "mrpc": {"train": 3668, "dev": 408, "test": 1725},
    "sts-b": {"train": 5749, "dev": 1500, "test": 1379},
}


@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_real_split_sizes(data_dir, name):
    task = get_task(name)
    for split, size in REAL_SIZES[name].items():
        ds = load_elue_split(task, split, data_dir)
        assert len(ds) == size, (name, split)
    indices = read_test_indices(data_dir, name)
    assert len(indices) == REAL_SIZES[name]["test"] and len(np.unique(indices)) == len(indices)
    # the host's answer key covers the same indices
    key_index, key_label = read_answer_key(data_dir, name)
    assert sorted(key_index.tolist()) == sorted(indices.tolist())
    if not task.is_regression:
        assert set(np.unique(key_label).tolist()) <= set(range(task.num_labels))


def test_real_imdb_test_indices(data_dir):
    # (its speed is part of bench/bench_scoring.py's figures, not a timed test)
    indices = read_test_indices(data_dir, "imdb")
    assert len(indices) == REAL_SIZES["imdb"]["test"]


# --- hub layouts, offline ------------------------------------------------------------------------


def _parquet(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _readme(root: Path, config: str, splits: list[str]) -> None:
    files = "".join(f"  - split: {s}\n    path: {config}/{s}-*\n" for s in splits)
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n")


def test_hub_imdb_resplit(tmp_path):
    root = tmp_path / "imdb"
    texts = [f"review {i}" for i in range(10)]
    _parquet(
        root / "data" / "train-00000-of-00001.parquet", {"text": texts, "label": [i % 2 for i in range(10)]}
    )
    _parquet(root / "data" / "test-00000-of-00001.parquet", {"text": ["t0", "t1"], "label": [0, 1]})
    task = get_task("imdb")
    small = dataclasses.replace(
        task, hub=dataclasses.replace(task.hub, resplit={"train": ("train", 0, 8), "dev": ("train", 8, 10)})
    )
    cache = tmp_path / "cache"
    train = load_hub_split(small, "train", path=str(root), cache_dir=cache)
    dev = load_hub_split(small, "dev", path=str(root), cache_dir=cache)
    assert len(train) == 8 and len(dev) == 2
    assert sorted(list(train["sentence"]) + list(dev["sentence"])) == sorted(texts)
    assert list(train["sentence"]) != texts[:8]  # shuffled
    # seeded: the same rows every time
    assert load_hub_split(small, "dev", path=str(root), cache_dir=cache)["sentence"] == dev["sentence"]
    assert dev.column_names == ["sentence", "label", "index"]
    for row in dev:
        assert row["label"] == int(row["sentence"].split()[1]) % 2
    test = load_hub_split(small, "test", path=str(root), cache_dir=cache)
    assert test.column_names == ["sentence", "index"] and test["index"] == [0, 1]
    # the real task's 20,000/5,000 re-split does not fit 10 rows: a clear error
    with pytest.raises(ValueError, match="do not fit"):
        load_hub_split("imdb", "train", path=str(root), cache_dir=cache)


def test_hub_imdb_resplit_rows_are_pinned():
    """IMDb's 20,000/5,000 re-split of the hub's 25,000 training reviews must pick the same rows with every
    numpy (it used `default_rng(13).permutation`, whose stream numpy guarantees only for one build on one
    machine): the rows are ordered by SHA-256 of "13:<row>", pinned here."""
    seed = get_task("imdb").hub.resplit_seed
    train = _resplit_rows(25000, seed, 0, 20000)
    dev = _resplit_rows(25000, seed, 20000, 25000)
    assert train[:8].tolist() == [4109, 11174, 7283, 13251, 20910, 6012, 14319, 16415]
    assert dev[:8].tolist() == [12425, 7214, 22160, 17511, 20117, 22961, 16309, 4188]
    assert sorted(train.tolist() + dev.tolist()) == list(range(25000))
    assert train.dtype == np.int64


def test_hub_snli_drops_unlabelled(tmp_path):
    root = tmp_path / "snli"
    cols = {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [0, -1, 2]}
    _parquet(root / "data" / "validation-00000-of-00001.parquet", cols)
    ds = load_hub_split("snli", "dev", path=str(root), cache_dir=tmp_path / "c")
    assert ds["premise"] == ["p0", "p2"] and ds["label"] == [0, 2] and ds["index"] == [0, 1]


def test_hub_label_outside_the_task_is_named(tmp_path):
    """A hub label beyond the task's label space (data of another task, a 4-way NLI set) is refused with
    the task's labels named, not datasets' "Class label 3 greater than configured num_classes 3"."""
    root = tmp_path / "snli"
    cols = {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [0, 3]}
    _parquet(root / "data" / "validation-00000-of-00001.parquet", cols)
    with pytest.raises(ValueError, match=r"snli: hub label 3 is outside the task's labels 0\.\.2"):
        load_hub_split("snli", "dev", path=str(root), cache_dir=tmp_path / "c")


def test_hub_scitail_text_labels(tmp_path):
    """SciTail is read from the hub's SNLI-format config, whose train split has ELUE's 23,596 pairs (the
    "tsv_format" config the loader read has 23,097): sentence1/sentence2/gold_label, labels spelled
    'entailment'/'neutral'. A local copy of that layout could not be loaded before (wrong config)."""
    assert get_task("scitail").hub.name == "snli_format"
    root = tmp_path / "scitail"
    cols = {
        "sentence1_binary_parse": ["( p0 )", "( p1 )", "( p2 )"],
        "sentence1": ["p0", "p1", "p2"],
        "sentence2": ["h0", "h1", "h2"],
        "annotator_labels": [["neutral"], ["entailment"], ["neutral"]],
        "gold_label": ["neutral", "entailment", "Entails"],
    }
    _parquet(root / "snli_format" / "train-00000-of-00001.parquet", cols)
    _readme(root, "snli_format", ["train"])
    ds = load_hub_split("scitail", "train", path=str(root), cache_dir=tmp_path / "c")
    assert ds.column_names == ["premise", "hypothesis", "label", "index"]  # as load_elue_split gives
    assert ds["premise"] == ["p0", "p1", "p2"] and ds["hypothesis"] == ["h0", "h1", "h2"]
    assert ds["label"] == [1, 0, 0] and ds.features["label"].names == ["entails", "neutral"]
    bad = tmp_path / "bad"
    _parquet(
        bad / "snli_format" / "train-00000-of-00001.parquet",
        {**cols, "gold_label": ["maybe", "neutral", "-"]},
    )
    _readme(bad, "snli_format", ["train"])
    with pytest.raises(ValueError, match="'maybe' is not one of entailment, entails, neutral"):
        load_hub_split("scitail", "train", path=str(bad), cache_dir=tmp_path / "c")


def test_hub_sst_binarised(tmp_path):
    root = tmp_path / "sst"
    cols = {"sentence": ["a", "b", "c", "d"], "label": [0.1, 0.5, 0.51, 0.9], "tokens": ["a", "b", "c", "d"]}
    _parquet(root / "data" / "train-00000-of-00001.parquet", cols)
    ds = load_hub_split("sst-2", "train", path=str(root), cache_dir=tmp_path / "c")
    assert ds["label"] == [0, 0, 1, 1] and ds.column_names == ["sentence", "label", "index"]


def test_hub_sst_reads_the_parquet_export(monkeypatch):
    """stanfordnlp/sst ships a loading script, which datasets >= 4 refuses: read its Parquet export."""
    import datasets

    calls = []

    def fake_load(path, name=None, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append((path, name, kw.get("split"), kw.get("revision")))
        text = "text" if path.endswith("imdb") else "sentence"
        return datasets.Dataset.from_dict({text: ["good", "bad"], "label": [0.9, 0.2]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = load_hub_split("sst-2", "dev")
    assert calls == [("stanfordnlp/sst", "default", "validation", "refs/convert/parquet")]
    assert ds["label"] == [1, 0]
    load_hub_split("imdb", "test")  # a Parquet dataset: no revision asked for
    assert calls[-1] == ("stanfordnlp/imdb", None, "test", None)


def _glue_like(root: Path, config: str, cols: dict, splits=("train", "validation", "test")) -> None:
    for s in splits:
        _parquet(root / config / f"{s}-00000-of-00001.parquet", cols)
    _readme(root, config, list(splits))


def test_hub_mrpc_and_stsb(tmp_path):
    mrpc = tmp_path / "glue_mrpc"
    cols = {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1, 0], "idx": [7, 8]}
    _glue_like(mrpc, "mrpc", cols)
    cache = tmp_path / "c"
    ds = load_hub_split("mrpc", "dev", path=str(mrpc), cache_dir=cache)
    assert ds.column_names == ["#1 String", "#2 String", "label", "index"]
    assert ds["label"] == [1, 0] and ds["index"] == [0, 1]
    test = load_hub_split("mrpc", "test", path=str(mrpc), cache_dir=cache)
    assert test.column_names == ["#1 String", "#2 String", "index"] and test["index"] == [7, 8]
    stsb = tmp_path / "glue_stsb"
    _glue_like(
        stsb, "stsb", {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [4.5, 1.25], "idx": [0, 1]}
    )
    ds = load_hub_split("sts-b", "train", path=str(stsb), cache_dir=cache)
    assert ds["label"] == [4.5, 1.25] and ds.features["label"].dtype == "float64"
    # load_split picks the folder when given, the hub otherwise
    assert len(load_split("sts-b", "train", hub_path=str(stsb), cache_dir=cache)) == 2
    assert len(load_split("sts-b", "train", data_dir=FIXTURES)) == 3


def test_hub_stsb_float32_scores_read_as_in_the_elue_files(tmp_path):
    """GLUE stores STS-B's scores as float32: 3.8 reached the dataset as 3.799999952316284 where the
    ELUE-layout loader reads '3.8' as 3.8, so the two loaders gave different labels for the same pair."""
    root = tmp_path / "stsb"
    scores = [3.8, 1.333, 0.2, 5.0, 2.6]
    table = pa.table(
        {
            "sentence1": ["a"] * 5,
            "sentence2": ["b"] * 5,
            "label": pa.array(scores, type=pa.float32()),
            "idx": list(range(5)),
        }
    )
    (root / "stsb").mkdir(parents=True)
    pq.write_table(table, root / "stsb" / "train-00000-of-00001.parquet")
    _readme(root, "stsb", ["train"])
    ds = load_hub_split("sts-b", "train", path=str(root), cache_dir=tmp_path / "c")
    assert ds["label"] == scores and ds.features["label"].dtype == "float64"


def test_hub_missing_column(tmp_path):
    root = tmp_path / "snli"
    _parquet(root / "data" / "validation-00000-of-00001.parquet", {"premise": ["p"], "label": [0]})
    with pytest.raises(ValueError, match="lacks column"):
        load_hub_split("snli", "dev", path=str(root), cache_dir=tmp_path / "c")


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
    _readme(root, config, ["test"])
    test = load_hub_split(task, "test", path=str(root), cache_dir=tmp_path / "c")
    assert len(test) == 2 and test["index"] == [0, 1]


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


# --- GLUE ----------------------------------------------------------------------------------------


def test_glue_registry():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    for g in GLUE_TASKS.values():
        assert g.metric in METRICS
        assert {"train", "dev", "test"} <= set(g.splits)
    assert get_glue_task("MNLI").num_labels == 3 and get_glue_task("sts-b").is_regression
    with pytest.raises(KeyError, match="unknown GLUE task"):
        get_glue_task("squad")


def test_glue_loader(tmp_path):
    root = tmp_path / "glue"
    cols = {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0], "idx": [0, 1]}
    _glue_like(root, "mnli", cols, ("train", "validation_matched", "validation_mismatched", "test_matched"))
    cache = tmp_path / "c"
    dev = load_glue_split("mnli", "dev", path=str(root), cache_dir=cache)
    assert dev.column_names == ["premise", "hypothesis", "label", "index"] and dev["label"] == [2, 0]
    assert len(load_glue_split("mnli", "dev_mismatched", path=str(root), cache_dir=cache)) == 2
    test = load_glue_split("mnli", "test", path=str(root), cache_dir=cache)
    assert "label" not in test.column_names
    with pytest.raises(ValueError, match="no split"):
        load_glue_split("rte", "dev_mismatched", path=str(root))


def test_a_data_folder_given_one_level_too_deep_or_mistyped_is_named(tmp_path):
    """`elue finetune sst-2 --data ../shared/data/sst-2` said only "no train.tsv ... in
    ../shared/data/sst-2/sst-2 (the folder is missing or empty)"; it now says the folder given is one task's
    folder (or does not exist)."""
    _write(tmp_path, "sst-2", "train", "sentence\tlabel\nfine\t1\n")
    (tmp_path / "sst-2" / "test_labels.tsv").write_text("index\tlabel\n0\t1\n")
    with pytest.raises(
        FileNotFoundError, match="sst-2 looks like one task's folder .it holds train.tsv itself"
    ):
        split_path(tmp_path / "sst-2", "sst-2", "train")
    with pytest.raises(
        FileNotFoundError, match="looks like one task's folder .it holds test_labels.tsv itself"
    ):
        read_answer_key(tmp_path / "sst-2", "sst-2")
    with pytest.raises(FileNotFoundError, match="dta does not exist"):
        split_path(tmp_path / "dta", "sst-2", "train")
    with pytest.raises(FileNotFoundError) as e:  # the right folder, a task it lacks: no hint
        split_path(tmp_path, "mrpc", "train")
    assert str(e.value).endswith("(the folder is missing or empty)")
