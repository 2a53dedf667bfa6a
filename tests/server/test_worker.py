"""The scoring worker: its time limits, cancelling on delete, capped logs, clean-up of the sandbox's copies."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from server_helpers import PATIENCE_S, SUB, api_upload, wait_until
from sqlalchemy import update

from elue.server import Settings
from elue.server.db import RUNNING, Submission, open_database
from elue.server.worker import run_worker


def _pricing_evaluator(submission_dir, answers_dir, *, baseline=None, trust_model_code=False, limits=None):  # noqa: ANN001, ANN201
    """Prices model.py in the toolkit's sandbox (which copies it into a temporary folder), as the real
    evaluator does."""
    from elue.costs.sandbox import price_model

    price_model(Path(submission_dir) / "model.py", trust_model_code=True)
    return {"tasks": {}}


def _copies(settings: Settings) -> set[Path]:
    """The sandbox's copies of model.py: in the system's temporary folder or the server's state folder."""
    found = set(Path(tempfile.gettempdir()).glob("elue-model-*/model.py"))
    for _ in range(20):  # the worker may remove a folder while rglob walks it (the very thing waited for)
        try:
            return found | set(settings.state_dir.rglob("elue-model-*/model.py"))
        except FileNotFoundError:
            time.sleep(0.01)
    raise AssertionError("the state folder kept changing under rglob")


def test_scoring_timeout_stops_a_sleeping_model(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    import time

    from elue.server.worker import run_worker

    monkeypatch.setenv("ELUE_FAKE_SLEEP", "60")  # like model.py doing time.sleep(10**6): no CPU used
    monkeypatch.setenv("ELUE_FAKE_LIMITS", str(tmp_path / "limits.txt"))
    settings.scoring_timeout_s = 1.0
    settings.sandbox_wall_s = 7.0
    h = auth("sleepy")
    sub = api_upload(client, h)
    t0 = time.time()
    from server_fake_evaluator import evaluate

    assert run_worker(settings, once=True, evaluator=evaluate) == 1
    assert time.time() - t0 < 45  # stopped: the model would sleep 60 s (15 s was tight on a busy machine)
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert got["status"] == "failed" and "longer than the server's limit of 1 s" in got["error"]
    # the toolkit got the server's sandbox limit, not its own 600 s default
    assert float((tmp_path / "limits.txt").read_text()) == 7.0


def test_deleting_a_running_submission_stops_its_scoring(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    import threading

    from server_fake_evaluator import evaluate

    from elue.server.worker import run_worker

    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("ELUE_FAKE_SLEEP", "60")
    monkeypatch.setenv("ELUE_FAKE_COUNTER", str(counter))
    h = auth("deleter")
    sub = api_upload(client, h)
    stop = threading.Event()
    t = threading.Thread(target=run_worker, args=(settings,), kwargs={"stop": stop, "evaluator": evaluate})
    t.start()
    try:
        wait_until(lambda: counter.exists() and counter.read_text().strip(), PATIENCE_S, "scoring to start")
        pid = int(counter.read_text().split()[1])  # the scoring process
        assert pid != os.getpid()
        assert client.delete(f"/api/submissions/{sub['id']}", headers=h).status_code == 204
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), PATIENCE_S, "the scoring process to be killed")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()


def test_huge_error_messages_are_capped(client, auth, drain):  # noqa: ANN001
    from elue.server.worker import MAX_ERROR_CHARS, MAX_LOG_CHARS

    h = auth("verbose")
    sub = api_upload(client, h, files={**SUB, "model.py": "# HUGE_ERROR\n"})
    drain()
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert got["status"] == "failed"
    assert len(got["error"]) <= MAX_ERROR_CHARS and "(truncated)" in got["error"]
    assert len(got["log"]) <= MAX_LOG_CHARS and "(truncated)" in got["log"]
    assert "sst-2/a.tsv, line 1" in got["error"]  # the start of the message is kept
    listed = client.get("/api/submissions", headers=h).json()
    assert len(json.dumps(listed)) < 20_000


def test_the_worker_log_says_why_a_submission_failed(client, auth, drain, caplog):  # noqa: ANN001
    """The worker's log said only "submission 7: failed": the admin had to open each page to learn why. It now gives
    the owner's error as one capped line (model.py's text cannot write log lines of its own)."""
    from elue.server.worker import _log_text

    sub = api_upload(client, auth("verbose2"), files={**SUB, "model.py": "# HUGE_ERROR\n"})
    with caplog.at_level("INFO", logger="elue.server.worker"):
        drain()
    line = next(
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"submission {sub['id']} failed:")
    )
    assert "sst-2/a.tsv, line 1: bad header" in line and len(line) < 400
    assert _log_text("boom\n2026-01-01 worker INFO forged") == "boom\\n2026-01-01 worker INFO forged"


def test_a_cancelled_job_leaves_no_copy_of_model_py(client, auth, settings):  # noqa: ANN001
    before = _copies(settings)
    h = auth("sleeper")
    sub = api_upload(client, h, files={**SUB, "model.py": "import time\ntime.sleep(120)\n"})
    stop = threading.Event()
    kw = {"stop": stop, "evaluator": _pricing_evaluator}
    t = threading.Thread(target=run_worker, args=(settings,), kwargs=kw)
    t.start()
    try:
        wait_until(lambda: _copies(settings) - before, PATIENCE_S, "the sandbox to copy model.py")
        assert client.delete(f"/api/submissions/{sub['id']}", headers=h).status_code == 204
        wait_until(lambda: not _copies(settings) - before, PATIENCE_S, "the copy of model.py to be removed")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not any(settings.scoring_dir.iterdir())


def test_the_worker_removes_what_a_killed_worker_left(client, auth, settings, drain):  # noqa: ANN001
    running = api_upload(client, auth("runner"))
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:  # scored by another worker right now (its lease is valid)
        s.execute(update(Submission).where(Submission.id == running["id"]).values(status=RUNNING))
        key = s.get(Submission, running["id"]).storage_key
        s.commit()
    live = settings.scoring_dir / key / "attempt" / "elue-model-1"
    stale = settings.scoring_dir / "0123abcd" / "attempt" / "elue-model-2"  # a deleted job's
    for d in (live, stale):
        d.mkdir(parents=True)
        (d / "model.py").write_text("secret = 1\n")
    drain()  # a worker starting
    assert (live / "model.py").exists() and not stale.parent.parent.exists()


def test_a_worker_without_a_sandbox_leaves_the_queue_alone(
    client, auth, settings, drain, caplog, monkeypatch
):  # noqa: ANN001, PLR0913
    """On a host without a usable bubblewrap (and model code not trusted) the worker failed every upload it took
    with the sandbox's message to its owner ("`bwrap` is not installed. Install bubblewrap …"), each charged to their limits. Like one without
    the answer keys, it now takes no job and says why; the jobs wait."""
    import elue.costs.sandbox as sandbox
    from elue.server.config import DEFAULT_EVALUATOR

    h = auth("unsandboxed")
    sub = api_upload(client, h)
    monkeypatch.setattr(sandbox, "bwrap_available", lambda: (False, "not installed"))
    monkeypatch.setattr(settings, "trust_model_code", False)
    monkeypatch.setattr(settings, "evaluator", DEFAULT_EVALUATOR)  # the toolkit's, which runs model.py
    with caplog.at_level("WARNING", logger="elue.server.worker"):
        assert run_worker(settings, once=True) == 0
    said = "bubblewrap, the sandbox for uploaded model.py, is not installed on this host: not scoring"
    assert said in caplog.text
    assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "queued"
    monkeypatch.undo()
    drained = drain()  # a worker that can score takes it (here: the tests' evaluator, which runs no model.py)
    assert drained == 1


def test_a_worker_without_the_answer_keys_leaves_the_queue_alone(client, auth, settings, drain, caplog):  # noqa: ANN001
    """A worker whose data folder holds no answer keys (`elue worker` on another host with a wrong or unset
    ELUE_DATA_DIR) failed every upload it took with "internal error: the server has no answer keys": the site's
    mistake, charged to each user's upload limit. It takes no job now, says why, and the jobs wait for a worker
    that can score them."""
    h = auth("waiting")
    sub = api_upload(client, h)
    keys = settings.data_dir
    for folder in (settings.state_dir / "nowhere", None):
        settings.data_dir = folder
        with caplog.at_level("WARNING", logger="elue.server.worker"):
            assert run_worker(settings, once=True) == 0
        assert "no answer keys" in caplog.text and "not scoring" in caplog.text
        assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "queued"
        caplog.clear()
    settings.data_dir = keys
    assert drain() == 1
    assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "scored"


def _log_in(client, username: str, password: str = "password123") -> None:  # noqa: ANN001
    from server_setup import csrf_of

    client.cookies.clear()
    csrf = csrf_of(client.get("/login").text)
    r = client.post(
        "/login", data={"username": username, "password": password, "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


def test_a_queued_submissions_page_says_when_no_worker_is_at_work(client, auth, settings, drain):  # noqa: ANN001
    """With no scoring worker (`--workers 0` and no `elue worker`, or none that can score), an upload's page
    said "queued" and "refreshes itself until scoring ends" forever: nothing told the user or the admin."""
    from elue.server.db import WORKER_SEEN, Meta

    h = auth("patient")
    first = api_upload(client, h)
    assert "no scoring worker is at work" in first["notice"]  # the API (and `elue submit`) says it too
    assert "notice" in client.get(f"/api/submissions/{first['id']}", headers=h).json()
    _log_in(client, "patient")
    assert 'id="stalled"' in client.get(f"/submissions/{first['id']}").text  # no worker ever
    _log_in(client, "admin", "admin-password")
    assert 'id="stalled"' in client.get("/admin").text
    assert drain() == 1  # a worker looks for work (and scores the upload)
    second = api_upload(client, h)
    assert "notice" not in second
    assert 'id="stalled"' not in client.get("/admin").text
    _log_in(client, "patient")
    assert 'id="stalled"' not in client.get(f"/submissions/{second['id']}").text
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:  # the worker stopped looking 10 minutes ago...
        s.merge(Meta(key=WORKER_SEEN, value=repr(time.time() - 600)))
        s.commit()
    assert 'id="stalled"' in client.get(f"/submissions/{second['id']}").text
    with sessions() as s:  # ... but one is at work on a long job (its lease is live)
        s.execute(
            update(Submission)
            .where(Submission.id == first["id"])
            .values(status=RUNNING, lease_expires_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                    + dt.timedelta(seconds=60))
        )  # fmt: skip
        s.commit()
    assert 'id="stalled"' not in client.get(f"/submissions/{second['id']}").text
    assert 'id="stalled"' not in client.get(f"/submissions/{first['id']}").text
    with sessions() as s:  # its worker was killed (SIGKILL, out of memory) and none runs: the job waits
        s.execute(
            update(Submission)
            .where(Submission.id == first["id"])
            .values(lease_expires_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                    - dt.timedelta(seconds=60))
        )  # fmt: skip
        s.commit()
    assert 'id="stalled"' in client.get(f"/submissions/{first['id']}").text


def _full_disk_evaluator(submission_dir, answers_dir, **kwargs):  # noqa: ANN001, ANN003, ANN201
    """As the toolkit's sandbox on a full disk: its copy of model.py fails, re-raised as its own error."""
    import errno

    from elue.costs.sandbox import SandboxError

    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        raise SandboxError(f"cannot read model.py: {exc}") from None


@pytest.fixture
def toolkit_imported() -> None:
    """The scoring process imports the toolkit (torch: seconds) to classify a failure; a real worker has it
    imported before its first job. Imported here once, before the fork."""
    import elue.submission  # noqa: F401


def test_a_full_disk_while_scoring_puts_the_job_back_in_the_queue(
    client, auth, settings, drain, caplog, toolkit_imported
):  # noqa: ANN001
    """The server's full disk failed the upload as its own model.py's fault ("cannot read model.py: No space left
    on device"), counted toward the user's limits, and the worker's log said only "submission N: failed"."""
    h = auth("unlucky")
    sub = api_upload(client, h)
    with caplog.at_level("ERROR", logger="elue.server.worker"):
        assert run_worker(settings, once=True, evaluator=_full_disk_evaluator) == 0
    assert "No space left on device" in caplog.text and "back in the queue" in caplog.text
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert (got["status"], got["attempts"]) == ("queued", 0), got
    assert "the server could not score it now" in got["log"] and "cannot read" not in got["log"]
    assert drain() == 1  # once the disk has room
    assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "scored"


def test_a_worker_that_does_not_see_the_uploads_puts_the_job_back(client, auth, settings, drain, caplog):  # noqa: ANN001
    """`elue worker` on another host against the same database, with a --home of its own (the uploads are files
    in the web server's): every job failed as the upload's fault, "<server path>/uploads/<key>: not a directory"."""
    import dataclasses

    h = auth("remote")
    sub = api_upload(client, h)
    elsewhere = dataclasses.replace(settings, state_dir=settings.state_dir.parent / "other-host")
    # its own home held an upload of an earlier local run: any folder there made every job's files "lost"
    (elsewhere.upload_dir / "0123abcd" / "sst-2").mkdir(parents=True)
    with caplog.at_level("ERROR", logger="elue.server.worker"):
        assert run_worker(elsewhere, once=True) == 0
    assert "this worker does not see the uploads folder" in caplog.text, caplog.text
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert (got["status"], got["attempts"]) == ("queued", 0), got
    assert str(settings.state_dir.parent) not in got["log"]  # no server path told to the user
    assert drain() == 1  # a worker that sees them
    assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "scored"
    # files lost on the server itself (its other uploads are there) fail that job, which would stop the queue
    lost = api_upload(client, h)
    with open_database(settings.database_url, upgrade=False)[1]() as s:
        shutil.rmtree(settings.upload_dir / s.get(Submission, lost["id"]).storage_key)
    assert drain() == 1
    got = client.get(f"/api/submissions/{lost['id']}", headers=h).json()
    assert got["status"] == "failed" and "lost this submission's files" in got["error"], got


def test_a_worker_without_the_key_of_a_jobs_task_leaves_it_queued(client, auth, settings, drain, caplog):  # noqa: ANN001
    """`elue worker` whose data folder holds only some answer keys (here SST-2's, not IMDb's) failed every IMDb
    upload as its owner's fault, "no answer key for imdb: <answer keys>/imdb/test_labels.tsv"."""
    import dataclasses

    shutil.copytree(settings.data_dir / "sst-2", settings.data_dir / "imdb")  # the web server has both
    h = auth("imdb-fan")
    sub = api_upload(client, h, files={**SUB, "imdb/a.tsv": SUB["sst-2/a.tsv"]})
    some_keys = settings.state_dir.parent / "sst-2-only"
    shutil.copytree(settings.data_dir / "sst-2", some_keys / "sst-2")
    with caplog.at_level("ERROR", logger="elue.server.worker"):
        assert run_worker(dataclasses.replace(settings, data_dir=some_keys), once=True) == 0
    assert "no answer key for imdb" in caplog.text, caplog.text
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert (got["status"], got["attempts"]) == ("queued", 0), got
    # nor does that job, the oldest, stop the ones after it: it was retaken first, every 30 s, for ever
    later = api_upload(client, h, name="sst-2 only")
    assert run_worker(dataclasses.replace(settings, data_dir=some_keys), once=True) == 1
    assert client.get(f"/api/submissions/{later['id']}", headers=h).json()["status"] == "scored"
    assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "queued"
    assert drain() == 1  # a worker with every key
    assert client.get(f"/api/submissions/{sub['id']}", headers=h).json()["status"] == "scored"
