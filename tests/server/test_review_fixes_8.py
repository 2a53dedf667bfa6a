"""Review fixes (8): the deployment under failure: a database that goes away and comes back while workers run,
a web process restarted while another unpacks an upload, a home that cannot be used."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_fake_evaluator import evaluate as fake_evaluate
from server_helpers import SUB, api_upload, zip_bytes
from server_setup import make_settings, serve_args, token_for
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from elue.server import app as app_mod
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
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not scored():
            assert t.is_alive(), "the worker ended when the database went away"
            time.sleep(0.1)
        assert scored()
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


def test_a_restarted_web_process_leaves_uploads_in_progress_alone(tmp_path):  # noqa: ANN001
    """uvicorn restarts a web process that died; its start used to empty uploads/.staging, under the feet of
    another web process unpacking an upload there (the upload then failed)."""
    s = make_settings(tmp_path)
    create_app(s)  # the deployment's first start (elue serve, before the web processes)
    busy = s.staging_dir / "in-progress"
    busy.mkdir()
    (busy / "model.py").write_text("x")
    stale = s.staging_dir / "left-by-a-crash"
    stale.mkdir()
    old = time.time() - getattr(app_mod, "STAGING_STALE_S", 3600.0) - 10
    os.utime(stale, (old, old))
    env = {**os.environ, **s.to_env(), "ELUE_SECRET_KEY": "k"}
    out = subprocess.run(
        [sys.executable, "-c", "import elue.server.asgi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (busy / "model.py").exists()
    assert not stale.exists()


def test_serve_with_an_unusable_home_says_so(tmp_path):  # noqa: ANN001
    """A --home that cannot be made (here: a file is in the way; also read-only or full) used to end
    `elue serve` with a traceback."""
    home = tmp_path / "home"
    home.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELUE_")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from elue.cli import main; main()",
            "serve",
            "--home",
            str(home),
            "--workers",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"cannot use the state folder {home}" in out.stderr.replace("\n", "")


def test_docs_name_the_behaviour():  # noqa: ANN201
    docs = (Path(__file__).resolve().parents[2] / "docs" / "leaderboard.md").read_text()
    assert "unreachable" in docs


def test_a_full_disk_while_unpacking_is_the_servers_503_not_a_bad_archive(client, auth, monkeypatch):  # noqa: ANN001
    import errno

    from elue.server import storage

    def full(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "check_layout", full)  # inside the unpacking, after the files are written
    h = auth("diskfull")
    r = client.post(
        "/api/submissions",
        headers=h,
        data={"name": "m", "public": "false"},
        files={"file": ("s.zip", zip_bytes(SUB), "application/zip")},
    )
    assert r.status_code == 503, r.text
    assert "the server cannot store uploads right now (No space left on device)" in r.json()["detail"]
    assert "archive" not in r.json()["detail"]
    assert client.get("/api/submissions", headers=h).json() == []  # nothing stored


def test_web_processes_migrating_an_empty_postgresql_side_by_side_do_not_race(db_url):  # noqa: ANN001
    """`uvicorn elue.server.asgi:app --workers N` on an empty database: every process migrates at import.
    On PostgreSQL they raced to create the tables (a duplicate-key error in some); now an advisory lock
    serialises them and the later ones find the schema made."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (SQLite serialises its writers itself)")
    start = time.time() + 3  # the processes start migrating at the same moment
    child = (
        "import sys, time\n"
        "from elue.server.db import make_engine, migrate\n"
        f"engine = make_engine({db_url!r})\n"
        f"time.sleep(max(0.0, {start} - time.time()))\n"
        "migrate(engine)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", child], stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1][-500:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors


def test_serve_says_the_admin_password_came_from_the_environment(tmp_path, monkeypatch):  # noqa: ANN001
    """A new admin with ELUE_ADMIN_PASSWORD set was told it had 'the account's own password'."""
    from typer.testing import CliRunner

    from elue.cli import app as cli

    settings = make_settings(tmp_path)
    # serve exports its settings as ELUE_* for the web processes, and installs a SIGTERM handler: both are
    # undone after the test (the exported database URL made later tests share one database)
    monkeypatch.setattr(os, "environ", {**os.environ, "ELUE_ADMIN_PASSWORD": "a-long-password"})
    monkeypatch.setattr("signal.signal", lambda *a: None)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    args = serve_args(settings)
    r = CliRunner().invoke(cli, [*args, "--admin", "boss"])
    assert r.exit_code == 0, r.output
    assert "admin 'boss': password from ELUE_ADMIN_PASSWORD" in r.output and "own password" not in r.output
