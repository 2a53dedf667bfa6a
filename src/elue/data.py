"""Task splits: ELUE-layout folders and the Hugging Face hub (spec §1), plus GLUE for fine-tuning.

Every loader returns a `datasets.Dataset` with normalised columns:

- the task's `text_columns` (strings);
- `label` on train/dev only: a `ClassLabel` (int ids, names from the task) for classification, a
  float64 for STS-B (MRPC's `Quality` becomes `label`);
- `index` (int64): from the file / the hub's `idx` on test, the row number on train/dev.

ELUE layout: `<data_dir>/<task>/<split>.tsv` or `<split>.tsv.gz` (tab-separated, one header row, no
quoting: texts contain quotes and are taken verbatim; UTF-8 with an optional BOM; LF or CRLF).
Files are read whole with `str.split` (the datasets csv builder is not used: it caches to disk),
then `Dataset.from_dict`. Anything malformed raises `DataFileError` naming the file and the line.

The answer key `<answers_dir>/<task>/test_labels.tsv` is for the leaderboard host only
(`read_answer_key`); nothing else here reads it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elue.tasks import Task, get_task

SPLITS: tuple[str, ...] = ("train", "dev", "test")
_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev"}
MAX_PROBLEMS = 10

# SST on the hub ("stanfordnlp/sst") carries a sentiment score in [0, 1]; ELUE's binary labels are
# got here as positive iff score > SST_POSITIVE_ABOVE (ours: the original binarisation is unpublished).
SST_POSITIVE_ABOVE = 0.5


class DataFileError(ValueError):
    """A malformed data file. `problems` holds (line or None, message) pairs."""

    def __init__(self, path: Path | str, problems: list[tuple[int | None, str]], more: int = 0):
        self.path = Path(path)
        self.problems = list(problems)
        self.more = more
        parts = [f"line {ln}: {msg}" if ln is not None else msg for ln, msg in self.problems]
        if more:
            parts.append(f"... and {more} more")
        head = (
            f"{self.path}: " if len(parts) == 1 else f"{self.path}: {len(self.problems) + more} problems:\n  "
        )
        super().__init__(head + "\n  ".join(parts))


def _task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


def normalise_split(split: str) -> str:
    """'train' | 'dev' | 'test' ('validation' accepted for 'dev'). ValueError otherwise."""
    key = split.strip().lower()
    key = _SPLIT_ALIASES.get(key, key)
    if key not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return key


# --- reading TSV files ---------------------------------------------------------------------------


def split_path(data_dir: Path | str, task: str | Task, split: str) -> Path:
    """The file holding `split` of `task` under `data_dir` (`.tsv`, else `.tsv.gz`)."""
    t = _task(task)
    folder = Path(data_dir) / t.name
    split = normalise_split(split)
    for name in (f"{split}.tsv", f"{split}.tsv.gz"):
        if (folder / name).is_file():
            return folder / name
    have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    where = f"it holds: {', '.join(have)}" if have else "the folder is missing or empty"
    hint = task_folder_hint(data_dir, f"{split}.tsv", f"{split}.tsv.gz")
    hint = f"; {hint}" if hint else ""
    raise FileNotFoundError(f"no {split}.tsv or {split}.tsv.gz for {t.name} in {folder} ({where}){hint}")


def task_folder_hint(data_dir: Path | str, *names: str) -> str:
    """'' or a clause for a data folder given one level too deep or not there at all: `--data
    ../shared/data/sst-2` (one task's folder, holding `test.tsv` itself) is read as `sst-2/sst-2/test.tsv`,
    and a mistyped path as a missing file of every task."""
    root = Path(data_dir)
    if not root.is_dir():
        return f"{root} does not exist" if not root.exists() else f"{root} is not a folder"
    own = [name for name in names if (root / name).is_file()]
    if own:
        return (
            f"{root} looks like one task's folder (it holds {own[0]} itself): give the folder above it, "
            "which holds one folder per task"
        )
    return ""


def _read_lines(path: Path) -> list[str]:
    """The file's lines (BOM, CR and trailing blank lines removed)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataFileError(path, [(None, f"cannot read: {e}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFileError(path, [(raw[: e.start].count(b"\n") + 1, "not valid UTF-8")]) from None
    del raw
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFileError(path, [(None, "the file is empty")])
    return lines


def _check_header(path: Path, line: str, expected: Sequence[str]) -> None:
    got = [h.strip() for h in line.split("\t")]
    if got != list(expected):
        raise DataFileError(path, [(1, f"header is {got}, expected {list(expected)} (tab-separated)")])


def _split_rows(path: Path, lines: list[str], width: int) -> list[list[str]]:
    rows: list[list[str]] = []
    problems: list[tuple[int | None, str]] = []
    more = 0
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != width:
            if len(problems) < MAX_PROBLEMS:
                problems.append((lineno, f"expected {width} tab-separated fields, found {len(fields)}"))
            else:
                more += 1
            continue
        rows.append(fields)
    if problems:
        raise DataFileError(path, problems, more)
    return rows


def _parse_labels(path: Path, values: list[str], task: Task, first_line: int = 2) -> list:
    """Label strings -> ints (classification, checked against the label space) or floats."""
    out: list = []
    problems: list[tuple[int | None, str]] = []
    more = 0
    n = task.num_labels
    for lineno, s in enumerate(values, start=first_line):
        s = s.strip()
        err = None
        if task.is_regression:
            try:
                v = float(s)
            except ValueError:
                v, err = None, f"label {s!r} is not a number"
            else:
                if not math.isfinite(v):
                    err = f"label {s!r} is not finite"
        else:
            try:
                v = int(s)
            except ValueError:
                v, err = None, f"label {s!r} is not a class id 0..{n - 1}"
            else:
                if not 0 <= v < n:
                    err = f"label {v} is outside {task.name}'s labels 0..{n - 1}"
        if err:
            if len(problems) < MAX_PROBLEMS:
                problems.append((lineno, err))
            else:
                more += 1
        out.append(v)
    if problems:
        raise DataFileError(path, problems, more)
    return out


def _parse_indices(path: Path, values: list[str], first_line: int = 2) -> np.ndarray:
    plain = re.compile(r"\s*-?[0-9]{1,18}\s*", re.ASCII)  # ASCII digits, within int64
    bad = next((i for i, v in enumerate(values) if not plain.fullmatch(v)), None)
    if bad is not None:
        shown = values[bad] if len(values[bad]) <= 40 else values[bad][:37] + "..."
        raise DataFileError(
            path, [(bad + first_line, f"index {shown!r} is not an integer of at most 18 digits")]
        )
    arr = np.array([int(v) for v in values], dtype=np.int64)
    if len(np.unique(arr)) != len(arr):
        seen: dict[int, int] = {}
        for i, v in enumerate(arr.tolist()):
            if v in seen:
                raise DataFileError(
                    path, [(i + first_line, f"duplicate index {v} (first on line {seen[v] + first_line})")]
                )
            seen[v] = i
    return arr


def features_for(task: str | Task, split: str):
    """The `datasets.Features` of a normalised split."""
    from datasets import ClassLabel, Features, Value

    t = _task(task)
    feats = {c: Value("string") for c in t.text_columns}
    if normalise_split(split) != "test":
        feats["label"] = Value("float64") if t.is_regression else ClassLabel(names=list(t.labels))
    feats["index"] = Value("int64")
    return Features(feats)


def _to_dataset(task: Task, split: str, columns: dict):
    from datasets import Dataset

    return Dataset.from_dict(columns, features=features_for(task, split))


def load_elue_split(task: str | Task, split: str, data_dir: Path | str):
    """`split` ('train' | 'dev' | 'test') of `task` from an ELUE-layout folder, as a normalised Dataset."""
    t = _task(task)
    split = normalise_split(split)
    path = split_path(data_dir, t, split)
    lines = _read_lines(path)
    header = t.test_columns if split == "test" else t.train_dev_columns
    _check_header(path, lines[0], header)
    rows = _split_rows(path, lines, len(header))
    del lines
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    by_name = dict(zip(header, cols, strict=True))
    out: dict[str, list] = {c: list(by_name[c]) for c in t.text_columns}
    if split == "test":
        out["index"] = _parse_indices(path, list(by_name["index"]))
    else:
        out["label"] = _parse_labels(path, list(by_name[t.label_column]), t)
        out["index"] = np.arange(len(rows), dtype=np.int64)
    return _to_dataset(t, split, out)


def read_test_indices(data_dir: Path | str, task: str | Task) -> np.ndarray:
    """The `index` column of the task's test.tsv(.gz) (int64, file order). Texts are not parsed."""
    t = _task(task)
    path = split_path(data_dir, t, "test")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataFileError(path, [(None, f"cannot read: {e}")]) from None
    # only the first field of each line is needed: work on bytes, skip decoding the texts
    lines = raw.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    del raw
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFileError(path, [(None, "the file is empty")])
    first = lines[0].split(b"\t", 1)[0].strip().decode("utf-8", "replace")
    if first != "index":
        raise DataFileError(path, [(1, f"header starts with {first!r}, expected 'index'")])
    values = [ln.split(b"\t", 1)[0].decode("ascii", "replace") for ln in lines[1:]]
    return _parse_indices(path, values)


def read_answer_key(answers_dir: Path | str, task: str | Task) -> tuple[np.ndarray, np.ndarray]:
    """(index int64, label int64|float64) from `<answers_dir>/<task>/test_labels.tsv` (host only)."""
    t = _task(task)
    path = Path(answers_dir) / t.name / "test_labels.tsv"
    if not path.is_file():
        hint = task_folder_hint(answers_dir, "test_labels.tsv")
        hint = f"; {hint}" if hint else ""
        raise FileNotFoundError(f"no answer key for {t.name}: {path} does not exist{hint}")
    lines = _read_lines(path)
    _check_header(path, lines[0], ("index", "label"))
    rows = _split_rows(path, lines, 2)
    index = _parse_indices(path, [r[0] for r in rows])
    labels = _parse_labels(path, [r[1] for r in rows], t)
    return index, np.asarray(labels, dtype=np.float64 if t.is_regression else np.int64)


# --- the Hugging Face hub ------------------------------------------------------------------------


def _load_hub(
    path: str,
    name: str | None,
    split: str,
    cache_dir,
    revision: str | None = None,
    data_dir: str | None = None,
):
    import datasets

    extra = {"revision": revision} if revision else {}
    if data_dir:
        extra["data_dir"] = data_dir
    return datasets.load_dataset(
        path, name, split=split, cache_dir=None if cache_dir is None else str(cache_dir), **extra
    )


def _column(ds, name: str) -> list:
    """A Dataset column as a plain list (datasets >= 4 returns a lazy Column from ds[name])."""
    col = ds[name]
    return col if isinstance(col, list) else col[:]


def _resplit_rows(n: int, seed: int, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a seeded permutation of range(n): the rows sorted by SHA-256 of "<seed>:<row>".

    The same rows on every machine and with every library version. (It was numpy's `default_rng(seed)
    .permutation`, whose stream numpy guarantees only for one build on one machine, NEP 19: a numpy
    update could have moved reviews between IMDb's train and dev without a word.)"""
    if not 0 <= start <= stop <= n:
        raise ValueError(f"re-split rows {start}:{stop} do not fit a hub split of {n} rows")
    keys = [hashlib.sha256(f"{seed}:{row}".encode()).digest() for row in range(n)]
    return np.array(sorted(range(n), key=keys.__getitem__)[start:stop], dtype=np.int64)


def _hub_labels(task: Task, values: list, dtype: str | None = None) -> tuple[list, np.ndarray]:
    """Hub labels -> ELUE labels, and a keep-mask (SNLI's -1 'no gold label' rows are dropped).

    `dtype`: the hub column's Arrow type. GLUE keeps STS-B's scores as float32, which reach Python widened
    (3.8 as 3.799999952316284); each is read back as the shortest decimal that float32 holds, so a score is
    the same float64 as the ELUE-layout file's '3.8'."""
    if task.is_regression:
        if dtype in ("float16", "float32"):
            arr = np.asarray(values, dtype=dtype).astype(str).astype(np.float64)
        else:
            arr = np.asarray(values, dtype=np.float64)
        return arr.tolist(), np.isfinite(arr)
    if values and isinstance(values[0], str):
        # text labels (SciTail: 'entailment'/'neutral') -> ids by the hub's spelling or the task's label names
        names = {n.lower(): i for i, n in enumerate(task.labels)}
        names.update({k.lower(): v for k, v in task.hub.label_ids.items()})
        ids = []
        for v in values:
            key = v.strip().lower()
            if key not in names:
                raise ValueError(f"{task.name}: hub label {v!r} is not one of {', '.join(sorted(names))}")
            ids.append(names[key])
        arr = np.asarray(ids, dtype=np.int64)
    else:
        arr = np.asarray(values)
        if arr.dtype.kind == "f" and task.name == "sst-2":
            arr = (arr > SST_POSITIVE_ABOVE).astype(np.int64)
        else:
            arr = arr.astype(np.int64)
    keep = arr >= 0
    if np.any(arr[keep] >= task.num_labels):
        bad = int(arr[keep][arr[keep] >= task.num_labels][0])
        raise ValueError(
            f"{task.name}: hub label {bad} is outside the task's labels 0..{task.num_labels - 1}"
        )
    return arr.tolist(), keep


def load_hub_split(task: str | Task, split: str, *, path: str | None = None, cache_dir=None):
    """`split` of `task` from the Hugging Face hub (`task.hub`), as a normalised Dataset.

    `path` replaces the hub id (a local folder in the hub layout works, e.g. for offline tests);
    `task.hub.name` is still passed as the config. Hub splits map through `hub.splits`; `hub.resplit`
    carves ELUE splits out of one hub split by a seeded permutation (`_resplit_rows`; IMDb: 25k train -> 20,000
    train + 5,000 dev). SNLI's unlabelled (-1) pairs are dropped from every split; text labels
    (SciTail) become ids by `hub.label_ids` or `task.labels`; SST's float sentiment becomes 1 iff > 0.5
    (ours). On test, labels are never returned (GLUE's test labels are -1 anyway).
    """
    t = _task(task)
    split = normalise_split(split)
    hub = t.hub
    hub_path = path or hub.path
    # a replacement path is read as it is: no revision, no folder inside it
    revision, data_dir = (None, None) if path else (hub.revision, hub.data_dir)
    if split in hub.resplit:
        hub_split, start, stop = hub.resplit[split]
        ds = _load_hub(hub_path, hub.name, hub_split, cache_dir, revision, data_dir)
        ds = ds.select(_resplit_rows(len(ds), hub.resplit_seed, start, stop))
    elif split in hub.splits:
        ds = _load_hub(hub_path, hub.name, hub.splits[split], cache_dir, revision, data_dir)
    else:
        raise ValueError(f"{t.name}: no hub split is mapped to ELUE's {split!r} (see tasks.py HubSource)")

    to_hub = {elue: src for src, elue in hub.columns.items()}
    missing = [
        c for c in (*t.text_columns, t.label_column) if c not in to_hub or to_hub[c] not in ds.column_names
    ]
    if split == "test":
        missing = [c for c in missing if c != t.label_column]
    if missing:
        raise ValueError(
            f"{t.name}: hub data {hub_path!r} lacks column(s) for {', '.join(missing)}; "
            f"it has {', '.join(ds.column_names)}"
        )
    out: dict[str, list] = {c: _column(ds, to_hub[c]) for c in t.text_columns}
    n = len(ds)
    if "index" in to_hub and to_hub["index"] in ds.column_names and split == "test":
        index = np.asarray(_column(ds, to_hub["index"]), dtype=np.int64)
    else:
        index = np.arange(n, dtype=np.int64)
    keep = None
    if split != "test":
        label_feature = ds.features[to_hub[t.label_column]]
        labels, keep = _hub_labels(
            t, _column(ds, to_hub[t.label_column]), getattr(label_feature, "dtype", None)
        )
        out["label"] = labels
    elif hub.drop_unlabelled_test and t.label_column in to_hub and to_hub[t.label_column] in ds.column_names:
        # the labels only pick the rows ELUE's test set has (SNLI's gold-labelled pairs); never returned
        _, keep = _hub_labels(t, _column(ds, to_hub[t.label_column]))
    if keep is not None and not keep.all():
        rows = np.flatnonzero(keep)
        out = {k: [v[i] for i in rows.tolist()] for k, v in out.items()}
        index = np.arange(len(rows), dtype=np.int64)
    out["index"] = index
    return _to_dataset(t, split, out)


def load_split(
    task: str | Task,
    split: str,
    *,
    data_dir: Path | str | None = None,
    hub_path: str | None = None,
    cache_dir=None,
):
    """An ELUE split from `data_dir` when given, else from the hub (`hub_path` overrides the id)."""
    if data_dir is not None:
        return load_elue_split(task, split, data_dir)
    return load_hub_split(task, split, path=hub_path, cache_dir=cache_dir)


# --- GLUE (for fine-tuning ElasticBERT) ----------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    name: str  # config name in nyu-mll/glue
    text_columns: tuple[str, ...]
    num_labels: int  # 1 = regression
    metric: str  # key into elue.metrics.METRICS
    splits: dict[str, str]  # our split name -> hub split

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


GLUE_HUB_PATH = "nyu-mll/glue"
_STD = {"train": "train", "dev": "validation", "test": "test"}
GLUE_TASKS: dict[str, GlueTask] = {
    g.name: g
    for g in (
        GlueTask("cola", ("sentence",), 2, "matthews", _STD),
        GlueTask("sst2", ("sentence",), 2, "accuracy", _STD),
        GlueTask("mrpc", ("sentence1", "sentence2"), 2, "acc_and_f1", _STD),
        GlueTask("qqp", ("question1", "question2"), 2, "acc_and_f1", _STD),
        GlueTask("stsb", ("sentence1", "sentence2"), 1, "pearson_and_spearman", _STD),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            3,
            "accuracy",
            {
                "train": "train",
                "dev": "validation_matched",
                "dev_mismatched": "validation_mismatched",
                "test": "test_matched",
                "test_mismatched": "test_mismatched",
            },
        ),
        GlueTask("qnli", ("question", "sentence"), 2, "accuracy", _STD),
        GlueTask("rte", ("sentence1", "sentence2"), 2, "accuracy", _STD),
        GlueTask("wnli", ("sentence1", "sentence2"), 2, "accuracy", _STD),
    )
}
_GLUE_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli"}


def get_glue_task(name: str) -> GlueTask:
    key = name.strip().lower()
    key = _GLUE_ALIASES.get(key, key)
    try:
        return GLUE_TASKS[key]
    except KeyError:
        raise KeyError(f"unknown GLUE task {name!r}; available: {', '.join(GLUE_TASKS)}") from None


def load_glue_split(name: str, split: str, path: str | None = None, cache_dir=None):
    """A GLUE task split as a Dataset with the task's text columns, `label` (not on test: GLUE's test
    labels are hidden) and `index` (GLUE's `idx`). `split`: train | dev | test (MNLI also
    dev_mismatched | test_mismatched; 'validation' means dev). `path` overrides 'nyu-mll/glue'."""
    from datasets import ClassLabel, Dataset, Features, Value

    g = get_glue_task(name)
    key = split.strip().lower()
    key = _SPLIT_ALIASES.get(key, key)
    if key not in g.splits:
        raise ValueError(f"GLUE {g.name} has no split {split!r}; expected one of {', '.join(g.splits)}")
    ds = _load_hub(path or GLUE_HUB_PATH, g.name, g.splits[key], cache_dir)
    missing = [c for c in (*g.text_columns, "label") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"GLUE {g.name}: data lacks {', '.join(missing)}; it has {', '.join(ds.column_names)}"
        )
    out: dict[str, object] = {c: _column(ds, c) for c in g.text_columns}
    feats = {c: Value("string") for c in g.text_columns}
    if not key.startswith("test"):
        labels = _column(ds, "label")
        if g.is_regression:
            out["label"] = np.asarray(labels, dtype=np.float64)
            feats["label"] = Value("float64")
        else:
            names = ds.features["label"].names if isinstance(ds.features["label"], ClassLabel) else None
            out["label"] = np.asarray(labels, dtype=np.int64)
            feats["label"] = ClassLabel(names=names) if names else ClassLabel(num_classes=g.num_labels)
    out["index"] = (
        np.asarray(_column(ds, "idx"), dtype=np.int64)
        if "idx" in ds.column_names
        else np.arange(len(ds), dtype=np.int64)
    )
    feats["index"] = Value("int64")
    return Dataset.from_dict(out, features=Features(feats))
