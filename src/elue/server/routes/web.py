"""The website's pages (Jinja2 templates in ../templates). Forms carry the session's CSRF token."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from elue.scoring import BaselineError, validate_points
from elue.tasks import TASK_NAMES, TASKS, get_task

from .. import service
from ..api_docs import endpoints, schemas
from ..board import (
    TRACKS,
    apply_scores,
    load_models,
    natural_order,
    rank,
    task_view,
    visible_condition,
)
from ..db import (
    DELETED,
    SCORED,
    ApiToken,
    Baseline,
    Submission,
    User,
    scoring_is_stalled,
    waits_for_a_worker,
)
from ..deps import MAX_ID, Ctx, Download, RowId, get_ctx, throttled_authenticate
from ..formats import params_text
from ..service import ServiceError
from ..storage import UploadError
from .api import SortColumn, SortOrder, read_limited

router = APIRouter(include_in_schema=False)

DOWNLOADABLE = ("train.tsv", "dev.tsv", "test.tsv", "train.tsv.gz", "dev.tsv.gz", "test.tsv.gz")


def render(ctx: Ctx, name: str, status_code: int = 200, **context) -> HTMLResponse:
    context.setdefault("user", ctx.user)
    context["ctx"] = ctx
    resp = ctx.st.templates.TemplateResponse(ctx.request, name, context, status_code=status_code)
    return ctx.apply(resp)


def redirect(ctx: Ctx, url: str) -> RedirectResponse:
    return ctx.apply(RedirectResponse(url, status_code=303))


def script_json(data) -> str:  # noqa: ANN001
    """JSON safe inside <script>: a model called "</script><script>..." stays data."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def safe_next(url: str) -> str:
    """Only same-site paths after log-in (no //host, no backslash tricks)."""
    if (
        url.startswith("/")
        and not url.startswith("//")
        and "\\" not in url
        and "\r" not in url
        and "\n" not in url
    ):
        return url
    return "/account"


def need_login(ctx: Ctx) -> User:
    if ctx.user is None:
        raise HTTPException(401, "log in first")
    return ctx.user


# ------------------------------------------------------------------ public pages
@router.get("/", response_class=HTMLResponse)
def home(ctx: Ctx = Depends(get_ctx)):
    board = ctx.st.board.get()
    top = rank(board, "elue")[:5]
    return render(ctx, "home.html", top=top, n_models=len(board.models))


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard(
    track: str = "elue",
    sort: SortColumn = SortColumn.rank,
    order: SortOrder | None = None,
    ctx: Ctx = Depends(get_ctx),
):
    if track not in TRACKS:
        raise HTTPException(404, f"unknown track {track!r}")
    sort = sort.value
    if order is None:
        order = natural_order(sort)
    board = ctx.st.board.get()
    rows = rank(board, track, sort, order == "desc")
    return render(ctx, "leaderboard.html", rows=rows, track=track, tracks=TRACKS, sort=sort, order=order)


@router.get("/tasks/{task}", response_class=HTMLResponse)
def task_page(task: str, ctx: Ctx = Depends(get_ctx)):
    try:
        t = get_task(task)
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    view = task_view(ctx.st.board.get(), t.name)
    # the chart's hover text writes params as the table does (task.js wrote one decimal: a 0.0054M model read 0.0M)
    chart = {**view, "series": [{**s, "params_text": params_text(s["params_m"])} for s in view["series"]]}
    # the table of every point marks the Pareto front's points in text (the chart's rings are not for everyone)
    front = {(p["mflops"], p["performance"]) for p in view["pareto"]}
    return render(ctx, "task.html", task=t, view=view, view_json=script_json(chart), front=front)


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(model_id: RowId, ctx: Ctx = Depends(get_ctx)):
    sub = ctx.db.get(Submission, model_id)
    if sub is None or not service.can_view(ctx.user, sub):
        raise HTTPException(404, "no such model")
    board = ctx.st.board.get()
    m = board.by_id.get(sub.id)
    if m is None and sub.status == SCORED:  # a queued, running or failed entry has no results yet
        found = load_models(ctx.db, Submission.id == sub.id)
        m = found[0] if found else None
        if m is not None:
            apply_scores([m], {t: b["points"] for t, b in board.baselines.items()})
    owner = ctx.user is not None and (ctx.user.is_admin or ctx.user.id == sub.owner_id)
    return render(
        ctx, "model.html", sub=sub, m=m, is_owner=owner, owner_name=sub.owner.username if sub.owner else None
    )


@router.get("/api/docs", response_class=HTMLResponse)
def api_docs(ctx: Ctx = Depends(get_ctx)):
    spec = ctx.request.app.openapi()
    return render(ctx, "api_docs.html", endpoints=endpoints(spec), models=schemas(spec))


@router.get("/datasets", response_class=HTMLResponse)
def datasets(ctx: Ctx = Depends(get_ctx)):
    data_dir = ctx.st.settings.data_dir
    avail = {}
    for name in TASK_NAMES:
        files = []
        if data_dir is not None:
            for f in DOWNLOADABLE:
                p = data_dir / name / f
                if p.is_file():
                    files.append({"name": f, "size": p.stat().st_size})
        avail[name] = files
    return render(ctx, "datasets.html", avail=avail)


@router.get("/datasets/{task}/{filename}")
def dataset_file(task: str, filename: str, ctx: Ctx = Depends(get_ctx)):
    # only the whitelisted split files; the answer keys (test_labels.tsv) are never served
    if task not in TASK_NAMES or filename not in DOWNLOADABLE or ctx.st.settings.data_dir is None:
        raise HTTPException(404, "no such file")
    path = ctx.st.settings.data_dir / task / filename
    if not path.is_file():
        raise HTTPException(404, "no such file")
    if filename.startswith("test") and not test_file_is_unlabelled(path, TASKS[task]):
        raise HTTPException(404, "no such file")
    media = "application/gzip" if filename.endswith(".gz") else "text/tab-separated-values"
    return Download(path, media_type=media, filename=f"{task}-{filename}")


def test_file_is_unlabelled(path, task) -> bool:  # noqa: ANN001
    """A test file is served only if its header is the task's unlabelled test header."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        header = [c.strip() for c in f.readline().rstrip("\n").split("\t")]
    return header == list(task.test_columns)


@router.get("/docs")
def docs_moved():
    """FastAPI sites keep their API docs at /docs; this one's are at /api/docs (rendered here, no CDN)."""
    return RedirectResponse("/api/docs", status_code=308)


@router.get("/guide", response_class=HTMLResponse)
def guide(ctx: Ctx = Depends(get_ctx)):
    return render(ctx, "guide.html")


@router.get("/score", response_class=HTMLResponse)
def score(ctx: Ctx = Depends(get_ctx)):
    return render(ctx, "score.html")


# ------------------------------------------------------------------ accounts
@router.get("/signup", response_class=HTMLResponse)
def signup_form(ctx: Ctx = Depends(get_ctx)):
    return render(ctx, "signup.html", error=None)


@router.post("/signup", response_class=HTMLResponse)
def signup(
    username: str = Form(...),
    password: str = Form(...),
    password2: str = Form(...),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    ctx.check_csrf(csrf)
    try:
        if password != password2:
            raise ServiceError("the two passwords differ")
        address = ctx.request.client.host if ctx.request.client else ""
        user = service.create_user(ctx.db, username, password, address=address, settings=ctx.st.settings)
    except ServiceError as e:
        return render(ctx, "signup.html", status_code=e.status, error=str(e), username=username)
    ctx.login(user)
    return redirect(ctx, "/account")


@router.get("/login", response_class=HTMLResponse)
def login_form(next: str = "/account", ctx: Ctx = Depends(get_ctx)):
    return render(ctx, "login.html", error=None, next=next)


@router.post("/login", response_class=HTMLResponse)
def login(
    username: str = Form(...),
    password: str = Form(...),
    next: str = Form("/account"),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    ctx.check_csrf(csrf)
    try:
        user = throttled_authenticate(ctx, username, password)
    except ServiceError as e:
        return render(ctx, "login.html", status_code=e.status, error=str(e), next=next, username=username)
    if user is None:
        return render(
            ctx,
            "login.html",
            status_code=401,
            error="wrong user name or password",
            next=next,
            username=username,
        )
    ctx.login(user)
    return redirect(ctx, safe_next(next))


@router.post("/logout")
def logout(csrf: str = Form(""), ctx: Ctx = Depends(get_ctx)):
    ctx.check_csrf(csrf)
    ctx.logout()
    return redirect(ctx, "/")


def _account(ctx: Ctx, user: User, status_code: int = 200, **context) -> HTMLResponse:
    subs = service.own_submissions(ctx.db, user)
    tokens = ctx.db.scalars(select(ApiToken).where(ApiToken.user_id == user.id)).all()
    context.setdefault("new_token", None)
    return render(ctx, "account.html", status_code=status_code, subs=subs, tokens=tokens, **context)


@router.get("/account", response_class=HTMLResponse)
def account(password: str = "", ctx: Ctx = Depends(get_ctx)):
    if ctx.user is None:
        return redirect(ctx, "/login?next=/account")
    return _account(ctx, ctx.user, password_changed=password == "changed")


@router.post("/account/password", response_class=HTMLResponse)
def change_password(
    current: str = Form(...),
    new: str = Form(...),
    new2: str = Form(...),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    """A new password (there was no way to change one): the current one is checked (and throttled as a log-in);
    every other session of the user ends, this one goes on with a fresh session (a new CSRF token)."""
    ctx.check_csrf(csrf)
    user = need_login(ctx)
    try:
        if new != new2:
            raise ServiceError("the two new passwords differ")
        if throttled_authenticate(ctx, user.username, current) is None:
            raise ServiceError("the current password is wrong", 401)
        service.change_password(ctx.db, user, new)
    except ServiceError as e:
        return _account(ctx, user, status_code=e.status, password_error=str(e))
    ctx.login(user)
    return redirect(ctx, "/account?password=changed")


@router.get("/account/tokens")
def tokens_page(ctx: Ctx = Depends(get_ctx)):
    return redirect(
        ctx, "/account"
    )  # the form posts here; opened directly, the account page lists the tokens


@router.post("/account/tokens", response_class=HTMLResponse)
def new_token(name: str = Form(""), csrf: str = Form(""), ctx: Ctx = Depends(get_ctx)):
    ctx.check_csrf(csrf)
    user = need_login(ctx)
    _, token = service.create_token(ctx.db, user, name)
    return _account(ctx, user, new_token=token)


@router.post("/account/tokens/{token_id}/delete")
def delete_token(token_id: RowId, csrf: str = Form(""), ctx: Ctx = Depends(get_ctx)):
    ctx.check_csrf(csrf)
    service.delete_token(ctx.db, need_login(ctx), token_id)
    return redirect(ctx, "/account")


# ------------------------------------------------------------------ submissions
@router.get("/submit", response_class=HTMLResponse)
def submit_form(ctx: Ctx = Depends(get_ctx)):
    if ctx.user is None:
        return redirect(ctx, "/login?next=/submit")
    return render(ctx, "submit.html", error=None, form={})


@router.post("/submit", response_class=HTMLResponse)
async def submit(
    file: UploadFile = File(...),
    name: str = Form(...),
    public: str = Form(""),
    paper_url: str = Form(""),
    code_url: str = Form(""),
    description: str = Form(""),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    ctx.check_csrf(csrf)
    user = need_login(ctx)
    form = {
        "name": name,
        "paper_url": paper_url,
        "code_url": code_url,
        "description": description,
        "public": bool(public),
    }
    try:
        data = await read_limited(file, ctx.st.settings.max_upload_bytes)
        sub = await run_in_threadpool(
            service.submit_zip,
            ctx.db,
            ctx.st.settings,
            user,
            data,
            name=name,
            public=bool(public),
            paper_url=paper_url,
            code_url=code_url,
            description=description,
        )
    except (ServiceError, UploadError) as e:
        status = getattr(e, "status", 400)
        return render(ctx, "submit.html", status_code=status, error=str(e), form=form)
    return redirect(ctx, f"/submissions/{sub.id}")


def parse_points_text(text: str) -> dict:
    """Reported numbers typed into the form: one line per point, `task, MFLOPs, performance`, or
    `task, score=<ELUE score>` for a dataset where only the score is known."""
    tasks: dict[str, dict] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.replace("\t", ",").split(",")]
        try:
            task = get_task(parts[0]).name
        except KeyError as e:
            raise ServiceError(f"line {n}: {e.args[0]}") from None
        spec = tasks.setdefault(task, {"points": [], "elue_score": None})
        try:
            if len(parts) == 2 and parts[1].lower().startswith("score="):
                spec["elue_score"] = float(parts[1].split("=", 1)[1])
            elif len(parts) == 3:
                spec["points"].append({"mflops": float(parts[1]), "performance": float(parts[2])})
            else:
                raise ValueError
        except ValueError:
            raise ServiceError(f"line {n}: expected 'task, MFLOPs, performance' or 'task, score=X'") from None
    return tasks


@router.post("/submit/reported", response_class=HTMLResponse)
def submit_reported(
    name: str = Form(...),
    params_m: str = Form(...),
    paper_url: str = Form(...),
    numbers: str = Form(...),
    public: str = Form(""),
    code_url: str = Form(""),
    description: str = Form(""),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    ctx.check_csrf(csrf)
    user = need_login(ctx)
    form = {
        "name": name,
        "paper_url": paper_url,
        "params_m": params_m,
        "numbers": numbers,
        "code_url": code_url,
        "description": description,
        "public": bool(public),
    }
    try:
        sub = service.submit_reported(
            ctx.db,
            ctx.st.settings,
            user,
            name=name,
            params_m=params_m,
            paper_url=paper_url,
            tasks=parse_points_text(numbers),
            public=bool(public),
            code_url=code_url,
            description=description,
        )
    except ServiceError as e:
        return render(ctx, "submit.html", status_code=e.status, error=str(e), form=form, reported=True)
    ctx.st.board.invalidate()
    return redirect(ctx, f"/submissions/{sub.id}")


@router.get("/submissions/{sub_id}", response_class=HTMLResponse)
def submission_page(sub_id: RowId, ctx: Ctx = Depends(get_ctx)):
    if ctx.user is None:
        return redirect(ctx, f"/login?next=/submissions/{sub_id}")
    return _submission_page(ctx, service.get_owned(ctx.db, ctx.user, sub_id))


def _submission_page(ctx: Ctx, sub, status_code: int = 200, **extra) -> HTMLResponse:  # noqa: ANN001
    stalled = waits_for_a_worker(ctx.db, sub)
    return render(ctx, "submission.html", status_code=status_code, sub=sub, stalled=stalled, **extra)


@router.post("/submissions/{sub_id}/edit", response_class=HTMLResponse)
def submission_edit(
    sub_id: RowId,
    name: str = Form(...),
    paper_url: str = Form(""),
    code_url: str = Form(""),
    description: str = Form(""),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    """The entry's name, links and description (what PATCH /api/submissions/<id> changes besides `public`)."""
    ctx.check_csrf(csrf)
    user = need_login(ctx)
    form = {"name": name, "paper_url": paper_url, "code_url": code_url, "description": description}
    try:
        service.update_submission(ctx.db, user, sub_id, **form)
    except ServiceError as e:
        ctx.db.rollback()  # a refused change leaves nothing half-applied in the session: the page shows the entry
        sub = service.get_owned(ctx.db, user, sub_id)
        return _submission_page(ctx, sub, status_code=e.status, edit_error=str(e), form=form)
    ctx.st.board.invalidate()
    return redirect(ctx, f"/submissions/{sub_id}")


@router.post("/submissions/{sub_id}/{action}")
def submission_action(sub_id: RowId, action: str, csrf: str = Form(""), ctx: Ctx = Depends(get_ctx)):
    ctx.check_csrf(csrf)
    user = need_login(ctx)
    if action == "publish":
        service.update_submission(ctx.db, user, sub_id, public=True)
    elif action == "unpublish":
        service.update_submission(ctx.db, user, sub_id, public=False)
    elif action == "delete":
        service.delete_submission(ctx.db, ctx.st.settings, user, sub_id)
        ctx.st.board.invalidate()
        return redirect(ctx, "/account")
    else:
        raise HTTPException(404, "unknown action")
    ctx.st.board.invalidate()
    return redirect(ctx, f"/submissions/{sub_id}")


# ------------------------------------------------------------------ admin
@router.get("/admin", response_class=HTMLResponse)
def admin(ctx: Ctx = Depends(get_ctx)):
    if ctx.user is None:  # as /account and /submit: log in, then back here
        return redirect(ctx, "/login?next=/admin")
    service.require_admin(ctx.user)
    subs = ctx.db.scalars(
        select(Submission).where(Submission.status != DELETED).order_by(Submission.id.desc())
    ).all()
    choices = {b.task: b.submission_id for b in ctx.db.scalars(select(Baseline))}
    models = load_models(ctx.db, visible_condition())  # only these may be a baseline
    candidates = {t: [m for m in models if _scores_as_baseline(m, t)] for t in TASK_NAMES}
    stalled = scoring_is_stalled(ctx.db)
    return render(
        ctx, "admin.html", subs=subs, choices=choices, candidates=candidates, tasks=TASKS, stalled=stalled
    )


def _scores_as_baseline(m, task: str) -> bool:  # noqa: ANN001
    """The entry has a `task` curve that can score (positive MFLOPs, no two points at the same MFLOPs): the
    check `service.set_baseline` makes, so the admin page offers no choice that would be refused."""
    e = m.tasks.get(task)
    if e is None or not e.points:
        return False
    try:
        validate_points([(p["mflops"], p["performance"]) for p in e.points])
    except BaselineError:
        return False
    return True


@router.post("/admin/baseline")
def admin_baseline(
    task: str = Form(...),
    submission_id: int = Form(..., ge=1, le=MAX_ID),
    csrf: str = Form(""),
    ctx: Ctx = Depends(get_ctx),
):
    ctx.check_csrf(csrf)
    service.require_admin(ctx.user)
    service.set_baseline(ctx.db, task, submission_id)
    ctx.st.board.invalidate()
    return redirect(ctx, "/admin")


@router.post("/admin/hide/{sub_id}")
def admin_hide(sub_id: RowId, hidden: str = Form("1"), csrf: str = Form(""), ctx: Ctx = Depends(get_ctx)):
    ctx.check_csrf(csrf)
    service.require_admin(ctx.user)
    service.set_hidden(ctx.db, sub_id, hidden == "1")
    ctx.st.board.invalidate()
    return redirect(ctx, "/admin")
