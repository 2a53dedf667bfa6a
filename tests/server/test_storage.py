"""Storage against SQLite always and PostgreSQL when ELUE_TEST_POSTGRES_URL is set (.ci/run sets it):
migrations, the queue's atomic claims and leases, a full upload -> scored flow."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient
from server_fake_evaluator import evaluate as fake_evaluate
from server_helpers import PATIENCE_S, TINY_MODEL_PY, api_upload, run_at_once, wait_until, zip_bytes
from server_setup import csrf_of, make_settings, token_for
from sqlalchemy import create_engine, func, inspect, select, text

from elue.server import create_app, service, worker
from elue.server.db import (
    QUEUED,
    RUNNING,
    SCORED,
    Base,
    Baseline,
    Submission,
    User,
    migrate,
    open_database,
)
from elue.server.worker import _finish, claim, process, release_dead_local_leases, run_worker

TSV = "index\tpred\tmodules\n0\t1\t(5),emb\n"


def test_migrations_match_the_models(db_url):  # noqa: ANN001
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine, _ = open_database(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"users", "api_tokens", "submissions", "task_results", "points", "baselines", "meta"} <= tables
    assert "login_failures" in tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    migrate(engine)  # idempotent
    engine.dispose()


def test_login_throttle_counts_across_processes_and_parallel_guesses(db_url):  # noqa: ANN001
    """Two throttles on one database stand for two web processes: they count the same attempts. 30 parallel
    guesses over both get at most 10 through, whatever the interleaving."""
    from elue.server.throttle import LoginThrottle

    engine, sessions = open_database(db_url)
    web1, web2 = LoginThrottle(sessions), LoginThrottle(sessions)
    key = web1.key("Frank", "127.0.0.1")
    assert key == web2.key(" frank ", "127.0.0.1") != web1.key("frank", "10.0.0.1")
    for i in range(10):
        assert (web1 if i % 2 else web2).begin(key) == 0
    wait = web2.begin(key)
    assert 299 <= wait <= 300  # until the oldest failure leaves the 300 s window
    assert web1.begin(web1.key("frank", "10.0.0.1")) == 0  # another client is not affected
    web1.succeeded(key)  # a right password clears the count, in every process
    assert web2.begin(key) == 0
    web2.succeeded(key)

    barrier = threading.Barrier(30)
    allowed: list[bool] = []

    def guess(throttle: LoginThrottle) -> None:
        barrier.wait()
        allowed.append(throttle.begin(key) == 0)

    threads = [threading.Thread(target=guess, args=(web1 if i % 2 else web2,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 30 and allowed.count(True) <= 10  # (all refused is possible: the safe side)
    # refused attempts are not counted: only the ones let through are, and they expire with the window
    count = text("SELECT count(*) FROM login_failures WHERE key = :k")
    with sessions() as db:
        assert db.execute(count, {"k": key}).scalar() == allowed.count(True)
    web1.clock = lambda: time.time() + 301
    assert web1.begin(key) == 0
    with sessions() as db:  # the expired rows, of every key, were deleted on the way
        assert db.execute(text("SELECT key FROM login_failures")).scalars().all() == [key]
    engine.dispose()


def test_upgrade_keeps_existing_users(tmp_path):  # noqa: ANN001
    """A database made by the first schema upgrades in place: its users get session epoch 0."""
    from sqlalchemy import text

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES ('old', 'x', 0, '2026-01-01')"
            )
        )
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT username, session_epoch FROM users")).all() == [("old", 0)]
    engine.dispose()


def test_upload_to_scored_on_each_backend(db_url, tmp_path):  # noqa: ANN001
    s = make_settings(tmp_path, database_url=db_url)
    c = TestClient(create_app(s))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    r = c.post(
        "/api/submissions",
        headers=h,
        data={"name": "m", "public": "true"},
        files={"file": ("s.zip", zip_bytes({"model.py": TINY_MODEL_PY, "sst-2/a.tsv": TSV}), "x")},
    )
    assert r.status_code == 202
    assert run_worker(s, once=True, evaluator=fake_evaluate) == 1
    got = c.get(f"/api/submissions/{r.json()['id']}", headers=h).json()
    assert got["status"] == "scored"
    assert got["result"]["tasks"]["sst-2"]["points"][0]["examples"] == 1
    assert "m" in [x["name"] for x in c.get("/api/leaderboard").json()["rows"]]
    c.app.state.engine.dispose()


def _queue(sessions, n: int) -> list[int]:  # noqa: ANN001
    with sessions() as s:
        subs = [Submission(name=f"s{i}", storage_key=f"k{i}", status=QUEUED) for i in range(n)]
        s.add_all(subs)
        s.commit()
        return [x.id for x in subs]


def test_concurrent_claims_take_each_job_once(db_url, tmp_path):  # noqa: ANN001
    s = make_settings(tmp_path, database_url=db_url)
    engine, sessions = open_database(db_url)
    ids = _queue(sessions, 24)
    got: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        while True:
            sid = claim(sessions, s, f"w{k}")
            if sid is None:
                return
            with lock:
                got.append(sid)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)
    engine.dispose()


def test_expired_lease_is_retaken_and_the_old_holder_cannot_write(db_url, tmp_path, monkeypatch):  # noqa: ANN001
    """The workers' clock is moved past the lease (as the throttle tests move theirs), not slept past: with a
    2 s lease and a sleep, a busy machine could take longer than the lease between the first two claims."""
    s = make_settings(tmp_path, database_url=db_url, lease_seconds=60.0)
    engine, sessions = open_database(db_url)
    (sid,) = _queue(sessions, 1)
    assert claim(sessions, s, "A") == sid
    assert claim(sessions, s, "B") is None  # lease still held
    real_now = worker.utcnow
    monkeypatch.setattr(worker, "utcnow", lambda: real_now() + dt.timedelta(seconds=61))
    assert claim(sessions, s, "B") == sid  # A's lease ran out (A died)
    assert not _finish(sessions, sid, "A", status=SCORED, log_add="late\n", result={"tasks": {}})
    with sessions() as x:
        sub = x.get(Submission, sid)
        assert sub.status == RUNNING and sub.lease_owner == "B" and sub.attempts == 2
    engine.dispose()


def test_gives_up_after_max_attempts(tmp_path):  # noqa: ANN001
    s = make_settings(tmp_path, max_attempts=2)
    engine, sessions = open_database(s.database_url)
    (sid,) = _queue(sessions, 1)
    with sessions() as x:
        x.get(Submission, sid).attempts = 2  # two workers died on it already
        x.commit()
    assert claim(sessions, s, "C") == sid
    assert process(sessions, s, sid, "C", fake_evaluate) == "failed"
    with sessions() as x:
        assert "crashed the worker" in x.get(Submission, sid).error
    engine.dispose()


def test_parallel_uploads_respect_the_limit_on_each_backend(db_url, tmp_path):  # noqa: ANN001
    """The limit check and the insert are serialised by a lock on the user's row: 8 parallel uploads
    against a limit of 5 give exactly 5 (PostgreSQL row lock; SQLite write lock)."""

    from elue.server import service
    from elue.server.db import User

    s = make_settings(tmp_path, database_url=db_url, daily_limit=5)
    create_app(s)
    _, sessions = open_database(s.database_url, upgrade=False)
    with sessions() as x:
        service.create_user(x, "racer", "password123")
    data = zip_bytes({"model.py": TINY_MODEL_PY, "sst-2/a.tsv": TSV})
    barrier = threading.Barrier(8)
    outcomes: list = []

    def one() -> None:
        with sessions() as x:
            user = x.scalar(select(User).where(User.username == "racer"))
            barrier.wait()
            try:
                service.submit_zip(x, s, user, data, name="r")
                outcomes.append("ok")
            except service.ServiceError as e:
                outcomes.append(e.status)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5 and outcomes.count(429) == 3, outcomes
    dirs = [p for p in s.upload_dir.iterdir() if p.name != ".staging"]
    assert len(dirs) == 5  # the refused ones left no files


def test_two_users_publishing_one_name_at_once_get_one_409(db_url, tmp_path):  # noqa: ANN001
    """The check and the claim of a public name are one step (service.lock_public_names)."""
    settings, sessions = _site(db_url, tmp_path)
    with sessions() as s:
        users = [service.create_user(s, f"twin{i}", "password123") for i in range(2)]
        ids = [u.id for u in users]
    tasks = {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0}]}}
    for attempt in range(4):
        with sessions() as s:
            subs = [
                service.submit_reported(
                    s, settings, s.get(User, uid), name=f"Twin{attempt}", params_m=1,
                    paper_url="https://x.org", tasks=tasks, enforce_limits=False,
                ).id
                for uid in ids
            ]  # fmt: skip
        barrier, outcomes = threading.Barrier(2), []

        def publish(uid, sid, barrier=barrier, outcomes=outcomes):  # noqa: ANN001
            with sessions() as s:
                barrier.wait()
                try:
                    service.update_submission(s, s.get(User, uid), sid, public=True)
                    outcomes.append("published")
                except service.ServiceError as e:
                    outcomes.append(e.status)

        threads = [threading.Thread(target=publish, args=pair) for pair in zip(ids, subs, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes, key=str) == [409, "published"], outcomes
        with sessions() as s:
            assert sum(s.get(Submission, sid).public for sid in subs) == 1


class SubmissionError(Exception):
    """Matched by name by the worker, as the toolkit's."""


def _nul_evaluator(submission_dir, answers_dir, **kw):  # noqa: ANN001, ANN003, ANN202
    raise SubmissionError("sst-2/a.tsv, line 2: model.py printed 'x\x00y'")


def test_nul_characters_are_refused_or_dropped_not_a_server_error(db_url, tmp_path):  # noqa: ANN001
    c = TestClient(create_app(make_settings(tmp_path, database_url=db_url)), raise_server_exceptions=False)
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    sid = api_upload(c, h, name="m")["id"]
    r = c.patch(f"/api/submissions/{sid}", headers=h, json={"description": "a\x00b"})
    assert r.status_code == 200 and r.json()["description"] == "ab"
    r = c.patch(f"/api/submissions/{sid}", headers=h, json={"paper_url": "https://a\x00b"})
    assert r.status_code == 400 and "http(s)" in r.json()["detail"]
    r = c.post("/api/tokens", json={"username": "alice", "password": "password123", "name": "lap\x00top"})
    assert r.status_code == 200 and r.json()["name"] == "laptop"
    assert c.post("/api/tokens", json={"username": "ali\x00ce", "password": "password123"}).status_code == 401
    csrf = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"username": "ali\x00ce", "password": "password123", "csrf": csrf})
    assert r.status_code == 401
    body = {
        "name": "r",
        "params_m": 1,
        "paper_url": "https://example.com",
        "description": "d\x00",
        "tasks": {"sst-2": {"points": [{"mflops": 1, "performance": 2, "file": "x\x00y"}]}},
    }
    r = c.post("/api/submissions/reported", headers=h, json=body)
    assert r.status_code == 201, r.text
    m = c.get(f"/api/models/{r.json()['id']}", headers=h).json()
    assert m["description"] == "d" and m["result"]["tasks"]["sst-2"]["points"][0]["file"] == "xy"


def test_a_nul_in_the_scoring_message_fails_the_submission_with_it(db_url, tmp_path):  # noqa: ANN001
    settings = make_settings(tmp_path, database_url=db_url)
    c = TestClient(create_app(settings))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    sid = api_upload(c, h)["id"]
    assert run_worker(settings, once=True, evaluator=_nul_evaluator) == 1
    sub = c.get(f"/api/submissions/{sid}", headers=h).json()
    assert sub["status"] == "failed" and sub["attempts"] == 1
    assert sub["error"] == "sst-2/a.tsv, line 2: model.py printed 'x\ufffdy'"
    assert "\x00" not in sub["log"]


def test_web_processes_migrating_an_empty_database_side_by_side_do_not_race(db_url, tmp_path):  # noqa: ANN001
    """`uvicorn elue.server.asgi:app --workers N` on an empty database: every process migrates at import.
    They raced to create the tables (a duplicate-key error in some on PostgreSQL; "table alembic_version already
    exists" on a new SQLite file, which the seed lock's test never reached); now an advisory lock (PostgreSQL) or
    the write lock (SQLite) serialises them and the later ones find the schema made."""
    (tmp_path / "state").mkdir(exist_ok=True)  # the SQLite file's folder (open_database makes it)
    # the processes start migrating at the same moment: each says it is ready (imports done, engine made) and
    # waits for the go, given once all are ready (a fixed start time 3 s ahead was not, on a busy machine)
    child = (
        "import pathlib, sys, time\n"
        "from elue.server.db import make_engine, migrate\n"
        f"engine = make_engine({db_url!r})\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.005)\n"
        "migrate(engine)\n"
    )
    ready, go = [tmp_path / f"ready{i}" for i in range(3)], tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", child, str(r), str(go)], stderr=subprocess.PIPE, text=True)
        for r in ready
    ]
    try:
        wait_until(lambda: all(r.exists() for r in ready) or any(p.poll() is not None for p in procs),
                   what="the migrating processes to start")  # fmt: skip
    finally:
        go.touch()  # (a process that failed to start is reported below)
    errors = [p.communicate(timeout=PATIENCE_S)[1][-500:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors


def _site(db_url: str, tmp_path):  # noqa: ANN001, ANN202
    """(settings, sessionmaker) of a migrated site, for tests that call the service directly."""
    settings = make_settings(tmp_path, database_url=db_url)
    create_app(settings)
    return settings, open_database(settings.database_url, upgrade=False)[1]


def _reported_entry(settings, sessions, owner: str, public: bool = False) -> tuple[int, int]:  # noqa: ANN001
    """(user id, entry id) of a reported SST-2 entry with two points (a curve that can be a baseline)."""
    with sessions() as s:
        user = service.create_user(s, owner, "password123")
        points = [{"mflops": 500, "performance": 80.0}, {"mflops": 1500, "performance": 85.0}]
        sub = service.submit_reported(
            s, settings, user, name="Mine", params_m=1, paper_url="https://x.org", public=public,
            tasks={"sst-2": {"points": points}}, enforce_limits=False,
        )  # fmt: skip
        return user.id, sub.id


def _after_the_first_read(monkeypatch, then, reader: str = "get_owned") -> None:  # noqa: ANN001
    """Run `then()` once, right after the first `service.<reader>` has read the row (the point where a request
    has read the entry and not yet written it): the interleaving of two requests, made deterministic."""
    real, fired = getattr(service, reader), []

    def read(s, *args):  # noqa: ANN001, ANN202
        sub = real(s, *args)
        if not fired:
            fired.append(True)
            then()
        return sub

    monkeypatch.setattr(service, reader, read)


def _tombstone(sessions, sid: int) -> dict:  # noqa: ANN001
    with sessions() as s:
        sub = s.get(Submission, sid)
        return {
            k: getattr(sub, k) for k in ("status", "name", "public", "description", "paper_url", "code_url")
        }


TOMBSTONE = {"status": "deleted", "name": service.DELETED_NAME, "public": False, "description": "",
             "paper_url": "", "code_url": ""}  # fmt: skip
PATCHES = [
    {"name": "Renamed"},
    {"public": True},
    {"name": "Renamed", "public": True},
    {"description": "secret", "code_url": "https://code.example/x"},
]


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: "+".join(p))
def test_a_patch_that_read_the_entry_before_its_delete_is_a_404(db_url, tmp_path, monkeypatch, patch):  # noqa: ANN001
    """A rename or publish that had read the entry when its owner's delete committed wrote its name (and public
    flag, description) back onto the tombstone: now its write is conditional on the row not being deleted."""
    settings, sessions = _site(db_url, tmp_path)
    uid, sid = _reported_entry(settings, sessions, "alice")

    def delete() -> None:
        with sessions() as s:
            service.delete_submission(s, settings, s.get(User, uid), sid)

    _after_the_first_read(monkeypatch, delete)
    with sessions() as s, pytest.raises(service.ServiceError) as e:
        service.update_submission(s, s.get(User, uid), sid, **patch)
    assert e.value.status == 404
    assert _tombstone(sessions, sid) == TOMBSTONE


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: "+".join(p))
def test_a_delete_that_read_the_entry_before_a_patch_removes_the_patchs_text(
    db_url, tmp_path, monkeypatch, patch
):  # noqa: ANN001
    """The other order: a delete that read the entry before a PATCH committed wrote only what differed from what
    it had read, so a description or public flag the PATCH set meanwhile stayed on the tombstone."""
    settings, sessions = _site(db_url, tmp_path)
    uid, sid = _reported_entry(settings, sessions, "alice")

    def patch_it() -> None:
        with sessions() as s:
            service.update_submission(s, s.get(User, uid), sid, **patch)

    _after_the_first_read(monkeypatch, patch_it)
    with sessions() as s:
        service.delete_submission(s, settings, s.get(User, uid), sid)
    assert _tombstone(sessions, sid) == TOMBSTONE


@pytest.mark.parametrize("owner_action", ["unpublish", "delete"])
def test_an_entry_its_owner_withdraws_while_the_admin_chooses_it_is_no_baseline(
    db_url, tmp_path, monkeypatch, owner_action
):  # noqa: ANN001
    """The admin's choice had read the entry as public when its owner unpublished or deleted it (their check
    that it was no baseline passed): the dataset's baseline became a private or deleted entry. Now the choice
    holds the entry's row and checks it as it is."""
    settings, sessions = _site(db_url, tmp_path)
    uid, sid = _reported_entry(settings, sessions, "alice", public=True)
    with sessions() as s:
        before = s.get(Baseline, "sst-2")
        before = before.submission_id if before else None

    def withdraw() -> None:
        with sessions() as s:
            if owner_action == "delete":
                service.delete_submission(s, settings, s.get(User, uid), sid)
            else:
                service.update_submission(s, s.get(User, uid), sid, public=False)

    _after_the_first_read(monkeypatch, withdraw, reader="get_live")
    with sessions() as s, pytest.raises(service.ServiceError) as e:
        service.set_baseline(s, "sst-2", sid)
    assert e.value.status == (404 if owner_action == "delete" else 400)
    with sessions() as s:
        now = s.get(Baseline, "sst-2")
        assert (now.submission_id if now else None) == before


def test_an_entry_hidden_while_it_becomes_a_baseline_stays_visible(db_url, tmp_path, monkeypatch):  # noqa: ANN001
    """Hiding had read the entry when another admin's choice of it committed: it is refused, as its check reads
    the baselines as they are now. (This order passes without the row's lock too; the next test needs it.)"""
    settings, sessions = _site(db_url, tmp_path)
    _, sid = _reported_entry(settings, sessions, "alice", public=True)

    def choose() -> None:
        with sessions() as s:
            service.set_baseline(s, "sst-2", sid)

    real = service.get_live
    fired: list[bool] = []

    def read(s, sub_id):  # noqa: ANN001, ANN202
        sub = real(s, sub_id)
        if not fired:  # only the hiding request's read: the choice's own read runs the real one
            fired.append(True)
            monkeypatch.setattr(service, "get_live", real)
            choose()
        return sub

    monkeypatch.setattr(service, "get_live", read)
    with sessions() as s, pytest.raises(service.ServiceError) as e:
        service.set_hidden(s, sid, True)
    assert e.value.status == 409
    with sessions() as s:
        assert s.get(Baseline, "sst-2").submission_id == sid
        assert not s.get(Submission, sid).hidden


def test_an_entry_chosen_as_baseline_while_it_is_hidden_is_no_baseline(db_url, tmp_path, monkeypatch):  # noqa: ANN001
    """The window the test above does not reach (its choice commits before hiding checks, and the check reads the
    baselines afresh): hiding has found the entry to be no baseline and not yet committed when another admin's
    choice of it runs. Without the row's lock the choice found the entry visible and committed, then hiding
    committed: a hidden baseline. With it the choice waits for hiding's commit and refuses the hidden entry."""
    settings, sessions = _site(db_url, tmp_path)
    _, sid = _reported_entry(settings, sessions, "alice", public=True)
    chosen: list = []

    def choose() -> None:
        with sessions() as s:
            try:
                service.set_baseline(s, "sst-2", sid)
                chosen.append("chosen")
            except service.ServiceError as e:
                chosen.append(e.status)

    real = service._refuse_if_baseline
    chooser = threading.Thread(target=choose)

    def checked(s, sub):  # noqa: ANN001, ANN202
        real(s, sub)  # passed: no baseline yet
        chooser.start()
        chooser.join(
            2
        )  # without the lock it commits now; with it, it waits for hiding's commit (the timeout)

    monkeypatch.setattr(service, "_refuse_if_baseline", checked)
    with sessions() as s:
        service.set_hidden(s, sid, True)
    chooser.join(30)
    assert chosen == [400], chosen
    with sessions() as s:
        assert s.get(Submission, sid).hidden
        assert s.get(Baseline, "sst-2").submission_id != sid


def test_two_public_reported_entries_of_one_name_at_once_get_one_409(db_url, tmp_path, monkeypatch):  # noqa: ANN001
    """Two users post a public reported entry under one name at the same moment: both passed the name check
    before either stored its entry, and the board had two. The names lock makes the check and the insert one
    step: the second waits for the first's commit and gets the 409."""
    settings, sessions = _site(db_url, tmp_path)
    with sessions() as s:
        ids = [service.create_user(s, f"poster{i}", "password123").id for i in range(2)]
    # without the lock both requests meet here, past their checks; with it the second waits for the first's
    # commit, so the first waits out the barrier (the fixed code always pays this timeout)
    both_checked = threading.Barrier(2, timeout=3)
    real = service.check_name_free

    def slow_check(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        real(*a, **kw)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait()

    monkeypatch.setattr(service, "check_name_free", slow_check)
    outcomes: list = []
    tasks = {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0}]}}

    def post(uid: int) -> None:
        with sessions() as s:
            try:
                service.submit_reported(
                    s, settings, s.get(User, uid), name="Twin", params_m=1, paper_url="https://x.org",
                    tasks=tasks, public=True, enforce_limits=False,
                )  # fmt: skip
                outcomes.append("posted")
            except service.ServiceError as e:
                outcomes.append(e.status)

    run_at_once(post, ids)
    assert sorted(outcomes, key=str) == [409, "posted"], outcomes
    with sessions() as s:
        assert s.scalar(select(func.count(Submission.id)).where(Submission.name == "Twin")) == 1


def test_a_scored_entry_and_a_publish_of_its_name_at_once_get_one_name(db_url, tmp_path, monkeypatch):  # noqa: ANN001
    """The worker claims a queued public entry's name when it stores the result (worker._finish). An owner who
    publishes another entry of that name while the result is being written passed their check (the entry was
    not scored yet, so held no name), and the board had two. The worker holds the names lock from its check to
    its commit, so the publish waits and gets the 409. (On SQLite the worker's write lock serialises them too.)"""
    settings, sessions = _site(db_url, tmp_path)
    with sessions() as s:
        carol = service.create_user(s, "carol", "password123")
        queued = Submission(
            owner_id=carol.id, name="Twin", origin="measured", status=RUNNING, public=True, storage_key="k",
            lease_owner="w1",
        )  # fmt: skip
        s.add(queued)
        s.commit()
        sid = queued.id
    dave, other = _reported_entry(settings, sessions, "dave")  # private
    with sessions() as s:
        service.update_submission(s, s.get(User, dave), other, name="twin")
    published: list = []

    def publish() -> None:
        with sessions() as s:
            try:
                service.update_submission(s, s.get(User, dave), other, public=True)
                published.append("published")
            except service.ServiceError as e:
                published.append(e.status)

    publisher = threading.Thread(target=publish)
    real = worker.check_name_free

    def checked(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        real(*a, **kw)  # passed: dave's entry is private
        publisher.start()
        publisher.join(2)  # without the lock it publishes now; with it, it waits for the worker's commit

    monkeypatch.setattr(worker, "check_name_free", checked)
    result = {"tasks": {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0}], "params_m": 1}}}
    assert _finish(sessions, sid, "w1", status=SCORED, log_add="scored\n", result=result)
    publisher.join(30)
    assert published == [409], published
    with sessions() as s:
        assert s.get(Submission, sid).public and not s.get(Submission, other).public


def test_a_dead_local_workers_job_is_claimable_at_once(db_url, tmp_path):  # noqa: ANN001
    """A job held by a worker of this host whose process is gone is released at once (its lease is made to run
    out), not after the lease's full length; a live worker's job is kept."""
    s = make_settings(tmp_path, database_url=db_url, lease_seconds=600.0)
    engine, sessions = open_database(db_url)
    dead_job, live_job = _queue(sessions, 2)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    dead, live = f"{host}:{gone.pid}:dead", f"{host}:{os.getppid()}:live"  # pytest's parent lives on
    assert claim(sessions, s, dead) == dead_job and claim(sessions, s, live) == live_job
    assert claim(sessions, s, "other") is None  # both leases run for 600 s
    assert release_dead_local_leases(sessions) == 1
    assert claim(sessions, s, "other") == dead_job
    assert claim(sessions, s, "other") is None
    with sessions() as x:
        assert x.get(Submission, live_job).lease_owner == live
    engine.dispose()


def test_a_refusal_ends_its_transaction_before_the_caller_goes_on(db_url, tmp_path):  # noqa: ANN001
    """A refused change (unpublishing a baseline, here with a rename) leaves nothing half-done in the caller's
    session: a later commit of that session (the request's next write) stored the rename the refusal stopped,
    and the row's lock was held meanwhile."""
    settings, sessions = _site(db_url, tmp_path)
    uid, sid = _reported_entry(settings, sessions, "alice", public=True)
    with sessions() as s:
        service.set_baseline(s, "sst-2", sid)
    with sessions() as s:
        with pytest.raises(service.ServiceError) as e:
            service.update_submission(s, s.get(User, uid), sid, name="Renamed", public=False)
        assert e.value.status == 409

        def edit() -> None:  # the row is free again while the refused session is still open
            with sessions() as other:
                service.update_submission(other, other.get(User, uid), sid, description="edited")

        editor = threading.Thread(target=edit)
        editor.start()
        editor.join(PATIENCE_S)  # at once when the row is free; the whole wait only when the lock is held
        assert not editor.is_alive(), "the refused request still holds the row's lock"
        s.commit()
    assert _tombstone(sessions, sid) == {
        "status": SCORED, "name": "Mine", "public": True, "description": "edited", "paper_url": "https://x.org",
        "code_url": "",
    }  # fmt: skip


class _FirstCallHook:
    """`module` with `hook()` run once, before the first call of its function `name`."""

    def __init__(self, module, name: str, hook) -> None:  # noqa: ANN001
        self._module, self._name, self._hook, self._fired = module, name, hook, False

    def __getattr__(self, attr: str):  # noqa: ANN204
        real = getattr(self._module, attr)
        if attr != self._name:
            return real

        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if not self._fired:
                self._fired = True
                self._hook()
            return real(*args, **kwargs)

        return call


@pytest.mark.parametrize("made", ["seed", "secret key"])
def test_processes_starting_side_by_side_on_a_new_database_make_it_once(db_url, tmp_path, monkeypatch, made):  # noqa: ANN001
    """Two `elue serve` (two hosts, one PostgreSQL) or `uvicorn elue.server.asgi:app --workers N` starting on a
    new database: each found it unseeded (or without a secret key) and made its own; the second start failed
    with a duplicate key on the meta row. The second process here starts right after the first has looked."""
    settings = make_settings(tmp_path, database_url=db_url, secret_key=None)
    engine, sessions = open_database(db_url)

    def start():  # noqa: ANN202
        with sessions() as s:
            return service.seed_published(s) if made == "seed" else service.secret_key(s, settings)

    second: dict = {}

    def run_second() -> None:
        try:
            second["result"] = start()
        except Exception as e:  # noqa: BLE001
            second["error"] = e

    thread = threading.Thread(target=run_second)

    def second_process_starts() -> None:  # the first has found the database new
        thread.start()
        thread.join(1.0)  # it finishes meanwhile, or waits for the first (the fix)

    if made == "seed":  # the seed file is read right after the check
        monkeypatch.setattr(
            service, "resources", _FirstCallHook(service.resources, "files", second_process_starts)
        )
    else:
        monkeypatch.setattr(
            service, "secrets", _FirstCallHook(service.secrets, "token_urlsafe", second_process_starts)
        )
    first = start()
    thread.join(PATIENCE_S)
    assert "error" not in second, second.get("error")
    if made == "seed":
        assert sorted([first, second["result"]]) == [False, True]
        with sessions() as s:
            assert s.scalar(select(func.count(Submission.id))) == 9  # the published entries, once
    else:
        assert first == second["result"]  # one key for every process
    engine.dispose()
