"""The six ELUE tasks as versioned data (spec §1).

Task facts live here and only here: label spaces, text columns, metrics, split sizes and where the
Hugging Face hub keeps each dataset. Everybody else asks `get_task(name)`.
Bump a task's `version` whenever anything that changes its scores changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HubSource:
    """Where a user with network gets the data, and how it maps onto ELUE's splits."""

    path: str  # hub dataset id, e.g. "stanfordnlp/imdb"
    name: str | None = None  # config name, e.g. "mrpc"
    # ELUE split -> hub split. A value "train[:20000]"-style is not used: re-splits are explicit below.
    splits: dict[str, str] = field(default_factory=dict)
    # hub column -> ELUE column
    columns: dict[str, str] = field(default_factory=dict)
    # ELUE splits carved out of one hub split by a seeded shuffle: {"train": ("train", 0, 20000), ...}
    resplit: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    resplit_seed: int = 13
    # Git revision on the hub. Datasets that still ship a loading script (which `datasets` >= 4 no longer
    # runs) are read from the hub's automatic Parquet export, "refs/convert/parquet".
    revision: str | None = None
    # Folder of the repo (at `revision`) that holds the config's files. The Parquet export keeps each config
    # in `<config>/<split>/`, and without a folder `load_dataset` infers data files over the whole branch,
    # mixing configs (SST: `ptb/train` into `default/train`, a cast error).
    data_dir: str | None = None
    # The hub's test split carries gold labels and marks pairs without one -1, and ELUE's test set leaves
    # those pairs out (SNLI: 10,000 -> 9,824, numbered 0..9,823 as in the ELUE test.tsv). False where
    # the hub hides its test labels as -1 on every row (GLUE): dropping them would empty the split.
    drop_unlabelled_test: bool = False
    # text labels of the hub -> ELUE label ids, where the hub spells them otherwise than the task's label
    # names (SciTail's SNLI format: 'entailment' for ELUE's 'entails'); the task's names are accepted too
    label_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    version: int
    description: str
    kind: str  # "classification" | "regression"
    labels: tuple[str, ...] | None  # label names by id; None for regression
    text_columns: tuple[str, ...]  # text columns of train/dev (and test, after `index`)
    label_column: str  # label column of train/dev
    train_dev_columns: tuple[str, ...]  # full header of train.tsv/dev.tsv, in order
    metric: str  # key into elue.metrics.METRICS
    split_sizes: dict[str, int]  # official ELUE sizes
    hub: HubSource
    label_range: tuple[float, float] | None = None  # regression targets
    test_extra_columns: tuple[str, ...] = ()  # test.tsv columns between `index` and the texts

    @property
    def num_labels(self) -> int:
        """Outputs of a model head: classes, or 1 for regression."""
        return len(self.labels) if self.labels is not None else 1

    @property
    def title(self) -> str:
        """The dataset's name as the spec and its papers write it (SST-2, IMDb, SciTail); `name` is the id."""
        return _TITLES.get(self.name, self.name.upper())

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def test_columns(self) -> tuple[str, ...]:
        """Header of test.tsv."""
        return ("index", *self.test_extra_columns, *self.text_columns)


_TITLES = {
    "sst-2": "SST-2",
    "imdb": "IMDb",
    "snli": "SNLI",
    "scitail": "SciTail",
    "mrpc": "MRPC",
    "sts-b": "STS-B",
}

_TASKS = [
    Task(
        name="sst-2",
        version=1,
        description="Stanford Sentiment Treebank, sentence level, binary sentiment",
        kind="classification",
        labels=("negative", "positive"),
        text_columns=("sentence",),
        label_column="label",
        train_dev_columns=("sentence", "label"),
        metric="accuracy",
        split_sizes={"train": 8544, "dev": 1101, "test": 2208},
        # sentence-level SST: label is a sentiment score in [0, 1]; binarised at 0.5 (ours)
        hub=HubSource(
            path="stanfordnlp/sst",  # a script dataset: read through its Parquet export
            name="default",
            revision="refs/convert/parquet",
            data_dir="default",
            splits={"train": "train", "dev": "validation", "test": "test"},
            columns={"sentence": "sentence", "label": "label"},
        ),
    ),
    Task(
        name="imdb",
        version=1,
        description="IMDb movie reviews, long documents, binary sentiment",
        kind="classification",
        labels=("negative", "positive"),
        text_columns=("sentence",),
        label_column="label",
        train_dev_columns=("sentence", "label"),
        metric="accuracy",
        split_sizes={"train": 20000, "dev": 5000, "test": 25000},
        hub=HubSource(
            path="stanfordnlp/imdb",
            splits={"test": "test"},
            columns={"text": "sentence", "label": "label"},
            resplit={"train": ("train", 0, 20000), "dev": ("train", 20000, 25000)},
        ),
    ),
    Task(
        name="snli",
        version=1,
        description="Stanford Natural Language Inference",
        kind="classification",
        labels=("entailment", "neutral", "contradiction"),
        text_columns=("premise", "hypothesis"),
        label_column="label",
        train_dev_columns=("premise", "hypothesis", "label"),
        metric="accuracy",
        split_sizes={"train": 549367, "dev": 9842, "test": 9824},
        # the hub marks pairs without a gold label with -1; ELUE drops them, on test too
        hub=HubSource(
            path="stanfordnlp/snli",
            splits={"train": "train", "dev": "validation", "test": "test"},
            columns={"premise": "premise", "hypothesis": "hypothesis", "label": "label"},
            drop_unlabelled_test=True,
        ),
    ),
    Task(
        name="scitail",
        version=1,
        description="SciTail science entailment",
        kind="classification",
        labels=("entails", "neutral"),  # ids are ours (spec §1)
        text_columns=("premise", "hypothesis"),
        label_column="label",
        train_dev_columns=("premise", "hypothesis", "label"),
        metric="accuracy",
        split_sizes={"train": 23596, "dev": 1304, "test": 2126},
        # the SNLI-format config holds ELUE's 23,596 training pairs; "tsv_format" has 23,097 of them
        hub=HubSource(
            path="allenai/scitail",
            name="snli_format",
            splits={"train": "train", "dev": "validation", "test": "test"},
            columns={"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"},
            label_ids={"entailment": 0, "neutral": 1},
        ),
    ),
    Task(
        name="mrpc",
        version=1,
        description="Microsoft Research Paraphrase Corpus",
        kind="classification",
        labels=("not_equivalent", "equivalent"),
        text_columns=("#1 String", "#2 String"),
        label_column="Quality",
        train_dev_columns=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        metric="acc_and_f1",
        split_sizes={"train": 3668, "dev": 408, "test": 1725},
        test_extra_columns=("#1 ID", "#2 ID"),
        hub=HubSource(
            path="nyu-mll/glue",
            name="mrpc",
            splits={"train": "train", "dev": "validation", "test": "test"},
            columns={"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality", "idx": "index"},
        ),
    ),
    Task(
        name="sts-b",
        version=1,
        description="Semantic Textual Similarity Benchmark, regression 0-5",
        kind="regression",
        labels=None,
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        train_dev_columns=("sentence1", "sentence2", "label"),
        metric="pearson_and_spearman",
        split_sizes={"train": 5749, "dev": 1500, "test": 1379},
        label_range=(0.0, 5.0),
        hub=HubSource(
            path="nyu-mll/glue",
            name="stsb",
            splits={"train": "train", "dev": "validation", "test": "test"},
            columns={"sentence1": "sentence1", "sentence2": "sentence2", "label": "label", "idx": "index"},
        ),
    ),
]

TASKS: dict[str, Task] = {t.name: t for t in _TASKS}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)

_ALIASES = {"sst2": "sst-2", "stsb": "sts-b", "sts_b": "sts-b", "sst_2": "sst-2"}


def get_task(name: str) -> Task:
    """The task called `name` (case-insensitive; `sst2`/`stsb` accepted; spaces around it ignored, as for a
    typed name). Helpful KeyError otherwise. A submission's folder and file names are held to more:
    `elue.submission.discover` refuses one with spaces around the task name."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return TASKS[key]
    except KeyError:
        raise KeyError(f"unknown ELUE task {name!r}; available: {', '.join(TASK_NAMES)}") from None
