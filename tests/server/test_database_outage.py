"""The worker while the database is unreachable: it waits, keeps a finished result, fails nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_fake_evaluator import evaluate as fake_evaluate
from server_helpers import api_upload, wait_until
from server_setup import make_settings, token_for
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from elue.server import create_app
from elue.server import worker as worker_mod
from elue.server.db import SCORED, Submission, TaskResult


def _db_error() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def _unreachable_first(real, times: int):  # noqa: ANN001, ANN202
    """`real`, but the database is unreachable for its first `times` calls."""
    left = [times]

    def flaky(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        if left[0]:
            left[0] -= 1
            raise _db_error()
        return real(*a, **kw)

    return flaky


def _queued_one(settings) -> int:  # noqa: ANN001
    c = TestClient(create_app(settings))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    return api_upload(c, h)["id"]


def test_worker_waits_for_a_database_that_went_away(tmp_path, monkeypatch):  # noqa: ANN001
    """A stopped database used to end the worker with a traceback (restarted by serve every few seconds, a
    traceback each time); now it logs, waits and goes on when the database is back."""
    s = make_settings(tmp_path)
    sid = _queued_one(s)
    monkeypatch.setattr(worker_mod, "claim", _unreachable_first(worker_mod.claim, 3))
    stop = threading.Event()
    s.poll_seconds = 0.01

    def scored() -> bool:
        _, sessions = worker_mod.open_database(s.database_url, upgrade=False)
        with sessions() as db:
            return db.get(Submission, sid).status == SCORED

    t = threading.Thread(
        target=worker_mod.run_worker,
        args=(s,),
        kwargs={"stop": stop, "evaluator": fake_evaluate},
        daemon=True,
    )
    t.start()

    def scored_by_a_live_worker() -> bool:
        assert t.is_alive(), "the worker ended when the database went away"
        return scored()

    try:
        wait_until(scored_by_a_live_worker, what="the submission to be scored", every=0.1)
    finally:
        stop.set()
        t.join(10)


def test_result_waits_for_the_database_instead_of_scoring_again(tmp_path, monkeypatch):  # noqa: ANN001
    """The database restarting while a job is scored used to lose the finished result: the worker crashed on the
    write, the job was scored again and counted one attempt more. Now the write is retried."""
    s = make_settings(tmp_path)
    sid = _queued_one(s)
    monkeypatch.setattr(worker_mod, "_finish", _unreachable_first(worker_mod._finish, 2))
    counter = tmp_path / "evaluations"
    monkeypatch.setenv("ELUE_FAKE_COUNTER", str(counter))  # the evaluator runs in a forked process
    assert worker_mod.run_worker(s, once=True, evaluator=fake_evaluate) == 1
    _, sessions = worker_mod.open_database(s.database_url, upgrade=False)
    with sessions() as db:
        sub = db.get(Submission, sid)
        assert (sub.status, sub.attempts) == (SCORED, 1)
        assert (
            db.scalar(select(func.count()).select_from(TaskResult).where(TaskResult.submission_id == sid))
            == 1
        )
    assert len(counter.read_text().splitlines()) == 1


def test_a_database_error_while_scoring_does_not_fail_the_submission(tmp_path, monkeypatch):  # noqa: ANN001
    """Reading the baseline while the database is down used to fail the owner's submission for good
    ("internal error while scoring (OperationalError ...)"); now the job stays claimable."""
    s = make_settings(tmp_path)
    sid = _queued_one(s)

    def down(_sessions):  # noqa: ANN001, ANN202
        raise _db_error()

    monkeypatch.setattr(worker_mod, "_current_baseline", down)
    _, sessions = worker_mod.open_database(s.database_url, upgrade=False)
    wid = worker_mod.new_worker_id()
    assert worker_mod.claim(sessions, s, wid) == sid
    with pytest.raises(OperationalError):
        worker_mod.process(sessions, s, sid, wid, fake_evaluate)
    with sessions() as db:
        assert db.get(Submission, sid).status == "running"  # retaken when the lease runs out, not failed


def test_docs_name_the_behaviour():  # noqa: ANN201
    docs = (Path(__file__).resolve().parents[2] / "docs" / "leaderboard.md").read_text()
    assert "unreachable" in docs


def test_a_worker_started_before_the_database_is_migrated_waits_for_it(db_url, tmp_path, caplog):  # noqa: ANN001
    """`elue worker` started before `elue serve` had made the tables of a new PostgreSQL database crashed with
    "relation "submissions" does not exist" (SQLite's "no such table" waited, as for a database that is down);
    now it says what it waits for (and goes on as after an outage: test_worker_waits_for_a_database_that_went_away)."""
    s = make_settings(tmp_path, database_url=db_url, poll_seconds=0.01)
    stop = threading.Event()
    t = threading.Thread(
        target=worker_mod.run_worker,
        args=(s,),
        kwargs={"stop": stop, "evaluator": fake_evaluate},
        daemon=True,
    )
    with caplog.at_level("WARNING", logger="elue.server.worker"):
        t.start()
        try:
            wait_until(
                lambda: "no ELUE tables yet" in caplog.text or not t.is_alive(), what="the worker to wait"
            )
            assert t.is_alive(), "the worker ended on a database without tables"
        finally:
            stop.set()
            t.join(10)
