"""ELUE score against a baseline curve, overall score, and the size tracks (spec §4–5).

A model's points on one dataset are (MFLOPs, performance) pairs, one per test file. The baseline is
data (`src/elue/baselines/*.json`), not code:

    {"name": "ElasticBERT-BASE", "description": "...", "tasks": {"sst-2": [[1060, 84.1], ...]}}

    score = (1/n) * sum_i [ p_i - Perf_baseline(f_i) ]

`Perf_baseline` is piecewise linear on a linear FLOPs axis, with points sorted by FLOPs; outside the
baseline's FLOPs range it extends the nearest segment linearly (ours; the original is silent). A
one-point baseline is a constant. The overall score is the plain mean over the six tasks, and only
exists when all six are present.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from elue.tasks import TASK_NAMES, get_task

Point = tuple[float, float]  # (MFLOPs, performance in percentage points)

SIZE_TRACKS: tuple[int, ...] = (40, 55, 70, 110)  # parameter budgets, millions
DEFAULT_BASELINE = "elasticbert_base.json"


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file and the problem."""


class Baseline(dict):
    """task name -> sorted list of (MFLOPs, performance) points; `name`/`description` from the file."""

    def __init__(self, tasks: Mapping[str, Sequence[Point]] = (), *, name: str = "", description: str = ""):
        super().__init__(tasks)
        self.name = name
        self.description = description

    def points(self, task: str) -> list[Point]:
        """The baseline points of `task` (name normalised). KeyError if the baseline lacks it."""
        key = get_task(task).name
        if key not in self:
            have = ", ".join(self) or "none"
            raise KeyError(f"baseline {self.name or '?'} has no points for {key} (it has: {have})")
        return self[key]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "tasks": {k: [[f, p] for f, p in v] for k, v in self.items()},
        }


def _finite_number(value) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


# Bounds of a baseline point: performance is in percentage points (spec §1: at most 100 in size); MFLOPs
# beyond a million GFLOPs per example are no real model, nor below one FLOP. Within them the curve's slopes
# stay below 1e24 per MFLOP (two distinct MFLOPs >= 1e-6 differ by >= 2e-22), so Perf_baseline is finite at
# any submission's MFLOPs; points a few ulps apart near 0 (1e-320) gave an infinite slope and score.
MAX_PERFORMANCE = 100.0
MIN_MFLOPS = 1e-6
MAX_MFLOPS = 1e9


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_points(points: Iterable, what: str = "points") -> list[Point]:
    """Check a list of [MFLOPs, performance] pairs; return them as floats sorted by MFLOPs."""
    out: list[Point] = []
    if isinstance(points, dict | str | bytes):
        raise BaselineError(
            f"{what}: expected a list of [MFLOPs, performance] pairs, not {type(points).__name__}"
        )
    try:
        items = list(points)
    except TypeError:
        raise BaselineError(f"{what}: expected a list of [MFLOPs, performance] pairs") from None
    if not items:
        raise BaselineError(f"{what}: needs at least one [MFLOPs, performance] point")
    for i, pt in enumerate(items):
        if isinstance(pt, str | bytes) or not isinstance(pt, Sequence | np.ndarray) or len(pt) != 2:
            raise BaselineError(f"{what}: point {i} is {pt!r}, expected [MFLOPs, performance]")
        f, p = pt[0], pt[1]
        f = float(f) if isinstance(f, np.number) else f
        p = float(p) if isinstance(p, np.number) else p
        if not _finite_number(f) or not MIN_MFLOPS <= f <= MAX_MFLOPS:
            raise BaselineError(
                f"{what}: point {i} has MFLOPs {_shown(f)}; expected a positive number from {MIN_MFLOPS:g} "
                f"(one FLOP) up to {MAX_MFLOPS:g}"
            )
        if not _finite_number(p) or abs(p) > MAX_PERFORMANCE:
            raise BaselineError(
                f"{what}: point {i} has performance {_shown(p)}; expected percentage points, "
                f"-{MAX_PERFORMANCE:g}..{MAX_PERFORMANCE:g}"
            )
        out.append((float(f), float(p)))
    out.sort()
    for (f1, _), (f2, _) in zip(out, out[1:], strict=False):
        if f1 == f2:
            raise BaselineError(
                f"{what}: two points share MFLOPs {f1:g}; a baseline curve needs distinct FLOPs"
            )
    return out


def parse_baseline(data: object, source: str = "baseline") -> Baseline:
    """Build a Baseline from already-decoded JSON, validating it."""
    if not isinstance(data, dict):
        raise BaselineError(f"{source}: expected a JSON object with 'name' and 'tasks'")
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise BaselineError(
            f"{source}: 'tasks' must be a non-empty object {{task: [[MFLOPs, performance], ...]}}"
        )
    name = data.get("name", "")
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise BaselineError(f"{source}: 'name' and 'description' must be strings")
    out: dict[str, list[Point]] = {}
    for key, pts in tasks.items():
        try:
            task = get_task(key).name
        except KeyError as e:
            raise BaselineError(f"{source}: {e.args[0]}") from None
        if task in out:
            raise BaselineError(f"{source}: task {task} is given twice")
        out[task] = validate_points(pts, f"{source}: task {task}")
    return Baseline(out, name=name, description=description)


def load_baseline(path: Path | str | None = None) -> Baseline:
    """Load a baseline JSON file; default: the shipped ElasticBERT-BASE curve."""
    if path is None:
        ref = resources.files("elue.baselines").joinpath(DEFAULT_BASELINE)
        text = ref.read_text(encoding="utf-8")
        source = f"elue/baselines/{DEFAULT_BASELINE}"
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as e:
            raise BaselineError(f"{path}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise BaselineError(f"{path}: not UTF-8 text (a baseline is a JSON file)") from None
        source = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BaselineError(
            f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except RecursionError:
        raise BaselineError(f"{source}: not a baseline (JSON nested too deeply)") from None
    return parse_baseline(data, source)


def baseline_performance(points: Sequence[Point], mflops):
    """Perf_baseline at `mflops` (a number -> float; an array -> float64 array).

    Piecewise linear through `points` sorted by FLOPs; the first/last segment is extended outside
    the range; one point gives a constant.
    """
    pts = sorted((float(f), float(p)) for f, p in points)
    if not pts:
        raise ValueError("baseline_performance needs at least one point")
    xs = np.array([f for f, _ in pts])
    ys = np.array([p for _, p in pts])
    x = np.asarray(mflops, dtype=np.float64)
    if len(pts) == 1:
        y = np.full_like(x, ys[0])
    else:
        if np.any(np.diff(xs) == 0):
            raise ValueError("baseline points must have distinct FLOPs")
        # segment k joins points k and k+1; clip so outside values use the end segments
        k = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 2)
        slope = (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k])
        # measured from the segment's nearer end: at the last point (and past it) from that point, so that
        # every baseline point reads back exactly (from the other end, 87.0 + 1.6 / 2122 * 2122 can miss 88.6
        # by an ulp, and the baseline then scored -0.00 against itself)
        right = x >= xs[k + 1]
        y = np.where(right, ys[k + 1] + slope * (x - xs[k + 1]), ys[k] + slope * (x - xs[k]))
    return float(y) if y.ndim == 0 else y


def shown_millions(value: float, digits: int = 1) -> str:
    """A count in millions (MFLOPs, M params) for people: `digits` decimals, or 3 significant digits below 1 (a
    tiny model's 0.0481 MFLOPs or 0.00544M parameters, which a fixed 1 or 2 decimals would show as 0.0)."""
    return f"{value:,.{digits}f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def outside_baseline(mflops: Sequence[float], baseline_points: Sequence[Point]) -> list[int]:
    """Indices of the `mflops` outside the baseline's FLOPs range, where `baseline_performance` extends the
    curve's end segments: their score is an extrapolation (a 20-MFLOPs CNN scored against a curve that starts at
    1,060 MFLOPs reads a baseline no model there reached)."""
    xs = [float(f) for f, _ in baseline_points]
    if not xs:
        return []
    lo, hi = min(xs), max(xs)
    return [i for i, f in enumerate(mflops) if not lo <= float(f) <= hi]


def elue_score(points: Sequence[Point], baseline_points: Sequence[Point]) -> float:
    """Mean over a model's points of (performance − baseline performance at the same MFLOPs)."""
    pts = list(points)
    if not pts:
        raise ValueError("elue_score needs at least one (MFLOPs, performance) point")
    f = np.array([float(a) for a, _ in pts])
    p = np.array([float(b) for _, b in pts])
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(p))):
        raise ValueError("elue_score: points must be finite numbers")
    return float(np.mean(p - baseline_performance(baseline_points, f)))


def overall_score(task_scores: Mapping[str, float | None]) -> float | None:
    """Plain mean of the six per-task ELUE scores; None unless all six are present (spec §4)."""
    scores: dict[str, float] = {}
    for key, value in task_scores.items():
        name = get_task(key).name
        if value is not None and math.isfinite(value):  # NaN is no score: it would rank anywhere
            scores[name] = float(value)
    if any(name not in scores for name in TASK_NAMES):
        return None
    return float(np.mean([scores[name] for name in TASK_NAMES]))


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points not dominated by another (fewer or equal FLOPs and higher or equal performance)."""
    front: list[Point] = []
    best = -math.inf
    for f, p in sorted(points, key=lambda q: (q[0], -q[1])):
        if p > best:
            front.append((f, p))
            best = p
    return front


# --- size tracks (spec §5) ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSummary:
    """What a size track needs of a model: its parameter count (largest over its points, millions)
    and its best performance per task."""

    name: str
    params_m: float
    best: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackEntry:
    name: str
    params_m: float
    mean_performance: float | None  # mean over the tasks it has
    tasks: tuple[str, ...]  # tasks it has
    complete: bool  # has every task of the track
    rank: int | None  # 1-based among complete entries (ties share a rank); None if incomplete


def _summary(name: str, model) -> ModelSummary:
    if isinstance(model, ModelSummary):
        return model
    if isinstance(model, Mapping):
        return ModelSummary(name=name, params_m=float(model["params_m"]), best=dict(model.get("best", {})))
    raise TypeError(f"model {name!r}: expected a ModelSummary or {{'params_m': ..., 'best': {{task: perf}}}}")


def rank_entries(values: Sequence[float]) -> list[int]:
    """Competition ranks (1, 2, 2, 4) of values, higher is better."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for pos, i in enumerate(order):
        if pos > 0 and values[i] == values[order[pos - 1]]:
            ranks[i] = ranks[order[pos - 1]]
        else:
            ranks[i] = pos + 1
    return ranks


def size_track(
    models: Mapping[str, ModelSummary | Mapping],
    budget_m: float,
    tasks: Sequence[str] = TASK_NAMES,
) -> list[TrackEntry]:
    """The models within `budget_m` million parameters, ranked by the mean over `tasks` of their best
    performance. Models lacking a task are listed after the ranked ones, marked incomplete, unranked
    (ours, as for the overall ELUE score)."""
    wanted = tuple(get_task(t).name for t in tasks)
    entries: list[TrackEntry] = []
    for name, model in models.items():
        s = _summary(name, model)
        if not s.params_m <= budget_m:
            continue
        # a NaN performance counts as missing: in the mean it broke the order of every other entry
        best = {get_task(k).name: float(v) for k, v in s.best.items() if v is not None and math.isfinite(v)}
        have = tuple(t for t in wanted if t in best)
        mean = float(np.mean([best[t] for t in have])) if have else None
        entries.append(TrackEntry(name, s.params_m, mean, have, len(have) == len(wanted), None))
    complete = [e for e in entries if e.complete]
    incomplete = [e for e in entries if not e.complete]
    ranks = rank_entries([e.mean_performance for e in complete])
    ranked = sorted(
        (
            TrackEntry(e.name, e.params_m, e.mean_performance, e.tasks, True, r)
            for e, r in zip(complete, ranks, strict=True)
        ),
        key=lambda e: (e.rank, e.name),
    )
    rest = sorted(  # (a mean of 0.0 is a mean: `or` took it for none and put it last)
        incomplete,
        key=lambda e: (-(e.mean_performance if e.mean_performance is not None else -math.inf), e.name),
    )
    return ranked + rest


def size_tracks(
    models: Mapping[str, ModelSummary | Mapping],
    budgets: Sequence[float] = SIZE_TRACKS,
    tasks: Sequence[str] = TASK_NAMES,
) -> dict[float, list[TrackEntry]]:
    """`size_track` for every budget: {40: [...], 55: [...], 70: [...], 110: [...]}."""
    return {b: size_track(models, b, tasks) for b in budgets}


def rank_by_overall(
    task_scores: Mapping[str, Mapping[str, float | None]],
) -> list[tuple[str, float | None, int | None]]:
    """The "ELUE score" track: (model, overall score or None, rank or None), ranked models first."""
    overall = {name: overall_score(scores) for name, scores in task_scores.items()}
    done = [n for n, v in overall.items() if v is not None]
    ranks = dict(zip(done, rank_entries([overall[n] for n in done]), strict=True))
    rows = [(n, overall[n], ranks.get(n)) for n in overall]
    return sorted(rows, key=lambda r: (r[2] is None, r[2] or 0, r[0]))


# --- per-point figures ---------------------------------------------------------------------------


def mean_mflops(trace_ids: np.ndarray, trace_flops: Sequence[float]) -> float:
    """Mean FLOPs per example in MFLOPs, given each row's trace id and each distinct trace's FLOPs
    (spec §3: FLOPs of a test file = mean over its examples)."""
    ids = np.asarray(trace_ids)
    costs = np.asarray(trace_flops, dtype=np.float64)
    if ids.size == 0:
        raise ValueError("mean_mflops: no examples")
    counts = np.bincount(ids, minlength=len(costs))
    if len(counts) > len(costs):
        raise ValueError("mean_mflops: a trace id has no FLOPs")
    return float(np.dot(counts, costs) / ids.size / 1e6)
