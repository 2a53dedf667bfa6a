"""The task data side of fine-tuning: what a task is (`TaskSpec`, ELUE or GLUE), its splits read from an
ELUE-layout folder, the hub or GLUE, tokenized to unpadded rows, and batched with dynamic padding.

Used by `finetune` (training) and `export` (test predictions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .finetune_config import FinetuneConfig

# --------------------------------------------------------------------------------------------------
# what is being learnt


@dataclass(frozen=True)
class TaskSpec:
    """What the trainer needs to know about a task, whether ELUE or GLUE."""

    name: str
    text_columns: tuple[str, ...]
    num_labels: int
    is_regression: bool
    metric: Callable[[np.ndarray, np.ndarray], dict[str, float]]  # -> {"performance": ..., parts}
    family: str = "elue"  # "elue" | "glue"
    # labelled splits reported beside dev at each evaluation, never used to choose (GLUE MNLI: dev_mismatched)
    other_dev_splits: tuple[str, ...] = ()
    # class names by label id (ELUE's, spec §1), written into the checkpoint's id2label; None: not known here
    label_names: tuple[str, ...] | None = None


def elue_task_spec(task: str) -> TaskSpec:
    from elue.metrics import compute_metrics
    from elue.tasks import get_task

    t = get_task(task)
    return TaskSpec(
        name=t.name,
        text_columns=tuple(t.text_columns),
        num_labels=t.num_labels,
        is_regression=t.is_regression,
        metric=lambda y, p, _t=t: compute_metrics(_t, y, p),
        family="elue",
        label_names=tuple(t.labels) if t.labels is not None else None,
    )


def glue_task_spec(name: str) -> TaskSpec:
    """GLUE task facts from `elue.data.get_glue_task`; the metric by name from `elue.metrics.METRICS`."""
    from elue import data

    info = data.get_glue_task(name)
    return TaskSpec(
        name=info.name,
        text_columns=tuple(info.text_columns),
        num_labels=int(info.num_labels),
        is_regression=bool(info.is_regression),
        metric=_glue_metric(info.metric),
        family="glue",
        other_dev_splits=tuple(k for k in info.splits if k.startswith("dev_")),
    )


def _glue_metric(key: str):
    from elue import metrics as m

    if key in m.METRICS:
        return m.METRICS[key]
    if key in ("matthews", "mcc"):

        def mcc(y, p):
            from sklearn.metrics import matthews_corrcoef

            v = 100.0 * float(matthews_corrcoef(np.asarray(y), np.asarray(p)))
            return {"performance": v, "matthews": v}

        return mcc
    raise KeyError(f"unknown GLUE metric {key!r}")


# --------------------------------------------------------------------------------------------------
# data


def task_spec(cfg: FinetuneConfig) -> TaskSpec:
    """The task of a run; a GLUE task named without --glue (`qqp`, `mnli`), or an ELUE one with it (`imdb`), is
    refused with the option that reads it, not only the list of the other family's names."""
    from elue import data
    from elue.tasks import get_task

    glue = cfg.source == "glue"
    try:
        return glue_task_spec(cfg.task) if glue else elue_task_spec(cfg.task)
    except KeyError as err:
        try:
            (get_task if glue else data.get_glue_task)(cfg.task)
        except KeyError:
            raise err from None
        hint = "an ELUE task: leave out --glue" if glue else "a GLUE task: add --glue"
        raise KeyError(f"{err.args[0]} ({cfg.task!r} is {hint})") from None


def load_split(cfg: FinetuneConfig, spec: TaskSpec, split: str):
    """A `datasets.Dataset` with the task's text columns and `label` (and `index` for ELUE)."""
    from elue import data

    if cfg.source == "elue":
        data_dir = cfg.data_dir or default_data_dir()
        if data_dir is None:
            raise FileNotFoundError("no ELUE data folder: pass --data or set ELUE_DATA_DIR")
        ds = data.load_elue_split(spec.name, split, data_dir)
        where = str(data.split_path(data_dir, spec.name, split))
    elif cfg.source == "hub":
        ds, where = data.load_hub_split(spec.name, split, path=cfg.hub_path), f"the hub's {split} split"
    elif cfg.source == "glue":
        ds, where = data.load_glue_split(spec.name, split, path=cfg.hub_path), f"GLUE's {split} split"
    else:
        raise ValueError(f"unknown data source {cfg.source!r}: elue, hub or glue")
    if len(ds) == 0:  # e.g. a header-only file: nothing to train on, evaluate or predict
        raise ValueError(f"{spec.name}: {where} has no rows")
    return ds


def default_data_dir() -> str | None:
    import os

    env = os.environ.get("ELUE_DATA_DIR")
    if env:
        return env
    guess = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return str(guess) if guess.is_dir() else None


def column_texts(ds, spec: TaskSpec) -> list[list[str]]:
    cols = []
    for c in spec.text_columns:
        cols.append(["" if v is None else str(v) for v in ds[c]])
    return cols


def check_max_length_fits(tokenizer, spec: TaskSpec, max_length: int, option: str = "--max-length") -> None:
    """An input must hold its special tokens and at least one token of text: a tokenizer asked to cut below its
    special tokens cannot truncate and passes whole texts on (longer than the model's positions, at worst)."""
    special = int(tokenizer.num_special_tokens_to_add(pair=len(spec.text_columns) > 1))
    if max_length <= special:
        raise ValueError(
            f"{option} {max_length}: {spec.name} inputs take {special} special tokens ([CLS], [SEP]); "
            f"use at least {special + 1}"
        )


def tokenize(tokenizer, ds, spec: TaskSpec, max_length: int, with_labels: bool = True) -> list[dict]:
    """Encode rows to [{input_ids, attention_mask, token_type_ids?, labels?}] (unpadded)."""
    check_max_length_fits(tokenizer, spec, max_length)
    texts = column_texts(ds, spec)
    enc = tokenizer(*texts, truncation=True, max_length=max_length, padding=False)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    rows = [{k: enc[k][i] for k in keys} for i in range(len(texts[0]))]
    if with_labels:
        labels = ds["label"]
        for r, y in zip(rows, labels, strict=True):
            r["labels"] = float(y) if spec.is_regression else int(y)
    return rows


def cut_note(max_length: int, **splits: Sequence[dict]) -> str:
    """How many rows of each split reach `max_length` (their texts cut, but for those exactly that long), as a
    clause for a log line, "" when none do: IMDb's reviews cut to the default 128 tokens went unsaid."""
    counts = {name: sum(len(r["input_ids"]) >= max_length for r in rows) for name, rows in splits.items()}
    if not any(counts.values()):
        return ""
    parts = " / ".join(f"{n:,} {name}" for name, n in counts.items())
    return f"; {parts} rows reach it (longer texts are cut)"


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows: Sequence[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def make_collate(tokenizer, regression: bool = False):
    """Dynamic padding to the longest row of the batch."""
    pad_id = tokenizer.pad_token_id or 0

    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in batch)
        out: dict[str, torch.Tensor] = {}
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            if key not in batch[0]:
                continue
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.tensor(
                [r[key] + [fill] * (longest - len(r[key])) for r in batch], dtype=torch.long
            )
        if "labels" in batch[0]:
            dtype = torch.float32 if regression else torch.long
            out["labels"] = torch.tensor([r["labels"] for r in batch], dtype=dtype)
        return out

    return collate
