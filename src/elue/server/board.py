"""The leaderboard as plain data, computed from the stored points: per-dataset ELUE scores against the
admin's baseline entries (spec §4), the overall score, the size tracks (spec §5) and the Pareto fronts.

Everything here is read-only and cached per process for `Settings.cache_seconds`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from elue.tasks import TASK_NAMES

from . import scores
from .db import REPORTED, SCORED, Baseline, Point, Submission, TaskResult, User, read_board_version

log = logging.getLogger("elue.server.board")

TRACKS = {"elue": "ELUE score", **{str(b): f"≤ {b}M params" for b in scores.SIZE_TRACKS}}


@dataclass
class TaskEntry:
    task: str
    points: list[dict]  # {"mflops", "performance", "file", "metrics", "examples"}
    params_m: float | None
    score: float | None  # ELUE score on this dataset
    score_source: str  # "computed" | "reported" | "none"
    best_performance: float | None


@dataclass
class Model:
    id: int
    name: str
    origin: str
    owner: str | None
    owner_id: int | None
    public: bool
    hidden: bool
    status: str
    paper_url: str
    code_url: str
    description: str
    params_m: float | None
    created_at: str
    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    overall: float | None = None
    is_baseline_for: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(t in self.tasks and self.tasks[t].score is not None for t in TASK_NAMES)

    def to_dict(self, with_points: bool = True) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "owner": self.owner,
            "paper_url": self.paper_url,
            "code_url": self.code_url,
            "description": self.description,
            "params_m": self.params_m,
            "elue_score": self.overall,
            "complete": self.complete,
            "baseline_for": self.is_baseline_for,
            "created_at": self.created_at,
            "tasks": {
                t: {
                    "elue_score": e.score,
                    "score_source": e.score_source,
                    "params_m": e.params_m,
                    "best_performance": e.best_performance,
                    **({"points": e.points} if with_points else {}),
                }
                for t, e in self.tasks.items()
            },
        }


@dataclass
class Board:
    models: list[Model]  # public, visible, scored or reported
    baselines: dict[str, dict]  # task -> {"submission_id", "name", "points": [(mflops, perf)]}
    by_id: dict[int, Model]


def _finite(x):  # noqa: ANN001, ANN202
    """x if it is a finite number, else None: a bad stored value (NaN, inf) must never reach the scoring
    or the JSON of the whole board."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return x
    return None


def load_models(session: Session, where=None) -> list[Model]:  # noqa: ANN001
    """Models (with their points) of the submissions matching `where` (a SQL condition).

    Stored numbers that are not finite (or MFLOPs <= 0) are left out with a warning, so one bad row
    cannot break the board (the service refuses them; this guards older rows and other writers)."""
    q = select(Submission, User.username).outerjoin(User, User.id == Submission.owner_id)
    if where is not None:
        q = q.where(where)
    models: dict[int, Model] = {}
    for sub, username in session.execute(q.order_by(Submission.id)):
        models[sub.id] = Model(
            id=sub.id,
            name=sub.name,
            origin=sub.origin,
            owner=username,
            owner_id=sub.owner_id,
            public=sub.public,
            hidden=sub.hidden,
            status=sub.status,
            paper_url=sub.paper_url or "",
            code_url=sub.code_url or "",
            description=sub.description or "",
            params_m=_finite(sub.params_m),
            created_at=sub.created_at.strftime("%Y-%m-%d %H:%M") if sub.created_at else "",
        )
    if not models:
        return []
    ids = list(models)
    trs: dict[int, tuple[int, TaskEntry]] = {}
    for chunk in _chunks(ids, 500):
        for tr in session.execute(select(TaskResult).where(TaskResult.submission_id.in_(chunk))).scalars():
            reported = _finite(tr.reported_score)
            if reported is None and tr.reported_score is not None:
                log.warning(
                    "submission %s %s: ignoring stored score %r", tr.submission_id, tr.task, tr.reported_score
                )
            source = "reported" if reported is not None else "none"
            entry = TaskEntry(tr.task, [], _finite(tr.params_m), reported, source, None)
            trs[tr.id] = (tr.submission_id, entry)
            models[tr.submission_id].tasks[tr.task] = entry
    tr_ids = list(trs)
    for chunk in _chunks(tr_ids, 500):
        rows = session.execute(
            select(
                Point.task_result_id,
                Point.file,
                Point.mflops,
                Point.performance,
                Point.metrics,
                Point.examples,
            ).where(Point.task_result_id.in_(chunk))
        )
        for tr_id, file, mflops, perf, metrics, examples in rows:
            if _finite(mflops) is None or mflops <= 0 or _finite(perf) is None:
                log.warning("submission %s: ignoring a stored point (%r, %r)", trs[tr_id][0], mflops, perf)
                continue
            trs[tr_id][1].points.append(
                {
                    "file": file,
                    "mflops": mflops,
                    "performance": perf,
                    # a metric that is not finite is left out (as None it broke the CSV and the model page)
                    "metrics": {k: v for k, v in (metrics or {}).items() if _finite(v) is not None},
                    "examples": examples,
                }
            )
    for sid, entry in trs.values():
        # a model's size is the largest over its points (spec §5): also for a row stored with a smaller one
        m = models[sid]
        if entry.params_m is not None and (m.params_m is None or entry.params_m > m.params_m):
            m.params_m = entry.params_m
        entry.points.sort(key=lambda p: p["mflops"])
        if entry.points:
            entry.best_performance = max(p["performance"] for p in entry.points)
    return list(models.values())


def _chunks(xs: list, n: int):
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def baseline_choices(session: Session) -> dict[str, int]:
    return {
        b.task: b.submission_id
        for b in session.execute(select(Baseline)).scalars()
        if b.submission_id is not None
    }


def apply_scores(models: list[Model], baselines: dict[str, list[tuple[float, float]]]) -> None:
    """Fill in each model's per-dataset and overall ELUE scores.

    Measured entries are always scored against the current baseline; a reported entry shows the score
    its paper (or the original leaderboard) gives, and is computed from its points when it gives none.
    """
    for m in models:
        for task, e in m.tasks.items():
            base = baselines.get(task)
            if m.origin == REPORTED and e.score_source == "reported":
                continue
            if e.points and base:
                try:
                    e.score = _finite(
                        scores.elue_score([(p["mflops"], p["performance"]) for p in e.points], base)
                    )
                except (ValueError, ArithmeticError) as exc:  # one bad entry must not break the board
                    log.warning("submission %s %s: no score (%s)", m.id, task, exc)
                    e.score = None
                e.score_source = "computed" if e.score is not None else "none"
            else:
                e.score, e.score_source = None, "none"
        try:
            overall = scores.overall_score({t: m.tasks[t].score for t in TASK_NAMES}) if m.complete else None
        except (ValueError, ArithmeticError) as exc:
            log.warning("submission %s: no overall score (%s)", m.id, exc)
            overall = None
        m.overall = _finite(overall)


def visible_condition():  # noqa: ANN201
    """The public entries: published, not hidden, scored (reported entries are stored scored). Only
    these are on the board and only these may be a dataset's baseline."""
    return Submission.public.is_(True) & Submission.hidden.is_(False) & (Submission.status == SCORED)


def build_board(session: Session) -> Board:
    models = load_models(session, visible_condition())
    by_id = {m.id: m for m in models}
    choices = baseline_choices(session)
    baselines: dict[str, dict] = {}
    base_points: dict[str, list[tuple[float, float]]] = {}
    for task, sid in choices.items():
        m = by_id.get(sid)
        if m is None:  # not public (any more): its points are not published, that dataset has no baseline
            log.warning("the %s baseline (submission %s) is not public: ignored", task, sid)
            continue
        if task not in m.tasks or not m.tasks[task].points:
            continue
        pts = [(p["mflops"], p["performance"]) for p in m.tasks[task].points]
        base_points[task] = pts
        baselines[task] = {"submission_id": m.id, "name": m.name, "points": pts}
        m.is_baseline_for.append(task)
    apply_scores(models, base_points)
    return Board(models=models, baselines=baselines, by_id=by_id)


def rank(board: Board, track: str = "elue", sort: str | None = None, descending: bool = True) -> list[dict]:
    """Rows of one track: {"rank", "model", "value", "cells": {task: value}, "complete"}; ranked rows
    first (competition ranks), incomplete ones after. `sort` re-orders by a column ("name", "params",
    "value", a task name; "rank" = the default order)."""
    rows = []
    if track == "elue":
        for m in board.models:
            cells = {t: (m.tasks[t].score if t in m.tasks else None) for t in TASK_NAMES}
            rows.append(
                {"model": m, "value": m.overall, "cells": cells, "complete": m.complete, "rank": None}
            )
        done = [r for r in rows if r["value"] is not None]
        for r, k in zip(done, scores.rank_entries([r["value"] for r in done]), strict=True):
            r["rank"] = k

        def partial(r: dict) -> float:
            have = [c for c in r["cells"].values() if c is not None]
            return sum(have) / len(have) if have else float("-inf")

        rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, -partial(r), r["model"].name.lower()))
    else:
        budget = float(track)
        summaries = {}
        for m in board.models:
            if m.params_m is None:
                continue
            best = {t: e.best_performance for t, e in m.tasks.items() if e.best_performance is not None}
            # a model with scores but no performance (a reported entry) is still in its size track, incomplete
            summaries[str(m.id)] = scores.ModelSummary(name=str(m.id), params_m=m.params_m, best=best)
        for e in scores.size_track(summaries, budget):
            m = board.by_id[int(e.name)]
            cells = {t: m.tasks[t].best_performance if t in m.tasks else None for t in TASK_NAMES}
            rows.append(
                {
                    "model": m,
                    "value": e.mean_performance if e.complete else None,
                    "cells": cells,
                    "complete": e.complete,
                    "rank": e.rank,
                }
            )
    if sort == "rank":
        # ranked rows by rank (1 first ascending, last first descending); unranked rows stay at the bottom
        ranked = [r for r in rows if r["rank"] is not None]
        unranked = [r for r in rows if r["rank"] is None]
        if descending:
            ranked.reverse()
        rows = ranked + unranked
    elif sort:
        if sort == "name":
            rows.sort(key=lambda r: r["model"].name.lower(), reverse=descending)
        else:

            def value(r: dict) -> float | None:
                if sort == "params":
                    return r["model"].params_m
                if sort == "value":
                    return r["value"]
                return r["cells"].get(sort)

            present = [r for r in rows if value(r) is not None]
            missing = [r for r in rows if value(r) is None]
            present.sort(key=value, reverse=descending)
            rows = present + missing
    return rows


def natural_order(sort: str | None) -> str:
    """A column's first-click order: rank 1 first and names A→Z ascending; scores, performance and
    params best/largest first."""
    return "asc" if sort in (None, "rank", "name") else "desc"


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The toolkit's Pareto front (cheaper-or-equal and better-or-equal dominates), with point labels."""
    labels: dict[tuple[float, float], str] = {}
    for x, y, label in points:
        labels.setdefault((x, y), label)
    return [(x, y, labels[(x, y)]) for x, y in scores.pareto_front([(x, y) for x, y, _ in points])]


def task_view(board: Board, task: str) -> dict:
    """Data for the task chart and table: each model a series; the baseline curve; the Pareto front."""
    series = []
    all_pts = []
    for m in board.models:
        e = m.tasks.get(task)
        if e is None or not e.points:
            continue
        s = {
            "id": m.id,
            "name": m.name,
            "origin": m.origin,
            "params_m": e.params_m if e.params_m is not None else m.params_m,
            "score": e.score,
            "is_baseline": task in m.is_baseline_for,
            "points": [
                {"mflops": p["mflops"], "performance": p["performance"], "file": p["file"]} for p in e.points
            ],
        }
        series.append(s)
        all_pts += [(p["mflops"], p["performance"], m.name) for p in e.points]
    base = board.baselines.get(task)
    front = pareto_front(all_pts)
    table = [
        {
            "id": s["id"],
            "name": s["name"],
            "origin": s["origin"],
            "params_m": s["params_m"],
            "score": s["score"],
            "points": len(s["points"]),
            "best": max(p["performance"] for p in s["points"]),
        }
        for s in series
    ]
    # models with a (reported) score but no points still belong in the table
    for m in board.models:
        e = m.tasks.get(task)
        if e is not None and not e.points and e.score is not None:
            table.append(
                {
                    "id": m.id,
                    "name": m.name,
                    "origin": m.origin,
                    "params_m": e.params_m or m.params_m,
                    "score": e.score,
                    "points": 0,
                    "best": None,
                }
            )
    table.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0)))
    return {
        "task": task,
        "series": series,
        "baseline": base,
        "pareto": [{"mflops": x, "performance": y, "name": n} for x, y, n in front],
        "table": table,
    }


class BoardCache:
    """One Board per process. It is rebuilt when the database's board version changes (any write that
    changes public results bumps it, in whichever process), checked at most every `ttl` seconds."""

    def __init__(self, sessions: sessionmaker, ttl: float) -> None:
        self.sessions, self.ttl = sessions, ttl
        self._board: Board | None = None
        self._built_version: str | None = None
        self._version: str | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._vlock = threading.Lock()
        self.invalidations = 0  # bumps on every write in this process

    def version(self) -> tuple[int, str | None]:
        """The current board version (cheap: one tiny query at most every `ttl` seconds)."""
        now = time.monotonic()
        if self.ttl <= 0 or now - self._checked >= self.ttl:
            with self._vlock:
                if self.ttl <= 0 or now - self._checked >= self.ttl:
                    with self.sessions() as s:
                        self._version = read_board_version(s)
                    self._checked = time.monotonic()
        return self.invalidations, self._version

    def get(self) -> Board:
        inv, version = self.version()
        b = self._board
        if b is not None and self._built_version == (inv, version) and self.ttl > 0:
            return b
        with self._lock:
            b = self._board
            if b is not None and self._built_version == (inv, version) and self.ttl > 0:
                return b
            with self.sessions() as s:
                board = build_board(s)
            self._board, self._built_version = board, (inv, version)
            return board

    def invalidate(self) -> None:
        self.invalidations += 1
        self._checked = 0.0
