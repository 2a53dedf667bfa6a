"""The scoring rules the site applies, taken from `elue.scoring` (spec §4–5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

try:  # the toolkit's scoring module
    from elue.scoring import SIZE_TRACKS
    from elue.scoring import elue_score as _elue_score
    from elue.scoring import overall_score as _overall_score
except ImportError:  # pragma: no cover - only while the toolkit's module is being written
    SIZE_TRACKS = (40, 55, 70, 110)
    _elue_score = None
    _overall_score = None


def _baseline_perf(base: Sequence[tuple[float, float]], f: float) -> float:
    pts = sorted(base)
    if len(pts) == 1:
        return pts[0][1]
    if f <= pts[0][0]:
        (x0, y0), (x1, y1) = pts[0], pts[1]
    elif f >= pts[-1][0]:
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
    else:
        i = next(i for i in range(1, len(pts)) if pts[i][0] >= f)
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (f - x0) / (x1 - x0)


def elue_score(points: Sequence[tuple[float, float]], baseline: Sequence[tuple[float, float]]) -> float:
    if _elue_score is not None:
        return float(_elue_score(points, baseline))
    return sum(p - _baseline_perf(baseline, f) for f, p in points) / len(points)


def overall_score(task_scores: Mapping[str, float | None]) -> float | None:
    if _overall_score is not None:
        v = _overall_score(dict(task_scores))
        return None if v is None else float(v)
    vals = list(task_scores.values())
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


def size_track_value(best_performance: Mapping[str, float | None]) -> float | None:
    """Spec §5: the mean over datasets of a model's best performance."""
    vals = list(best_performance.values())
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)
