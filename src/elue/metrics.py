"""Task metrics (spec §1): accuracy, F1 of class 1, Pearson/Spearman, and the per-task composites.

`compute_metrics(task, y_true, y_pred)` returns percentage points (×100):
``{"performance": ..., <part>: ...}``; the parts a metric reports are declared in `METRICS`.
Which metric a task uses is a task fact (`Task.metric`), never decided here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from elue.tasks import Task, get_task


def _as_1d(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return t, p


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches, in [0, 1]."""
    t, p = _check_pair(y_true, y_pred)
    return float(np.mean(t == p))


def f1(y_true, y_pred, positive: int = 1) -> float:
    """F1 of the class `positive` (MRPC: class 1, 'equivalent'), in [0, 1]; 0 when undefined."""
    t, p = _check_pair(y_true, y_pred)
    return float(f1_score(t, p, pos_label=positive, average="binary", zero_division=0.0))


def matthews(y_true, y_pred) -> float:
    """Matthews correlation coefficient in [-1, 1] (GLUE CoLA; not an ELUE metric)."""
    t, p = _check_pair(y_true, y_pred)
    return float(matthews_corrcoef(t, p))


def _correlation(fn, y_true, y_pred, *, linear: bool) -> float:
    t, p = _check_pair(y_true, y_pred)
    t = t.astype(np.float64)
    p = p.astype(np.float64)
    # a constant side has no correlation; report 0 rather than NaN (a constant predictor earns nothing)
    if t.shape[0] < 2 or np.all(t == t[0]) or np.all(p == p[0]):
        return 0.0
    if linear:  # Pearson works on the values; Spearman on their ranks, which need nothing of this
        t, p = _conditioned(t), _conditioned(p)
        if not (t.any() and p.any()):
            return 0.0
    with warnings.catch_warnings():
        # scipy's "nearly constant input" warning: handled above, and not for the CLI's output
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        r = float(fn(t, p)[0])
    return 0.0 if math.isnan(r) else r


def _conditioned(x: np.ndarray) -> np.ndarray:
    """`x` moved and scaled for scipy's Pearson sums, which a linear map does not change.

    Scaled by a power of two first (exact): huge finite values overflowed the sums of squares to inf (NaN,
    reported as 0) and subnormals kept too few bits ([1, 0, 2] * 5e-324 correlated as 0.707 where 0.5).
    Then taken as differences from the first value: values a few ulps apart around 1 lost their
    differences to the rounding of the mean (1, 1+5ulp, 1+9ulp against 1, 2.5, 4 correlated as 0.982
    where 0.998). Then brought to at most 1 again."""
    x = np.ldexp(x, -int(np.frexp(np.abs(x).max())[1]))
    x = x - x[0]
    top = np.abs(x).max()
    return x / top if top > 0 else x


def pearson(y_true, y_pred) -> float:
    """Pearson correlation in [-1, 1] (0 when either side is constant)."""
    return _correlation(stats.pearsonr, y_true, y_pred, linear=True)


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation in [-1, 1] (0 when either side is constant)."""
    return _correlation(stats.spearmanr, y_true, y_pred, linear=False)


@dataclass(frozen=True)
class Metric:
    """A task metric: named parts (each in [0, 1] or [-1, 1]) and performance = mean of the parts."""

    name: str
    parts: dict[str, Callable[[np.ndarray, np.ndarray], float]]
    description: str

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(self.parts)

    def __call__(self, y_true, y_pred) -> dict[str, float]:
        values = {k: 100.0 * fn(y_true, y_pred) for k, fn in self.parts.items()}
        out = {"performance": float(np.mean(list(values.values())))}
        out.update(values)
        return out


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", {"accuracy": accuracy}, "accuracy"),
    "acc_and_f1": Metric("acc_and_f1", {"accuracy": accuracy, "f1": f1}, "(accuracy + F1 of class 1) / 2"),
    "pearson_and_spearman": Metric(
        "pearson_and_spearman", {"pearson": pearson, "spearman": spearman}, "(Pearson + Spearman) / 2"
    ),
    # GLUE CoLA (used by fine-tuning on GLUE, see elue.data.GLUE_TASKS); no ELUE task uses it
    "matthews": Metric("matthews", {"mcc": matthews}, "Matthews correlation"),
}


def get_metric(task: str | Task) -> Metric:
    t = get_task(task) if isinstance(task, str) else task
    try:
        return METRICS[t.metric]
    except KeyError:
        raise KeyError(
            f"task {t.name!r} uses unknown metric {t.metric!r}; known: {', '.join(METRICS)}"
        ) from None


def compute_metrics(task: str | Task, y_true, y_pred) -> dict[str, float]:
    """{"performance": ×100, plus each part ×100} for `task`'s metric.

    Classification inputs are compared as integers; regression inputs as floats.
    """
    t = get_task(task) if isinstance(task, str) else task
    metric = get_metric(t)
    yt, yp = _check_pair(y_true, y_pred)
    if t.is_regression:
        yt, yp = yt.astype(np.float64), yp.astype(np.float64)
    else:
        yt, yp = _as_class_ids(yt, "y_true", t), _as_class_ids(yp, "y_pred", t)
    return metric(yt, yp)


def _as_class_ids(arr: np.ndarray, name: str, task: Task) -> np.ndarray:
    if arr.dtype.kind in "iub":
        return _check_classes(arr.astype(np.int64), name, task)
    try:
        f = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}") from None
    if not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
        raise ValueError(f"{name} must hold integer class ids; found non-integral values")
    return _check_classes(f.astype(np.int64), name, task)


def _check_classes(ids: np.ndarray, name: str, task: Task) -> np.ndarray:
    # A class outside the task's labels is a caller's bug: without this check MRPC's F1 failed with
    # sklearn's "Target is multiclass but average='binary'", and accuracy scored -1 as a wrong answer.
    bad = (ids < 0) | (ids >= task.num_labels)
    if bad.any():
        raise ValueError(
            f"{name} holds class {int(ids[bad][0])}, outside {task.name}'s labels 0..{task.num_labels - 1}"
        )
    return ids
