"""Regression tests of the sixth review round of the leaderboard: the sandbox's copy of model.py after a
cancelled job, unhiding a name taken meanwhile, an admin password reset, secure cookies, symlinks in
`elue submit`'s folder and its answers from the server."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import typer
from server_helpers import SUB, TSV, api_upload, wait_until, zip_bytes
from server_setup import csrf_of, make_settings, serve_args
from sqlalchemy import update
from test_review_fixes import reported

from elue.cli.server_commands import _submit
from elue.server import Settings, create_app, service
from elue.server.db import RUNNING, Submission, open_database
from elue.server.storage import UploadError, zip_folder
from elue.server.worker import run_worker


# ------------------------------------------------------------------ 1: the sandbox's model.py copies
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


def test_a_cancelled_job_leaves_no_copy_of_model_py(client, auth, settings):  # noqa: ANN001
    before = _copies(settings)
    h = auth("sleeper")
    sub = api_upload(client, h, files={**SUB, "model.py": "import time\ntime.sleep(120)\n"})
    stop = threading.Event()
    kw = {"stop": stop, "evaluator": _pricing_evaluator}
    t = threading.Thread(target=run_worker, args=(settings,), kwargs=kw)
    t.start()
    try:
        wait_until(lambda: _copies(settings) - before, 60, "the sandbox to copy model.py")
        assert client.delete(f"/api/submissions/{sub['id']}", headers=h).status_code == 204
        wait_until(lambda: not _copies(settings) - before, 15, "the copy of model.py to be removed")
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


# ------------------------------------------------------------------ 2: unhiding checks the name
def test_unhiding_refuses_a_name_taken_meanwhile(client, auth, admin_headers):  # noqa: ANN001
    alice, bob = auth("alice"), auth("bob")
    first = reported(client, alice, name="Twin").json()

    def hide(hidden: bool) -> httpx.Response:
        url = f"/api/admin/submissions/{first['id']}/hide"
        return client.post(url, headers=admin_headers, json={"hidden": hidden})

    assert hide(True).status_code == 200
    second = reported(client, bob, name="twin")  # a hidden entry holds no name
    assert second.status_code == 201, second.text
    r = hide(False)
    assert r.status_code == 409 and "another public entry is called 'Twin'" in r.json()["detail"], r.text
    names = [x["name"] for x in client.get("/api/leaderboard").json()["rows"]]
    assert names.count("Twin") + names.count("twin") == 1
    assert client.patch(f"/api/submissions/{first['id']}", headers=alice, json={"name": "Twin 2"}).is_success
    assert hide(False).status_code == 200


# ------------------------------------------------------------------ 3: a reset admin password logs out
def test_resetting_the_admin_password_ends_its_sessions(client, settings):  # noqa: ANN001
    csrf = csrf_of(client.get("/login").text)
    form = {"username": "admin", "password": "admin-password", "csrf": csrf}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 303
    assert client.get("/account", follow_redirects=False).status_code == 200
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:
        service.ensure_admin(s, "admin", "new-admin-password")
    assert client.get("/account", follow_redirects=False).status_code == 303
    with sessions() as s:  # the same password again changes nothing
        service.ensure_admin(s, "admin", "new-admin-password")
        assert service.authenticate(s, "admin", "new-admin-password") is not None


# ------------------------------------------------------------------ 4: secure cookies
def test_secure_cookies_follow_an_https_public_url_unless_set(tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.delenv("ELUE_SECURE_COOKIES", raising=False)
    assert make_settings(tmp_path, public_url="https://elue.example.org/").secure_cookies is True
    assert make_settings(tmp_path, public_url="http://127.0.0.1:8000").secure_cookies is False
    assert make_settings(tmp_path, public_url="https://x.org", secure_cookies=False).secure_cookies is False
    monkeypatch.setenv("ELUE_SECURE_COOKIES", "0")
    assert make_settings(tmp_path, public_url="https://x.org").secure_cookies is False
    monkeypatch.setenv("ELUE_SECURE_COOKIES", "1")
    settings = make_settings(tmp_path, public_url="http://127.0.0.1:8000")
    assert settings.secure_cookies is True and settings.to_env()["ELUE_SECURE_COOKIES"] == "1"
    monkeypatch.setenv("ELUE_SECURE_COOKIES", "yes please")
    with pytest.raises(ValueError, match="ELUE_SECURE_COOKIES"):
        make_settings(tmp_path)
    # the cookie a log-in sets says so
    monkeypatch.delenv("ELUE_SECURE_COOKIES")
    app = create_app(make_settings(tmp_path, public_url="https://x.org"), admin=("admin", "admin-password"))
    from fastapi.testclient import TestClient

    client = TestClient(app, base_url="https://testserver")
    csrf = csrf_of(client.get("/login").text)
    form = {"username": "admin", "password": "admin-password", "csrf": csrf}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-secure-cookies"], False)])
def test_elue_serve_sets_secure_cookies(tmp_path, monkeypatch, flag, expected):  # noqa: ANN001
    from typer.testing import CliRunner

    from elue.cli import app as cli

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "ELUE_SECURE_COOKIES"})
    monkeypatch.setattr("signal.signal", lambda *a: None)  # serve installs a SIGTERM handler
    seen = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: seen.append(app.state.elue.settings))
    settings = make_settings(tmp_path)
    args = [*serve_args(settings), "--public-url", "https://elue.example.org", *flag]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert seen[0].secure_cookies is expected
    assert os.environ["ELUE_SECURE_COOKIES"] == ("1" if expected else "0")  # for the other web processes


# ------------------------------------------------------------------ 5: symlinks in `elue submit DIR`
def test_zip_folder_refuses_a_symlink(tmp_path):  # noqa: ANN001
    folder = tmp_path / "sub"
    (folder / "sst-2").mkdir(parents=True)
    (folder / "model.py").write_text("x = 1\n")
    (tmp_path / "elsewhere.tsv").write_text(TSV)
    (folder / "sst-2" / "a.tsv").symlink_to(tmp_path / "elsewhere.tsv")
    (folder / ".venv").mkdir()
    (folder / ".venv" / "python").symlink_to("/usr/bin/python3")  # hidden: skipped, as before
    with pytest.raises(UploadError, match=r"sst-2/a\.tsv is a symbolic link"):
        zip_folder(folder)
    (folder / "sst-2" / "a.tsv").unlink()
    (folder / "sst-2" / "a.tsv").write_text(TSV)
    assert zip_folder(folder)


# ------------------------------------------------------------------ 6: `elue submit`
def _run_submit(client, path: Path, **kw) -> int:  # noqa: ANN001
    args = {"name": None, "public": False, "paper_url": "", "code_url": "", "reported": False, "wait": False}
    args.update(kw)
    with pytest.raises(typer.Exit) as e:
        _submit(client, "http://testserver", path, *args.values(), 60.0)
    return e.value.exit_code


def test_submit_dot_is_named_after_the_folder(client, auth, monkeypatch, tmp_path):  # noqa: ANN001
    h = auth("dotty")
    client.headers.update(h)
    folder = tmp_path / "my-dot-model"
    (folder / "sst-2").mkdir(parents=True)
    for rel, text in SUB.items():
        (folder / rel).write_text(text)
    monkeypatch.chdir(folder)
    assert _run_submit(client, Path(".")) == 0
    zipped = tmp_path / "zipped-model.zip"
    zipped.write_bytes(zip_bytes(SUB))
    assert _run_submit(client, zipped) == 0
    names = [x["name"] for x in client.get("/api/submissions", headers=h).json()]
    assert sorted(names) == ["my-dot-model", "zipped-model"]


def test_submit_reported_takes_the_link_options(client, auth, tmp_path):  # noqa: ANN001
    client.headers.update(auth("linker"))
    entry = tmp_path / "entry.json"
    entry.write_text(
        json.dumps({"name": "From paper", "params_m": 10, "tasks": {"sst-2": {"elue_score": 1.0}}})
    )
    paper, code = "https://example.org/paper", "https://example.org/code"
    assert _run_submit(client, entry, reported=True, paper_url=paper, code_url=code) == 0
    got = client.get("/api/submissions").json()[0]
    assert (got["paper_url"], got["code_url"]) == (paper, code)
    entry.write_text("[1, 2]")
    with pytest.raises(typer.BadParameter, match="JSON object"):
        _run_submit(client, entry, reported=True)


def _mock_client(handler) -> httpx.Client:  # noqa: ANN001
    return httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "model.py").write_text("x = 1\n")
    return folder


def test_submit_says_when_the_submission_is_deleted_while_it_waits(tmp_path, capsys, monkeypatch):  # noqa: ANN001
    monkeypatch.setattr(time, "sleep", lambda _: None)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"id": 7, "status": "queued"})
        return httpx.Response(404, json={"detail": "no such submission"})

    assert _run_submit(_mock_client(handler), _folder(tmp_path), wait=True) == 1
    assert "submission 7 is gone from the server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("post", "get"),
    [
        (httpx.Response(202, json=[1, 2]), None),
        (httpx.Response(400, json=["refused"]), None),
        (httpx.Response(202, json={"id": 7, "status": "queued"}), httpx.Response(200, json="scored")),
        (httpx.Response(202, text="<html>proxy error</html>"), None),
    ],
)
def test_submit_answers_that_are_not_objects_are_one_line(tmp_path, capsys, monkeypatch, post, get):  # noqa: ANN001
    monkeypatch.setattr(time, "sleep", lambda _: None)
    client = _mock_client(lambda request: post if request.method == "POST" else get)
    assert _run_submit(client, _folder(tmp_path), wait=True) == 1
    err = capsys.readouterr().err
    assert "unexpected answer from the server" in err or "rejected (400)" in err, err
