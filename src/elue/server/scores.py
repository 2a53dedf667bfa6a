"""The scoring rules the site applies: all from the toolkit's `elue.scoring` (spec §4–5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from elue.scoring import SIZE_TRACKS, ModelSummary, pareto_front, rank_entries, size_track
from elue.scoring import elue_score as _elue_score
from elue.scoring import overall_score as _overall_score

__all__ = [
    "SIZE_TRACKS",
    "elue_score",
    "overall_score",
    "pareto_front",
    "rank_entries",
    "size_track",
    "ModelSummary",
]


def elue_score(points: Sequence[tuple[float, float]], baseline: Sequence[tuple[float, float]]) -> float:
    return float(_elue_score(points, baseline))


def overall_score(task_scores: Mapping[str, float | None]) -> float | None:
    v = _overall_score(dict(task_scores))
    return None if v is None else float(v)
