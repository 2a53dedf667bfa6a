"""The JSON API's answers as pydantic models, for the OpenAPI description (/api/openapi.json, /api/docs).

They document, they do not filter: the routes return plain dicts (the board is built once and cached, and
running each answer through pydantic would cost the read path time). `tests/server/test_api_docs.py` checks
real answers against these models, unknown fields included (`extra="forbid"`), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Out):
    """Every refusal of the API (4xx) but a malformed request (422: FastAPI's field list)."""

    detail: str


class LeaderboardRow(_Out):
    rank: int | None  # None: not ranked (incomplete)
    id: int
    name: str
    origin: Literal["measured", "reported"]
    params_m: float | None
    value: float | None  # the ELUE score, or on a size track the mean best performance
    complete: bool
    cells: dict[str, float | None]  # per dataset: ELUE score, or on a size track the best performance


class Leaderboard(_Out):
    track: str
    title: str
    value: Literal["elue_score", "mean_best_performance"]
    tasks: list[str]
    rows: list[LeaderboardRow]


class TaskInfo(_Out):
    name: str
    description: str
    metric: str
    kind: str
    labels: list[str] | None
    split_sizes: dict[str, int]


class BaselineCurve(_Out):
    submission_id: int
    name: str
    points: list[tuple[float, float]]  # (MFLOPs, performance)


class SeriesPoint(_Out):
    mflops: float
    performance: float
    file: str


class Series(_Out):
    id: int
    name: str
    origin: Literal["measured", "reported"]
    params_m: float | None
    score: float | None
    is_baseline: bool
    points: list[SeriesPoint]


class ParetoPoint(_Out):
    mflops: float
    performance: float
    name: str


class TaskTableRow(_Out):
    id: int
    name: str
    origin: Literal["measured", "reported"]
    params_m: float | None
    score: float | None
    points: int
    best: float | None


class TaskView(_Out):
    task: str
    series: list[Series]
    baseline: BaselineCurve | None
    pareto: list[ParetoPoint]
    table: list[TaskTableRow]


class ResultPoint(_Out):
    file: str
    mflops: float
    performance: float
    metrics: dict[str, float]
    examples: int | None


class TaskSummary(_Out):
    elue_score: float | None
    score_source: Literal["computed", "reported", "none"]
    params_m: float | None
    best_performance: float | None


class TaskResult(TaskSummary):
    points: list[ResultPoint]


class _ModelBase(_Out):
    id: int
    name: str
    origin: Literal["measured", "reported"]
    owner: str | None
    paper_url: str
    code_url: str
    description: str
    params_m: float | None
    elue_score: float | None
    complete: bool
    baseline_for: list[str]
    created_at: str


class ModelSummary(_ModelBase):
    tasks: dict[str, TaskSummary]


class ModelResult(_ModelBase):
    tasks: dict[str, TaskResult]


class Results(_Out):
    baselines: dict[str, BaselineCurve]
    models: list[ModelResult]


class SubmissionOut(_Out):
    id: int
    name: str
    origin: Literal["measured", "reported"]
    status: Literal["queued", "running", "scored", "failed", "deleted"]
    public: bool
    hidden: bool
    paper_url: str | None
    code_url: str | None
    description: str | None
    params_m: float | None
    created_at: str | None
    finished_at: str | None
    attempts: int
    error: str | None
    url: str
    log: str | None = None  # the owner's (and the admins') only
    notice: str | None = None  # to the owner, while queued or running: no scoring worker is at work
    result: ModelResult | None = None  # a scored entry's points and scores


class TokenCreated(_Out):
    token: str  # shown once: the site keeps only its SHA-256
    id: int
    name: str
    user: str


class Limits(_Out):
    daily: int
    monthly: int


class Me(_Out):
    username: str
    is_admin: bool
    limits: Limits


class BaselineSet(_Out):
    task: str
    submission_id: int


class HiddenSet(_Out):
    id: int
    hidden: bool


_WHY = {
    400: "Refused: the message says why",
    401: "No user: log in or send a valid API token",
    403: "Not allowed (admins only), or the session's CSRF token is missing or wrong",
    404: "No such entry, or not one you may see",
    409: "In conflict with another entry (a taken name, a baseline)",
    413: "Request body too large: an upload over the upload limit (64 MB by default), any other body over 1 MB",
    429: "Too many submissions, sign-ups or failed log-ins: try later",
}


def errors(*codes: int, why: dict[int, str] | None = None) -> dict:
    """`responses=` of a route: the refusals it may answer, each a `{"detail": ...}`; `why` words a code for this
    route where the general words would mislead (an unknown track is no "entry you may not see")."""
    why = why or {}
    return {c: {"model": ErrorDetail, "description": why.get(c, _WHY[c])} for c in codes}
