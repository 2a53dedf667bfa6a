"""The JSON API (documented at /api/docs). Reads are open for public results; writes need a user:
`Authorization: Bearer <token>`, or the site's session cookie plus an `X-CSRF-Token` header."""

from __future__ import annotations

import base64
import csv
import enum
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, Strict

from elue.tasks import TASK_NAMES, TASKS, get_task

from .. import api_models as out
from .. import service
from ..api_models import errors
from ..board import TRACKS, _finite, load_models, natural_order, rank, task_view
from ..db import SCORED, Submission, User, waits_for_a_worker
from ..deps import MAX_ID, Ctx, RowId, get_ctx, state, throttled_authenticate
from ..service import ServiceError

router = APIRouter(prefix="/api", tags=["api"])


# a 401 names the scheme it wants (RFC 9110 §11.6.1: clients and their auth handlers look for it)
BEARER = {"www-authenticate": "Bearer"}
BAD_BEARER = {"www-authenticate": 'Bearer error="invalid_token"'}


def need_user(ctx: Ctx) -> User:
    _refuse_bad_token(ctx)
    user = ctx.user
    if user is None:
        raise HTTPException(401, "log in or send an API token (Authorization: Bearer ...)", headers=BEARER)
    return user


def _refuse_bad_token(ctx: Ctx) -> None:
    """A 401 for an invalid (revoked, mistyped) token where the answer would otherwise depend on who asks: a
    script polling its private submission with a revoked token was told it no longer exists (404), and
    `elue submit` said "gone from the server (deleted meanwhile?)"."""
    if ctx.user is None and ctx.bad_token:
        raise HTTPException(401, "invalid API token", headers=BAD_BEARER)


def need_writer(ctx: Ctx, request: Request) -> User:
    user = need_user(ctx)
    ctx.check_csrf(request.headers.get("x-csrf-token"))
    return user


STALLED_NOTICE = (
    "no scoring worker is at work on this site right now: the submission waits and is scored once one runs; "
    "if this lasts, tell the site's admin"
)


def _notice(ctx: Ctx, sub: Submission) -> str | None:
    """What the submission page says when no worker looks for work."""
    return STALLED_NOTICE if waits_for_a_worker(ctx.db, sub) else None


def submission_dict(sub: Submission, *, with_log: bool, board_model=None, notice: str | None = None) -> dict:  # noqa: ANN001
    d = {
        "id": sub.id,
        "name": sub.name,
        "origin": sub.origin,
        "status": sub.status,
        "public": sub.public,
        "hidden": sub.hidden,
        "paper_url": sub.paper_url,
        "code_url": sub.code_url,
        "description": sub.description,
        "params_m": _finite(sub.params_m),
        "created_at": sub.created_at.isoformat() if sub.created_at else None,
        "finished_at": sub.finished_at.isoformat() if sub.finished_at else None,
        "attempts": sub.attempts,
        "error": sub.error or None,
        "url": f"/models/{sub.id}",
    }
    if with_log:
        d["log"] = sub.log
    if notice:
        d["notice"] = notice
    if board_model is not None:
        d["result"] = board_model.to_dict()
    return d


def _scored_model(ctx: Ctx, sub: Submission):  # noqa: ANN202
    """The submission's result with scores against the current baselines."""
    board = ctx.st.board.get()
    m = board.by_id.get(sub.id)
    if m is None and sub.status != SCORED:  # queued, running or failed: no results yet
        return None
    if m is None:
        models = load_models(ctx.db, Submission.id == sub.id)
        if not models:
            return None
        m = models[0]
        from ..board import apply_scores

        apply_scores([m], {t: b["points"] for t, b in board.baselines.items()})
    return m


# ------------------------------------------------------------------ public results
# the leaderboard's sort columns and orders: anything else is a 422 (an unknown column or order used to be
# ignored, so a script asking for sort=score got the board unsorted without a word)
SortColumn = enum.Enum(
    "SortColumn", [(c, c) for c in ("rank", "name", "value", "params", *TASK_NAMES)], type=str
)
SortOrder = Literal["asc", "desc"]


@router.get(
    "/leaderboard",
    summary="One leaderboard track",
    responses={200: {"model": out.Leaderboard}, **errors(404, why={404: "No such track"})},
)
def leaderboard(
    track: str = "elue",
    sort: SortColumn | None = None,
    order: SortOrder | None = None,
    request: Request = None,
):
    """`sort`: rank, name, value, params or a task; `order`: asc or desc (default: rank and name
    ascending, the others descending). Rows without a value stay at the bottom in both orders."""
    if track not in TRACKS:
        raise HTTPException(404, f"unknown track {track!r}; tracks: {', '.join(TRACKS)}")
    sort = sort.value if sort is not None else None
    if order is None:
        order = natural_order(sort)
    board = state(request).board.get()
    rows = rank(board, track, sort, order == "desc")
    return {
        "track": track,
        "title": TRACKS[track],
        "value": "elue_score" if track == "elue" else "mean_best_performance",
        "tasks": list(TASK_NAMES),
        "rows": [
            {
                "rank": r["rank"],
                "id": r["model"].id,
                "name": r["model"].name,
                "origin": r["model"].origin,
                "params_m": r["model"].params_m,
                "value": r["value"],
                "complete": r["complete"],
                "cells": r["cells"],
            }
            for r in rows
        ],
    }


@router.get("/tasks", summary="The six datasets", responses={200: {"model": list[out.TaskInfo]}})
def tasks():
    return [
        {
            "name": t.name,
            "description": t.description,
            "metric": t.metric,
            "kind": t.kind,
            "labels": list(t.labels) if t.labels else None,
            "split_sizes": t.split_sizes,
        }
        for t in TASKS.values()
    ]


@router.get(
    "/tasks/{task}",
    summary="Every public model's points on a dataset, the baseline and the Pareto front",
    responses={200: {"model": out.TaskView}, **errors(404, why={404: "No such dataset"})},
)
def task_detail(task: str, request: Request):
    try:
        name = get_task(task).name
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    return task_view(state(request).board.get(), name)


@router.get("/models", summary="All public models", responses={200: {"model": list[out.ModelSummary]}})
def models(request: Request):
    return [m.to_dict(with_points=False) for m in state(request).board.get().models]


@router.get(
    "/models/{model_id}",
    summary="One model: every point, per-dataset scores",
    responses={200: {"model": out.SubmissionOut}, **errors(401, 404)},
)
def model_detail(model_id: RowId, ctx: Ctx = Depends(get_ctx)):
    """A public entry for anyone; a private one for its owner (an invalid token is then a 401)."""
    sub = ctx.db.get(Submission, model_id)
    if sub is None or not service.can_view(ctx.user, sub):
        _refuse_bad_token(ctx)  # a revoked token's owner was told "no such model" about their own entry
        raise HTTPException(404, "no such model")
    m = _scored_model(ctx, sub)
    return submission_dict(sub, with_log=False, board_model=m)


def _result_rows(board) -> list[dict]:  # noqa: ANN001
    rows = []
    for m in board.models:
        for task in TASK_NAMES:
            e = m.tasks.get(task)
            if e is None:
                continue
            base = {
                "model_id": m.id,
                "model": m.name,
                "origin": m.origin,
                "owner": m.owner or "",
                "params_m": e.params_m if e.params_m is not None else m.params_m,
                "task": task,
                "task_elue_score": e.score,
                "score_source": e.score_source,
                "model_elue_score": m.overall,
                "paper_url": m.paper_url,
            }
            if not e.points:
                rows.append({**base, "file": "", "mflops": None, "performance": None, "metrics": ""})
            for p in e.points:
                metrics = ";".join(f"{k}={v:.4f}" for k, v in sorted(p["metrics"].items()))
                rows.append(
                    {
                        **base,
                        "file": p["file"],
                        "mflops": p["mflops"],
                        "performance": p["performance"],
                        "metrics": metrics,
                    }
                )
    return rows


RESULT_COLUMNS = [
    "model_id",
    "model",
    "origin",
    "owner",
    "params_m",
    "task",
    "file",
    "mflops",
    "performance",
    "metrics",
    "task_elue_score",
    "score_source",
    "model_elue_score",
    "paper_url",
]


@router.get(
    "/results.json",
    summary="Every public result (one object per model, with all points)",
    responses={200: {"model": out.Results}},
)
def results_json(request: Request):
    board = state(request).board.get()
    return JSONResponse(
        {"baselines": board.baselines, "models": [m.to_dict() for m in board.models]},
        headers={"content-disposition": 'inline; filename="elue-results.json"'},
    )


class CsvResponse(Response):
    media_type = "text/csv"


def csv_cell(v):  # noqa: ANN001, ANN201
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or tab / CR) is prefixed with
    an apostrophe (numbers are written as they are)."""
    if v is None:
        return ""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


@router.get(
    "/results.csv",
    summary="Every public result as CSV (one row per operating point)",
    response_class=CsvResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def results_csv(request: Request):
    board = state(request).board.get()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in _result_rows(board):
        w.writerow({k: csv_cell(row[k]) for k in RESULT_COLUMNS})
    return CsvResponse(
        buf.getvalue(),
        headers={"content-disposition": 'attachment; filename="elue-results.csv"'},
    )


# ------------------------------------------------------------------ accounts
class JsonBody(BaseModel):
    """A JSON request body: a field it does not have is a 422 naming it (`{"publc": true}` was a 200 that
    changed nothing, and `"elue_scor"` in a reported task had its score computed instead of the paper's)."""

    model_config = ConfigDict(extra="forbid")


class TokenRequest(JsonBody):
    username: str | None = None
    password: str | None = None
    name: str = ""


@router.post(
    "/tokens",
    summary="Create an API token (log in with username/password or a session)",
    responses={
        200: {"model": out.TokenCreated},
        **errors(
            400,
            401,
            403,
            409,
            413,
            429,
            why={
                400: "A token name over 100 characters",
                401: "Wrong user name or password, or no session",
                403: "A session without its CSRF token",
                409: "The user holds the most tokens allowed (50): revoke one first",
                429: "Too many failed log-ins for this user name from this address: try later",
            },
        ),
    },
)
def create_token(request: Request, body: TokenRequest | None = None, ctx: Ctx = Depends(get_ctx)):
    """With `username` and `password` in the body, with HTTP Basic credentials (the body may then be left out:
    `curl -u name:password -X POST .../api/tokens`), or with a session and its CSRF token."""
    body = body or TokenRequest()
    user = None
    if body.username is not None:
        user = throttled_authenticate(ctx, body.username, body.password or "")
        if user is None:
            raise HTTPException(401, "wrong user name or password")
    else:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                raise HTTPException(401, "bad basic auth") from None
            user = throttled_authenticate(ctx, u, p)
            if user is None:
                raise HTTPException(401, "wrong user name or password")
        else:
            user = need_writer(ctx, request)
    row, token = service.create_token(ctx.db, user, body.name)
    return {"token": token, "id": row.id, "name": row.name, "user": user.username}


@router.get(
    "/me",
    summary="Who the token belongs to, and the submission limits",
    responses={200: {"model": out.Me}, **errors(401)},
)
def me(ctx: Ctx = Depends(get_ctx)):
    user = need_user(ctx)
    st = ctx.st.settings
    return {
        "username": user.username,
        "is_admin": user.is_admin,
        "limits": {"daily": st.daily_limit, "monthly": st.monthly_limit},
    }


# ------------------------------------------------------------------ submissions
@router.post(
    "/submissions",
    status_code=202,
    summary="Upload a submission (zip in the toolkit's layout)",
    responses={202: {"model": out.SubmissionOut}, **errors(400, 401, 403, 409, 413, 429)},
)
async def submit(
    request: Request,
    file: UploadFile = File(..., description="zip: model.py, <task>/*.tsv ..."),
    name: str = Form(...),
    public: bool = Form(False),
    paper_url: str = Form(""),
    code_url: str = Form(""),
    description: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    user = need_writer(ctx, request)
    data = await read_limited(file, ctx.st.settings.max_upload_bytes)
    from starlette.concurrency import run_in_threadpool

    sub = await run_in_threadpool(
        service.submit_zip,
        ctx.db,
        ctx.st.settings,
        user,
        data,
        name=name,
        public=public,
        paper_url=paper_url,
        code_url=code_url,
        description=description,
    )
    notice = await run_in_threadpool(_notice, ctx, sub)  # a database query: not on the event loop
    return submission_dict(sub, with_log=True, notice=notice)


async def read_limited(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(f"upload too large: the limit is {limit // (1024 * 1024)} MB", 413)
    return data


# JSON numbers only: pydantic's lax mode would read `true` as 1.0 and "85" as 85.0
Number = Annotated[float, Strict()]
# JSON true/false only: lax mode would read "yes", "off", "1" and 0 as booleans, so a mistyped body
# would publish, unpublish or hide an entry instead of being refused
Flag = Annotated[bool, Strict()]


class ReportedPoint(JsonBody):
    mflops: Number
    performance: Number
    file: str = ""


class ReportedTask(JsonBody):
    points: list[ReportedPoint] = Field(default_factory=list)
    elue_score: Number | None = None
    params_m: Number | None = None


class ReportedEntry(JsonBody):
    name: str
    params_m: Number
    paper_url: str
    code_url: str = ""
    description: str = ""
    public: Flag = False
    tasks: dict[str, ReportedTask]


@router.post(
    "/submissions/reported",
    status_code=201,
    summary="Add a reported entry (numbers from a paper)",
    responses={201: {"model": out.SubmissionOut}, **errors(400, 401, 403, 409, 413, 429)},
)
def submit_reported(body: ReportedEntry, request: Request, ctx: Ctx = Depends(get_ctx)):
    user = need_writer(ctx, request)
    sub = service.submit_reported(
        ctx.db,
        ctx.st.settings,
        user,
        name=body.name,
        params_m=body.params_m,
        paper_url=body.paper_url,
        code_url=body.code_url,
        description=body.description,
        public=body.public,
        tasks={k: v.model_dump() for k, v in body.tasks.items()},
    )
    ctx.st.board.invalidate()
    return submission_dict(sub, with_log=True)


@router.get(
    "/submissions",
    summary="Your submissions",
    responses={200: {"model": list[out.SubmissionOut]}, **errors(401)},
)
def my_submissions(ctx: Ctx = Depends(get_ctx)):
    user = need_user(ctx)
    subs = service.own_submissions(ctx.db, user)
    return [submission_dict(s, with_log=False) for s in subs]


@router.get(
    "/submissions/{sub_id}",
    summary="A submission's status, log (owner) and result",
    responses={200: {"model": out.SubmissionOut}, **errors(401, 404)},
)
def get_submission(sub_id: RowId, ctx: Ctx = Depends(get_ctx)):
    """Without a token: a public entry as anyone sees it; an invalid token is a 401, as on /api/submissions."""
    _refuse_bad_token(ctx)
    sub = ctx.db.get(Submission, sub_id)
    user = ctx.user
    if sub is None or not service.can_view(user, sub):
        raise HTTPException(404, "no such submission")
    owner = user is not None and (user.is_admin or user.id == sub.owner_id)
    m = _scored_model(ctx, sub) if sub.status == "scored" else None
    return submission_dict(sub, with_log=owner, board_model=m, notice=_notice(ctx, sub) if owner else None)


class SubmissionPatch(JsonBody):
    name: str | None = None
    public: Flag | None = None
    paper_url: str | None = None
    code_url: str | None = None
    description: str | None = None


@router.patch(
    "/submissions/{sub_id}",
    summary="Rename, publish or unpublish your submission",
    responses={200: {"model": out.SubmissionOut}, **errors(400, 401, 403, 404, 409, 413)},
)
def patch_submission(sub_id: RowId, body: SubmissionPatch, request: Request, ctx: Ctx = Depends(get_ctx)):
    user = need_writer(ctx, request)
    sub = service.update_submission(ctx.db, user, sub_id, **body.model_dump())
    ctx.st.board.invalidate()
    return submission_dict(sub, with_log=True)


@router.delete(
    "/submissions/{sub_id}",
    status_code=204,
    summary="Delete your submission",
    responses=errors(401, 403, 404, 409, 413),
)
def delete_submission(sub_id: RowId, request: Request, ctx: Ctx = Depends(get_ctx)):
    user = need_writer(ctx, request)
    service.delete_submission(ctx.db, ctx.st.settings, user, sub_id)
    ctx.st.board.invalidate()
    return Response(status_code=204)


# ------------------------------------------------------------------ admin
class BaselineChoice(JsonBody):
    submission_id: Annotated[int, Strict()] = Field(ge=1, le=MAX_ID)  # not "5" or 5.0


@router.put(
    "/admin/baselines/{task}",
    summary="Admin: choose a dataset's baseline entry",
    responses={
        200: {"model": out.BaselineSet},
        **errors(400, 401, 403, 404, 409, 413, why={404: "No such dataset, or no such entry"}),
    },
)
def put_baseline(task: str, body: BaselineChoice, request: Request, ctx: Ctx = Depends(get_ctx)):
    service.require_admin(need_writer(ctx, request))
    try:
        name = get_task(task).name
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    service.set_baseline(ctx.db, name, body.submission_id)
    ctx.st.board.invalidate()
    return {"task": name, "submission_id": body.submission_id}


class HideChoice(JsonBody):
    hidden: Flag = True


@router.post(
    "/admin/submissions/{sub_id}/hide",
    summary="Admin: hide or show an entry",
    responses={200: {"model": out.HiddenSet}, **errors(401, 403, 404, 409, 413)},
)
def hide(sub_id: RowId, body: HideChoice, request: Request, ctx: Ctx = Depends(get_ctx)):
    service.require_admin(need_writer(ctx, request))
    sub = service.set_hidden(ctx.db, sub_id, body.hidden)
    ctx.st.board.invalidate()
    return {"id": sub.id, "hidden": sub.hidden}
