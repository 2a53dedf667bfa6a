"""The scoring queue's worker: a separate process that claims queued submissions from the database,
scores them with the toolkit (`elue.submission.evaluate_submission`, which runs model.py in its
sandbox) and stores the result.

Exactly once, across crashes: a job is claimed by an atomic compare-and-set on its row (status +
lease owner + lease expiry); the worker renews the lease while it scores; the result and the
`scored` status are written in one transaction that only succeeds while this worker still holds the
lease. A killed worker's job becomes claimable again when its lease runs out (at once, when the dead
worker ran on the same host), and is retried up to `max_attempts` times. A worker stopped while it scores
(SIGTERM, Ctrl-C: a restart of the service) kills the scoring process and gives the job back at once, its
attempt not counted.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import datetime as dt
import errno
import importlib
import inspect
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import sessionmaker

from elue.costs.sandbox import descendant_pids
from elue.scoring import Baseline
from elue.tasks import TASK_NAMES

from .board import baseline_choices, load_models, visible_condition
from .config import DEFAULT_EVALUATOR, Settings
from .db import (
    DELETED,
    FAILED,
    MEASURED,
    QUEUED,
    RUNNING,
    SCORED,
    WORKER_SEEN_EVERY_S,
    Point,
    Submission,
    TaskResult,
    bump_board_version,
    head_revision,
    note_worker_seen,
    open_database,
    schema_mismatch,
    utcnow,
)
from .service import ServiceError, check_name_free, lock_public_names
from .storage import scorable_tasks, submission_path

log = logging.getLogger("elue.server.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def load_evaluator(spec: str) -> Callable:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "evaluate_submission")


def _claimable(now: dt.datetime):
    return and_(
        Submission.origin == MEASURED,
        or_(
            Submission.status == QUEUED,
            and_(Submission.status == RUNNING, Submission.lease_expires_at < now),
        ),
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_dead_local_leases(sessions: sessionmaker) -> int:
    """Jobs held by a worker of this host whose process is gone: let their lease run out now."""
    host = socket.gethostname()
    n = 0
    with sessions() as s:
        rows = s.execute(
            select(Submission.id, Submission.lease_owner).where(
                Submission.status == RUNNING, Submission.lease_owner.like(f"{host}:%")
            )
        ).all()
        for sid, owner in rows:
            try:
                pid = int(owner.split(":")[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                n += s.execute(
                    update(Submission)
                    .where(
                        Submission.id == sid, Submission.lease_owner == owner, Submission.status == RUNNING
                    )
                    .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
                ).rowcount
        s.commit()
    return n


def clean_scoring_dir(settings: Settings, sessions: sessionmaker) -> None:
    """Remove the temporary files of jobs no worker scores (left by a killed worker: model.py copies)."""
    if not settings.scoring_dir.is_dir():
        return
    keys = [p.name for p in settings.scoring_dir.iterdir()]  # listed first: a listed job was claimed before
    with sessions() as s:
        running = set(
            s.scalars(
                select(Submission.storage_key).where(
                    Submission.status == RUNNING, Submission.storage_key.in_(keys)
                )
            )
        )
    for key in keys:
        if key not in running:
            shutil.rmtree(settings.scoring_dir / key, ignore_errors=True)


def claim(
    sessions: sessionmaker, settings: Settings, worker_id: str, skip: Collection[int] = ()
) -> int | None:
    """Atomically take the oldest claimable job but those in `skip`; None when the queue is empty."""
    now = utcnow()
    with sessions() as s:
        candidates = s.scalars(
            select(Submission.id)
            .where(_claimable(now), Submission.id.not_in(list(skip)))
            .order_by(Submission.created_at, Submission.id)
            .limit(5)
        ).all()
        for sid in candidates:
            res = s.execute(
                update(Submission)
                .where(Submission.id == sid, _claimable(now))
                .values(
                    status=RUNNING,
                    lease_owner=worker_id,
                    lease_expires_at=now + dt.timedelta(seconds=settings.lease_seconds),
                    attempts=Submission.attempts + 1,
                    started_at=now,
                )
            )
            s.commit()
            if res.rowcount == 1:
                return sid
    return None


class _Heartbeat(threading.Thread):
    def __init__(self, sessions: sessionmaker, settings: Settings, sid: int, worker_id: str) -> None:
        super().__init__(daemon=True)
        self.sessions, self.settings, self.sid, self.worker_id = sessions, settings, sid, worker_id
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stop.wait(self.settings.heartbeat_seconds):
            try:
                with self.sessions() as s:
                    res = s.execute(
                        update(Submission)
                        .where(
                            Submission.id == self.sid,
                            Submission.lease_owner == self.worker_id,
                            Submission.status == RUNNING,
                        )
                        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=self.settings.lease_seconds))
                    )
                    s.commit()
                if res.rowcount != 1:
                    self.lost = True
                    return
            except Exception as e:  # noqa: BLE001 - a database hiccup: try again at the next beat
                if _db_down(e):
                    log.warning("heartbeat: the database is unreachable (%s)", _first_line(e))
                else:
                    log.exception("heartbeat failed")


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 500:
            self.lines.append(self.format(record))


def _is_user_error(e: BaseException) -> bool:
    try:
        from elue.submission import SubmissionError
    except ImportError:
        SubmissionError = ()  # noqa: N806
    return isinstance(e, SubmissionError) or type(e).__name__ in ("SubmissionError", "SandboxError")


def _current_baseline(sessions: sessionmaker) -> dict[str, list[tuple[float, float]]]:
    with sessions() as s:
        choices = baseline_choices(s)
        out = {}
        for task, sid in choices.items():
            models = load_models(s, (Submission.id == sid) & visible_condition())
            if models and task in models[0].tasks and models[0].tasks[task].points:
                out[task] = [(p["mflops"], p["performance"]) for p in models[0].tasks[task].points]
        return out


def _stamp(msg: str) -> str:
    return f"[{utcnow():%Y-%m-%d %H:%M:%S}] {msg}\n"


def _db_down(e: BaseException) -> bool:
    """The database could not be reached (stopped, restarted, network): not the submission's fault."""
    return isinstance(e, OperationalError) or (
        isinstance(e, DBAPIError) and (e.connection_invalidated or isinstance(e.orig, OSError))
    )


DB_RETRY_S = 300.0  # how long a scored job's result waits for the database to come back


def _finish_retrying(sessions: sessionmaker, sid: int, worker_id: str, **kw) -> bool:  # noqa: ANN003
    """`_finish`, tried again while the database is unreachable: a result already computed is not thrown away
    (and the job not scored a second time, one attempt more) because the database restarted meanwhile. Safe to
    repeat: the write is one transaction, conditional on this worker still holding the job."""
    deadline = time.monotonic() + DB_RETRY_S
    wait = 0.5
    while True:
        try:
            return _finish(sessions, sid, worker_id, **kw)
        except DBAPIError as e:
            if not _db_down(e) or time.monotonic() > deadline:
                raise
            log.warning("submission %s: the database is unreachable (%s); retrying", sid, _first_line(e))
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


SCHEMA_CHECK_S = 60.0  # how often a running worker checks that the database's schema is its own


def schema_message(mismatch: tuple[str, str | None]) -> str:
    """What `schema_mismatch` found, in words for the worker's log and `elue worker`'s refusal."""
    kind, rev = mismatch
    if rev is None:
        return "the database has no ELUE tables yet (`elue serve` makes them at its start)"
    if kind == "newer":
        return (
            f"the database's schema is at revision {rev}, which this elue does not have: a newer version of elue "
            "made or upgraded it; run that version's worker"
        )
    return (
        f"the database's schema is at revision {rev}, older than this elue's {head_revision()}: "
        "`elue serve` of this version upgrades it at its start"
    )


def _no_schema(e: DBAPIError) -> bool:
    """The database has not been migrated yet (PostgreSQL's undefined_table; SQLite's "no such table")."""
    return getattr(e.orig, "pgcode", None) == "42P01" or "no such table" in str(e.orig)


def _first_line(e: BaseException) -> str:
    return (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]


def _finish(
    sessions: sessionmaker,
    sid: int,
    worker_id: str,
    *,
    status: str,
    log_add: str,
    error: str = "",
    result: dict | None = None,
) -> bool:
    """Write the outcome if (and only if) this worker still holds the job. One transaction."""
    # what model.py printed may hold NUL characters, which PostgreSQL cannot store (the write failed, and the
    # job was retried until it "crashed the worker repeatedly")
    error, log_add = error.replace("\x00", "\ufffd"), log_add.replace("\x00", "\ufffd")
    with sessions() as s:
        if result is not None:  # a public entry claims its name here (_keep_private_if_name_taken)
            lock_public_names(s)
        res = s.execute(
            update(Submission)
            .where(Submission.id == sid, Submission.lease_owner == worker_id, Submission.status == RUNNING)
            .values(
                status=status,
                finished_at=utcnow(),
                lease_owner=None,
                lease_expires_at=None,
                error=_cap(error, MAX_ERROR_CHARS),
            )
        )
        if res.rowcount != 1:
            s.rollback()
            return False
        sub = s.get(Submission, sid)
        sub.log = _cap((sub.log or "") + log_add, MAX_LOG_CHARS)
        if result is not None:
            params = []
            for task, tres in sorted(result.get("tasks", {}).items()):
                tr = TaskResult(task=task, params_m=tres.get("params_m"))
                if tres.get("params_m") is not None:
                    params.append(float(tres["params_m"]))
                for p in tres.get("points", []):
                    tr.points.append(
                        Point(
                            file=str(p.get("file", ""))[:300],
                            mflops=float(p["mflops"]),
                            performance=float(p["performance"]),
                            metrics={
                                k: float(v)
                                for k, v in (p.get("metrics") or {}).items()
                                if isinstance(v, (int, float))
                            },
                            examples=p.get("examples"),
                        )
                    )
                sub.tasks.append(tr)
            sub.params_m = max(params) if params else None
            bump_board_version(s)
        if status == SCORED and sub.public:
            sub.log = _cap(sub.log + _keep_private_if_name_taken(s, sub), MAX_LOG_CHARS)
        s.commit()
        return True


def _keep_private_if_name_taken(s, sub: Submission) -> str:  # noqa: ANN001
    """A queued entry holds no name (its existence would leak), so another public entry may have taken
    it meanwhile: the one scored second stays private, and its owner reads why in the log."""
    try:
        check_name_free(s, sub.owner, sub.name, exclude_id=sub.id)
    except ServiceError as e:
        sub.public = False
        return _stamp(f"not published: {e}; rename it and publish it from its page")
    return ""


MAX_ERROR_CHARS = 4096  # stored error message (the rest is cut, marked "… (truncated)")
MAX_LOG_CHARS = 65536  # stored log


def _cap(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters (head and tail kept), with a visible marker."""
    if len(text) <= limit:
        return text
    marker = "\n… (truncated) …\n"
    keep = limit - len(marker)
    head = keep * 3 // 4
    return text[:head] + marker + text[len(text) - (keep - head) :]


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it (the sandbox runs in sessions of its own)."""
    for q in [*reversed(descendant_pids(pid)), pid]:
        try:
            os.kill(q, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _evaluate_child(conn, evaluate: Callable, args: tuple, kwargs: dict, scratch: Path) -> None:  # noqa: ANN001
    """In the forked scoring process: run the evaluator, send back ("ok", result, log lines) or
    ("error", is_user_error, message, traceback, log lines). Temporary files go to `scratch`."""
    # the sandbox copies model.py into a temporary folder; killed, this process leaves that folder behind,
    # so it lies in the job's folder, which the worker removes
    tempfile.tempdir = os.environ["TMPDIR"] = str(scratch)
    _die_with_parent(signal.SIGKILL)
    # the worker decides what a stop means for the job: a Ctrl-C in its terminal reaches this process too (its
    # process group), and a KeyboardInterrupt here was sent back as the job's failure. Handlers, not SIG_IGN,
    # so that the sandbox's processes (exec'd) get the default ones back
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    capture = _LogCapture()
    root = logging.getLogger("elue")
    root.addHandler(capture)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        out = evaluate(*args, **kwargs)
        result = out.to_dict() if hasattr(out, "to_dict") else dict(out)
        msg = ("ok", result, capture.lines)
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the worker
        user_error = _is_user_error(e)
        text = str(e) if user_error else f"{type(e).__name__}: {e}"
        tb = traceback.format_exc()[-20000:]
        kind = "error"
        if _server_disk_error(e) is not None:  # e.g. the sandbox's copy of model.py on a full disk
            kind, text = "disk", f"the server's disk: {_server_disk_error(e)}"
        msg = (kind, user_error, text[: 4 * MAX_ERROR_CHARS], tb, capture.lines)
    try:
        conn.send(msg)
    finally:
        conn.close()


class _Cancelled(Exception):
    pass


class _Stopped(Exception):
    """The worker was told to stop (SIGTERM, Ctrl-C) before the job's result came."""


def _message(recv) -> tuple | None:  # noqa: ANN001
    """What the scoring process sent, if anything (None: nothing, or it died mid-way)."""
    try:
        return recv.recv() if recv.poll(0) else None
    except (EOFError, OSError):
        return None


def _run_cancellable(
    evaluate: Callable,
    args: tuple,
    kwargs: dict,
    beat: _Heartbeat,
    timeout_s: float,
    scratch: Path,
    stop: threading.Event | None = None,
) -> tuple[dict, list[str]]:
    """Run the evaluator in a forked process that the worker kills when the job's lease is lost (the
    submission was deleted, or another worker took it over), when it runs past `timeout_s`, or when the
    worker is told to `stop` (raises _Stopped; a result sent before that is kept)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_evaluate_child, args=(send, evaluate, args, kwargs, scratch), daemon=True)
    proc.start()
    send.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if recv.poll(0.1):
                try:
                    msg = recv.recv()
                except EOFError:
                    msg = None
                break
            if not proc.is_alive() and not recv.poll(0):
                msg = None
                break
            if beat.lost:
                raise _Cancelled("the submission was deleted or taken over while it was scored")
            if stop is not None and stop.is_set():
                _kill_tree(proc.pid)
                proc.join(5)
                msg = _message(recv)  # sent before the kill: a finished job is kept, not scored again
                break
            if time.monotonic() > deadline:
                msg = f"scoring took longer than the server's limit of {timeout_s:g} s and was stopped"
                raise _ChildError(msg, True, "", [])
    finally:
        if proc.is_alive():
            _kill_tree(proc.pid)
        proc.join(5)
        recv.close()
    if msg is not None and msg[0] == "ok":
        return msg[1], msg[2]
    # no result, or a failure that came with the stop, which may be its doing (stopping a service signals every
    # process of its cgroup, the sandbox's too): not the upload's fault
    if stop is not None and stop.is_set():
        raise _Stopped()
    if msg is None:
        raise RuntimeError(f"the scoring process died (exit code {proc.exitcode})")
    if msg[0] == "disk":
        raise _ServerFault(msg[2])
    _, user_error, text, tb, lines = msg
    raise _ChildError(text, user_error, tb, lines)


# the server's disk (full, over quota, read-only): a job that meets one is put back in the queue. Not EIO: a bad
# block under one upload's files would put that job back for ever, and claims take the oldest job first
SERVER_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _server_disk_error(e: BaseException | None) -> OSError | None:
    """The OSError of the server's disk behind `e` (also one re-raised as the toolkit's own error `from None`)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in SERVER_DISK_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


class _ServerFault(Exception):
    """The server (its disk, its uploads folder, its answer keys), not the upload, stopped the job."""


class _ChildError(Exception):
    def __init__(self, text: str, user_error: bool, tb: str, lines: list[str]) -> None:
        super().__init__(text)
        self.user_error, self.tb, self.lines = user_error, tb, lines


def _evaluator_kwargs(evaluate: Callable, settings: Settings) -> dict:
    """The server's sandbox limits, for an evaluator that takes `limits=` (the toolkit's does)."""
    try:
        params = inspect.signature(evaluate).parameters
    except (TypeError, ValueError):
        return {}
    if "limits" not in params:
        return {}
    from elue.costs.sandbox import SandboxLimits

    wall = settings.sandbox_wall_s
    return {"limits": SandboxLimits(wall_s=wall, cpu_s=max(1, int(wall)))}


def process(
    sessions: sessionmaker,
    settings: Settings,
    sid: int,
    worker_id: str,
    evaluator: Callable | None = None,
    stop: threading.Event | None = None,
) -> str:
    """Score one claimed job; returns the status written (or "lost" if the lease was taken over or the
    submission deleted: the scoring process is then killed; REQUEUED when the server, or a `stop` of this
    worker, stopped it: it is back in the queue)."""
    with sessions() as s:
        sub = s.get(Submission, sid)
        key, attempts = sub.storage_key, sub.attempts
    # this attempt's temporary files, removed however it ends; an earlier attempt's were left by a killed
    # worker (or one that lost the job): the job is ours now
    scratch = settings.scoring_dir / str(key) / uuid.uuid4().hex
    shutil.rmtree(scratch.parent, ignore_errors=True)
    if attempts > settings.max_attempts:
        ok = _finish_retrying(
            sessions,
            sid,
            worker_id,
            status=FAILED,
            log_add=_stamp(f"gave up: scoring stopped the worker {attempts - 1} times"),
            error="scoring this submission crashed the worker repeatedly",
        )
        return FAILED if ok else "lost"
    beat = _Heartbeat(sessions, settings, sid, worker_id)
    beat.start()
    t0 = time.time()
    # server_fault: why the server, not the upload, stopped the job (it goes back to the queue)
    status, error, result, captured, server_fault = FAILED, "", None, [], ""
    try:
        if settings.data_dir is None or not settings.data_dir.is_dir():
            raise RuntimeError("the server has no answer keys (set ELUE_DATA_DIR)")
        if key is None:
            raise _Cancelled("the submission was deleted")
        if not submission_path(settings, key).is_dir():
            # the site's other uploads are there: this one's files are gone
            if _sees_other_uploads(sessions, settings, sid):
                raise RuntimeError("the server has lost this submission's files; please upload it again")
            # a worker on another host whose --home is not the web server's (its uploads are files there) failed
            # every job as the upload's fault ("<server path>: not a directory"); left queued, a job whose files
            # are lost would be tried for ever, so only a worker that sees none of the site's uploads leaves it (any
            # folder counted before: a home of its own that held uploads of an earlier local run failed every job)
            raise _ServerFault(
                f"its files are not in {submission_path(settings, key)}: this worker does not see the uploads "
                "folder of `elue serve` (share its --home / ELUE_HOME with the worker)"
            )
        # a worker whose data folder holds only some answer keys (`elue worker` on another host) failed every upload
        # of another task as the upload's fault ("no answer key for imdb"): the job waits for a worker that has them
        missing = [
            t for t in _upload_tasks(submission_path(settings, key)) if t not in scorable_tasks(settings)
        ]
        if missing:
            raise _ServerFault(
                f"this worker has no answer key for {', '.join(missing)} in {settings.data_dir} "
                "(<task>/test_labels.tsv); set its ELUE_DATA_DIR as the web server's"
            )
        scratch.mkdir(parents=True)
        evaluate = evaluator or load_evaluator(settings.evaluator)
        result, captured = _run_cancellable(
            evaluate,
            (submission_path(settings, key), settings.data_dir),
            {
                "baseline": Baseline(_current_baseline(sessions)),
                "trust_model_code": settings.trust_model_code,
                **_evaluator_kwargs(evaluate, settings),
            },
            beat,
            settings.scoring_timeout_s,
            scratch,
            stop,
        )
        if not result.get("tasks"):
            raise RuntimeError("the evaluator returned no task results")
        status = SCORED
    except _Cancelled as e:
        log.info("submission %s: %s", sid, e)
        return "lost"
    except _Stopped:
        # a restart of the service (SIGTERM to the worker, then SIGKILL 10 s later) killed the worker mid-job: the
        # job was retaken when its lease ran out, one attempt more each time, and after max_attempts restarts
        # failed as "crashed the worker repeatedly", its owner's fault
        log.info("submission %s: the worker is stopping; back in the queue", sid)
        stopped = _requeue(
            sessions, sid, worker_id, "the scoring worker was stopped (a restart of the server)"
        )
        return REQUEUED if stopped else "lost"
    except _ServerFault as e:
        server_fault = str(e)
    except _ChildError as e:
        captured = e.lines
        if e.user_error:
            # the owner sees paths relative to their submission, not the server's folders
            error = str(e).replace(str(submission_path(settings, key)) + "/", "")
        else:
            error = f"internal error while scoring ({e})"
            log.error("submission %s: %s", sid, e.tb)
    except Exception as e:  # noqa: BLE001 - every failure becomes the owner's message
        if _db_down(e):  # not the submission's fault: the job is retaken when its lease runs out
            raise
        if _server_disk_error(e) is not None:
            server_fault = f"the server's disk: {_server_disk_error(e)}"
        else:
            error = f"internal error while scoring ({type(e).__name__}: {e})"
            log.error("submission %s: %s", sid, traceback.format_exc())
    finally:
        beat.stop.set()
        shutil.rmtree(scratch, ignore_errors=True)  # the scoring process is dead by now
        with contextlib.suppress(OSError):
            scratch.parent.rmdir()
    if server_fault:
        # a full disk failed the upload as its model.py's fault ("cannot read model.py: No space left on device"),
        # counted toward its owner's limits, and the worker's log said only "failed": now the job goes back to the
        # queue, and the admin reads why
        log.error("submission %s: not scored, %s; back in the queue", sid, server_fault)
        return REQUEUED if _requeue(sessions, sid, worker_id) else "lost"
    if settings.data_dir is not None:  # nor the folder of the answer keys
        error = error.replace(str(settings.data_dir), "<answer keys>")
    error = error.replace(str(scratch), "<tmp>")  # nor the server's folders (model.py run unsandboxed)
    error = _cap(error, MAX_ERROR_CHARS)
    lines = "".join(_stamp(_cap(x, 2000)) for x in captured)
    if status == SCORED:
        summary = "; ".join(
            f"{t}: "
            + ", ".join(f"{p['performance']:.2f} @ {p['mflops']:.4g} MFLOPs" for p in r.get("points", []))
            for t, r in sorted(result["tasks"].items())
        )
        lines += _stamp(f"scored in {time.time() - t0:.1f} s: {summary}")
    else:
        lines += _stamp(f"failed after {time.time() - t0:.1f} s: {error}")
    if beat.lost:
        return "lost"
    ok = _finish_retrying(
        sessions,
        sid,
        worker_id,
        status=status,
        log_add=lines,
        error=error,
        result=result if status == SCORED else None,
    )
    # the worker's log said only "failed": the admin had to open the page to learn why
    if ok and status == FAILED:
        log.info("submission %s failed: %s", sid, _log_text(error))
    return status if ok else "lost"


def _log_text(text: str, limit: int = 300) -> str:
    """The owner's error as one line of the worker's log: line breaks and control characters escaped (model.py's
    text must not write log lines of its own), at most `limit` characters."""
    one = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.strip())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _sees_other_uploads(sessions: sessionmaker, settings: Settings, sid: int) -> bool:
    """Whether this worker finds the files of the site's other recent uploads (then it sees the uploads folder of
    `elue serve`, and a job whose files it does not find has lost them)."""
    with sessions() as s:
        keys = s.scalars(
            select(Submission.storage_key)
            .where(Submission.id != sid, Submission.storage_key.is_not(None), Submission.status != DELETED)
            .order_by(Submission.created_at.desc())
            .limit(20)
        ).all()
    return any(submission_path(settings, k).is_dir() for k in keys)


def _upload_tasks(folder: Path) -> list[str]:
    """The tasks an upload holds test files for (its task folders; the upload check refused any other)."""
    return sorted(p.name for p in folder.iterdir() if p.name in TASK_NAMES and p.is_dir())


REQUEUED = "requeued"
# how long a worker takes other jobs before one that the server (its disk, its folders, its keys) stopped; and how
# long it waits when that happened to two jobs in a row
SERVER_FAULT_BACKOFF_S = 30.0


def _requeue(
    sessions: sessionmaker, sid: int, worker_id: str, why: str = "the server could not score it now"
) -> bool:
    """Give a job this worker holds back to the queue, its attempt not counted (the server failed, not it)."""
    with sessions() as s:
        res = s.execute(
            update(Submission)
            .where(Submission.id == sid, Submission.lease_owner == worker_id, Submission.status == RUNNING)
            .values(
                status=QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                started_at=None,
                attempts=Submission.attempts - 1,
            )
        )
        if res.rowcount == 1:
            sub = s.get(Submission, sid)
            note = f"{why}: back in the queue"
            sub.log = _cap((sub.log or "") + _stamp(note), MAX_LOG_CHARS)
        s.commit()
        return res.rowcount == 1


def run_worker(
    settings: Settings,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    evaluator: Callable | None = None,
    parent_pid: int | None = None,
) -> int:
    """Claim and score jobs until stopped (or, with once=True, until the queue is empty)."""
    engine, sessions = open_database(settings.database_url, upgrade=False)
    worker_id = new_worker_id()
    stop = stop or threading.Event()
    no_sandbox = sandbox_missing(settings) if evaluator is None else None
    if evaluator is None:
        evaluator = load_evaluator(settings.evaluator)  # import the toolkit (torch) before the first job
    done = 0
    log.info("worker %s started", worker_id)
    cleaned = False
    last_recover = 0.0
    down_since: float | None = None  # the database has been unreachable since then
    no_keys_said = last_seen = schema_checked = schema_said = -math.inf
    # jobs this worker gave back for the server's fault -> when: it takes the others first for a while. Retaken at
    # once (claims take the oldest), a job that only this worker cannot score (its keys, its disk's room for a big
    # model.py) was the only one it tried, every 30 s, for ever
    set_aside: dict[int, float] = {}
    faults_in_a_row = 0
    while not stop.is_set():
        if parent_pid is not None and os.getppid() != parent_pid:
            log.info("parent %s is gone: stopping", parent_pid)
            break
        # a worker without the answer keys (a wrong ELUE_DATA_DIR on its host) failed every job it took, as
        # "internal error": it takes none, says so (once a minute), and scores them once the keys are there
        # a host without a usable bubblewrap failed every job as its owner's ("… `bwrap` is not installed. Install …"),
        # each counted against its owner's limits: like one without the answer keys, it takes none and says why
        if no_sandbox is not None:
            if time.monotonic() - no_keys_said > 60:
                log.warning(
                    "bubblewrap, the sandbox for uploaded model.py, is %s on this host: not scoring; install it "
                    "(or set ELUE_TRUST_MODEL_CODE=1, only where every upload comes from people you trust)",
                    no_sandbox,
                )
                no_keys_said = time.monotonic()
            if once:
                break
            stop.wait(max(settings.poll_seconds, 1.0))
            continue
        if not scorable_tasks(settings):
            if time.monotonic() - no_keys_said > 60:
                where = f"in {settings.data_dir}" if settings.data_dir else "(no data folder)"
                log.warning(
                    "no answer keys %s (<task>/test_labels.tsv): not scoring; set ELUE_DATA_DIR", where
                )
                no_keys_said = time.monotonic()
            if once:
                break
            stop.wait(max(settings.poll_seconds, 1.0))
            continue
        try:
            # a worker never migrates: on a schema of another elue (a newer one's database, an older one `elue serve`
            # of this version has not upgraded yet) it ran on without a word, writing rows another schema expects
            if time.monotonic() - schema_checked > SCHEMA_CHECK_S:
                mismatch = schema_mismatch(engine)
                if mismatch is not None:
                    if time.monotonic() - schema_said > 60:
                        log.warning("%s; not scoring", schema_message(mismatch))
                        schema_said = time.monotonic()
                    if once:
                        break
                    stop.wait(min(5.0, max(settings.poll_seconds, 1.0)))
                    continue
                schema_checked = time.monotonic()
            if not cleaned:
                clean_scoring_dir(settings, sessions)
                cleaned = True
            if time.time() - last_recover > 10:
                release_dead_local_leases(sessions)
                last_recover = time.time()
            if time.monotonic() - last_seen > WORKER_SEEN_EVERY_S:  # for the pages of queued submissions
                with sessions() as s:
                    note_worker_seen(s)
                last_seen = time.monotonic()
            for old in [k for k, t in set_aside.items() if time.monotonic() - t > SERVER_FAULT_BACKOFF_S]:
                del set_aside[old]
            sid = claim(sessions, settings, worker_id, skip=set_aside)
            if sid is not None:
                log.info("scoring submission %s", sid)
                status = process(sessions, settings, sid, worker_id, evaluator, stop)
                log.info("submission %s: %s", sid, status)
                # the server's fault: retried later, other jobs first
                if status == REQUEUED and not stop.is_set():
                    set_aside[sid] = time.monotonic()
                    faults_in_a_row += 1
                    if faults_in_a_row > 1:  # not one job's: the server's disk or folders, for every job
                        if once:
                            break
                        stop.wait(SERVER_FAULT_BACKOFF_S)
                    continue
                faults_in_a_row = 0
                if status != REQUEUED:
                    done += 1
        except DBAPIError as e:
            # a database that stops or restarts: wait for it (one line per minute), instead of a traceback and
            # a restart of the worker every few seconds; a job held meanwhile is retaken when its lease runs out
            # a worker started before `elue serve` first migrated a new PostgreSQL database crashed (undefined table)
            if once or not (_db_down(e) or _no_schema(e)):
                raise
            now = time.monotonic()
            if down_since is None or now - down_since > 60:
                if _no_schema(e):
                    log.warning(
                        "the database has no ELUE tables yet (`elue serve` makes them at its start); waiting"
                    )
                else:
                    log.warning("the database is unreachable (%s); retrying", _first_line(e))
                down_since = now
            stop.wait(min(5.0, max(settings.poll_seconds, 1.0)))
            continue
        if down_since is not None:
            log.info("the database is reachable again")
            down_since = None
        if sid is None:
            if once:
                break
            stop.wait(settings.poll_seconds)
    return done


def sandbox_missing(settings: Settings) -> str | None:
    """Why the toolkit's evaluator cannot run uploads here (no usable bubblewrap and model code not trusted), or
    None. Only for the real evaluator: another one (tests' fakes) runs no model.py."""
    if settings.trust_model_code or settings.evaluator != DEFAULT_EVALUATOR:
        return None
    from elue.costs.sandbox import bwrap_available

    ok, why = bwrap_available()
    return None if ok else why


def configure_logging() -> None:
    """A worker's log: its own lines from INFO up; the libraries' only from WARNING (Alembic's INFO lines, "setup
    plugin …" and "Context impl …", filled the log of `elue worker` at its start)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _die_with_parent(sig: int) -> None:
    """Linux: get `sig` when the parent dies (also when it is killed outright). Elsewhere nothing (the worker's
    loop checks its parent's pid as well)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_on_signals(stop: threading.Event, *, interrupt: bool = True) -> None:
    """SIGTERM (and, with `interrupt`, Ctrl-C) set `stop`: the worker gives the job it scores back to the queue,
    kills its scoring process and returns. A second Ctrl-C raises KeyboardInterrupt. Main thread only."""

    def on_signal(signum: int, frame) -> None:  # noqa: ANN001
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        # Event.set takes a lock that the interrupted code (inside stop.wait) may hold: set from another thread
        _thread.start_new_thread(stop.set, ())

    signal.signal(signal.SIGTERM, on_signal)
    # a worker of `elue serve` is stopped by it (SIGTERM), after its web server: a Ctrl-C in the terminal reaches
    # every process of the group at once, and a worker gone first was restarted by serve's supervisor
    signal.signal(signal.SIGINT, on_signal if interrupt else lambda *_: None)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m elue.server.worker", description=__doc__.split("\n")[0])
    ap.add_argument("--once", action="store_true", help="stop when the queue is empty")
    ap.add_argument("--evaluator", default=None, help="module:function (default elue.submission)")
    ap.add_argument("--lease-seconds", type=float, default=None)
    ap.add_argument("--parent-pid", type=int, default=None, help="stop when this process (elue serve) ends")
    args = ap.parse_args(argv)
    if args.parent_pid:
        _die_with_parent(signal.SIGTERM)
    configure_logging()
    settings = Settings()
    if args.evaluator:
        settings.evaluator = args.evaluator
    if args.lease_seconds:
        settings.lease_seconds = args.lease_seconds
        settings.heartbeat_seconds = max(0.2, args.lease_seconds / 4)
    stop = threading.Event()
    stop_on_signals(stop, interrupt=not args.parent_pid)
    try:
        run_worker(settings, once=args.once, stop=stop, parent_pid=args.parent_pid)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
