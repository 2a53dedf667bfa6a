"""Regression tests of the reviewer's findings on the leaderboard server (one test or more per item)."""

from __future__ import annotations

import json

from server_helpers import SUB, wait_until, zip_bytes
from server_helpers import api_upload as upload
from server_setup import csrf_of, token_for

PUBLIC_URLS = [
    "/",
    "/leaderboard",
    "/tasks/sst-2",
    "/api/leaderboard",
    "/api/models",
    "/api/tasks/sst-2",
    "/api/results.json",
    "/api/results.csv",
]


def reported(client, headers, name="Paper", **kw):  # noqa: ANN001, ANN201
    body = {
        "name": name,
        "params_m": 10,
        "paper_url": "https://example.org/p",
        "public": True,
        "tasks": {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0}]}},
        **kw,
    }
    return client.post("/api/submissions/reported", headers=headers, json=body)


def web_login(client, username: str) -> str:  # noqa: ANN001
    """Sign up `username`, log in through the form; returns the session's CSRF token."""
    token_for(client, username)
    csrf = csrf_of(client.get("/login").text)
    r = client.post(
        "/login", data={"username": username, "password": "password123", "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    return csrf_of(client.get("/submit").text)


# ------------------------------------------------------------------ 1: NaN / inf in reported entries
def test_non_finite_reported_numbers_are_refused(client, auth):  # noqa: ANN001
    h = auth("mallory")
    raw = (
        '{"name":"x","params_m":1e999,"paper_url":"https://x.org/p","public":true,'
        '"tasks":{"sst-2":{"points":[{"mflops":1e999,"performance":90}]},"mrpc":{"elue_score":NaN}}}'
    )
    r = client.post(
        "/api/submissions/reported", headers={**h, "content-type": "application/json"}, content=raw
    )
    assert r.status_code == 400, r.text
    for tasks in [
        {"sst-2": {"points": [{"mflops": 1e12, "performance": 90}]}},
        {"sst-2": {"points": [{"mflops": -1, "performance": 90}]}},
        {"sst-2": {"points": [{"mflops": 100, "performance": 100.5}]}},
        {"mrpc": {"elue_score": 1e300}},
        {"mrpc": {"elue_score": -101}},
        {"mrpc": {"elue_score": 1.0, "params_m": -5}},
    ]:
        r = reported(client, h, tasks=tasks)
        assert r.status_code == 400, (tasks, r.text)
    raw_params_only = (
        '{"name":"x","params_m":1e999,"paper_url":"https://x.org/p","public":true,'
        '"tasks":{"mrpc":{"elue_score":1}}}'
    )
    r = client.post(
        "/api/submissions/reported",
        headers={**h, "content-type": "application/json"},
        content=raw_params_only,
    )
    assert r.status_code == 400 and "params_m" in r.json()["detail"], r.text
    assert client.get("/api/submissions", headers=h).json() == []
    # the web form: inf params, nan score, an overflowing MFLOPs
    client.cookies.clear()
    csrf = web_login(client, "mallory2")
    for params, numbers in [
        ("inf", "sst-2, 1000, 50"),
        ("10", "mrpc, score=nan"),
        ("10", "sst-2, 1e400, 50"),
    ]:
        r = client.post(
            "/submit/reported",
            data={
                "name": "x",
                "params_m": params,
                "numbers": numbers,
                "paper_url": "https://x.org/p",
                "public": "1",
                "csrf": csrf,
            },
            headers={"accept": "text/html"},
        )
        assert r.status_code == 400, (params, numbers, r.text[:300])
    for url in PUBLIC_URLS:
        assert client.get(url).status_code == 200, url


def test_a_bad_stored_row_does_not_break_the_board(client, auth):  # noqa: ANN001
    """Rows written before the checks (or by another writer) with inf numbers are skipped, not a 500."""
    assert reported(client, auth("alice"), name="Broken").status_code == 201
    assert reported(client, auth("bob"), name="Fine", tasks={"mrpc": {"elue_score": 1.0}}).status_code == 201
    from sqlalchemy import select

    from elue.server.db import Point, Submission, TaskResult, bump_board_version

    with client.app.state.elue.sessions() as s:
        sub = s.scalar(select(Submission).where(Submission.name == "Broken"))
        sub.params_m = float("inf")
        for p in s.scalars(select(Point).join(TaskResult).where(TaskResult.submission_id == sub.id)):
            p.mflops = float("inf")
        sub.tasks.append(TaskResult(task="mrpc", reported_score=float("-inf"), params_m=float("inf")))
        bump_board_version(s)
        s.commit()
        sid = sub.id
    client.app.state.elue.board.invalidate()
    for url in [*PUBLIC_URLS, f"/models/{sid}", f"/api/models/{sid}"]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
    names = [m["name"] for m in client.get("/api/results.json").json()["models"]]
    assert "Fine" in names
    json.loads(client.get("/api/results.json").text)  # strict JSON: no NaN / Infinity


# ------------------------------------------------------------------ 2: limits count deleted uploads, hold under parallel uploads
def test_deleting_does_not_reset_the_limits_and_ids_are_not_reused(tmp_path):  # noqa: ANN001
    from fastapi.testclient import TestClient
    from server_setup import make_settings

    from elue.server import create_app

    c = TestClient(create_app(make_settings(tmp_path, daily_limit=2, monthly_limit=30)))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    a = upload(c, h)
    b = upload(c, h)
    assert c.delete(f"/api/submissions/{b['id']}", headers=h).status_code == 204
    r = c.post(
        "/api/submissions", headers=h, data={"name": "x"}, files={"file": ("s.zip", zip_bytes(SUB), "x")}
    )
    assert r.status_code == 429 and "daily limit" in r.json()["detail"]
    assert reported(c, h).status_code == 429  # reported entries count toward the same limits
    # the deleted entry is gone for everyone (also from the owner's list), its files too
    assert [s["id"] for s in c.get("/api/submissions", headers=h).json()] == [a["id"]]
    assert c.get(f"/api/submissions/{b['id']}", headers=h).status_code == 404
    assert c.patch(f"/api/submissions/{b['id']}", headers=h, json={"public": True}).status_code == 404
    # 13: the next submission (another user) gets a fresh id, not the deleted one's
    h2 = {"authorization": f"Bearer {token_for(c, 'bob')}"}
    assert upload(c, h2)["id"] > b["id"]


# ------------------------------------------------------------------ 12: only scored entries are public
def test_queued_and_failed_entries_have_no_public_page(client, auth, drain):  # noqa: ANN001
    h = auth("alice")
    queued = upload(client, h, name="queued one", public=True)
    failed = upload(client, h, name="failed one", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    for sid in (queued["id"], failed["id"]):
        assert client.get(f"/models/{sid}").status_code == 404
        assert client.get(f"/api/models/{sid}").status_code == 404
        assert client.get(f"/api/submissions/{sid}").status_code == 404
        assert client.get(f"/api/submissions/{sid}", headers=h).status_code == 200  # the owner sees it
    drain()
    assert client.get(f"/api/submissions/{failed['id']}", headers=h).json()["status"] == "failed"
    assert client.get(f"/models/{failed['id']}").status_code == 404
    ok = upload(client, h, name="good one", public=True)
    drain()
    assert client.get(f"/models/{ok['id']}").status_code == 200


# ------------------------------------------------------------------ 3: the server's scoring limits; deleting stops scoring


def test_scoring_timeout_stops_a_sleeping_model(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    import time

    from elue.server.worker import run_worker

    monkeypatch.setenv("ELUE_FAKE_SLEEP", "60")  # like model.py doing time.sleep(10**6): no CPU used
    monkeypatch.setenv("ELUE_FAKE_LIMITS", str(tmp_path / "limits.txt"))
    settings.scoring_timeout_s = 1.0
    settings.sandbox_wall_s = 7.0
    h = auth("sleepy")
    sub = upload(client, h)
    t0 = time.time()
    from server_fake_evaluator import evaluate

    assert run_worker(settings, once=True, evaluator=evaluate) == 1
    assert time.time() - t0 < 15
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert got["status"] == "failed" and "longer than the server's limit of 1 s" in got["error"]
    # the toolkit got the server's sandbox limit, not its own 600 s default
    assert float((tmp_path / "limits.txt").read_text()) == 7.0


def test_default_limits_are_shorter_than_the_toolkits():  # noqa: ANN001
    from elue.costs.sandbox import SandboxLimits
    from elue.server import Settings

    s = Settings()
    assert s.sandbox_wall_s == 120.0 and s.sandbox_wall_s < SandboxLimits().wall_s
    assert s.scoring_timeout_s < SandboxLimits().wall_s


def test_deleting_a_running_submission_stops_its_scoring(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    import os
    import threading

    from server_fake_evaluator import evaluate

    from elue.server.worker import run_worker

    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("ELUE_FAKE_SLEEP", "60")
    monkeypatch.setenv("ELUE_FAKE_COUNTER", str(counter))
    h = auth("deleter")
    sub = upload(client, h)
    stop = threading.Event()
    t = threading.Thread(target=run_worker, args=(settings,), kwargs={"stop": stop, "evaluator": evaluate})
    t.start()
    try:
        wait_until(lambda: counter.exists() and counter.read_text().strip(), 30, "scoring to start")
        pid = int(counter.read_text().split()[1])  # the scoring process
        assert pid != os.getpid()
        assert client.delete(f"/api/submissions/{sub['id']}", headers=h).status_code == 204
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the scoring process to be killed")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()


# ------------------------------------------------------------------ 7: stored error and log are capped
def test_huge_error_messages_are_capped(client, auth, drain):  # noqa: ANN001
    from elue.server.worker import MAX_ERROR_CHARS, MAX_LOG_CHARS

    h = auth("verbose")
    sub = upload(client, h, files={**SUB, "model.py": "# HUGE_ERROR\n"})
    drain()
    got = client.get(f"/api/submissions/{sub['id']}", headers=h).json()
    assert got["status"] == "failed"
    assert len(got["error"]) <= MAX_ERROR_CHARS and "(truncated)" in got["error"]
    assert len(got["log"]) <= MAX_LOG_CHARS and "(truncated)" in got["log"]
    assert "sst-2/a.tsv, line 1" in got["error"]  # the start of the message is kept
    listed = client.get("/api/submissions", headers=h).json()
    assert len(json.dumps(listed)) < 20_000


# ------------------------------------------------------------------ 5, 10: baselines
def test_only_public_scored_entries_can_be_baselines(client, auth, admin_headers, drain):  # noqa: ANN001
    h = auth("alice")
    private = upload(client, h, name="private model")
    queued = upload(client, h, name="queued model", public=True)
    drain()
    hidden = upload(client, h, name="hidden model", public=True)
    failed = upload(client, h, name="failed model", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    drain()
    r = client.post(
        f"/api/admin/submissions/{hidden['id']}/hide", headers=admin_headers, json={"hidden": True}
    )
    assert r.status_code == 200
    for sub in (private, hidden, failed):
        r = client.put("/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": sub["id"]})
        assert r.status_code == 400 and "cannot be a baseline" in r.json()["detail"], r.text
    assert client.get("/api/tasks/sst-2").json()["baseline"]["name"] == "ElasticBERT-BASE"
    # the admin page's choices: only public, visible, scored entries
    page = client.get("/admin", headers=admin_headers).text
    select = page[page.index('<select name="submission_id">') : page.index("</select>")]
    assert "queued model" in select  # scored by now, public
    for name in ("private model", "hidden model", "failed model"):
        assert name not in select
    r = client.put("/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": queued["id"]})
    assert r.status_code == 200


def test_admin_baseline_form_with_an_unknown_task(client):  # noqa: ANN001
    token_for(client, "admin", "admin-password", create=False)
    csrf = csrf_of(client.get("/login").text)
    client.post("/login", data={"username": "admin", "password": "admin-password", "csrf": csrf})
    csrf = csrf_of(client.get("/admin").text)
    r = client.post("/admin/baseline", data={"task": "nope", "submission_id": "1", "csrf": csrf})
    assert r.status_code == 400 and "nope" in r.text


# ------------------------------------------------------------------ 6: no posing as another public entry
def test_public_names_cannot_copy_another_users_entry(client, auth):  # noqa: ANN001
    h = auth("poser")
    r = reported(client, h, name="elasticbert-BASE ")
    assert r.status_code == 409 and "another public entry" in r.json()["detail"]
    assert (
        reported(client, h, name="ElasticBERT-BASE", tasks={"mrpc": {"elue_score": 1e300}}).status_code == 400
    )
    # private under that name is allowed, publishing it is not; nor renaming a public entry to it
    r = reported(client, h, name="ElasticBERT-BASE", public=False)
    assert r.status_code == 201
    sid = r.json()["id"]
    assert client.patch(f"/api/submissions/{sid}", headers=h, json={"public": True}).status_code == 409
    mine = reported(client, h, name="My own").json()["id"]
    r = client.patch(f"/api/submissions/{mine}", headers=h, json={"name": "ElasticBERT-base"})
    assert r.status_code == 409
    r = client.post(
        "/api/submissions",
        headers=h,
        data={"name": "RoBERTa-BASE", "public": "true"},
        files={"file": ("s.zip", zip_bytes(SUB), "application/zip")},
    )
    assert r.status_code == 409
    # one's own entries may share a name (e.g. a new version), and renaming to the same name is fine
    assert reported(client, h, name="My own").status_code == 201
    assert client.patch(f"/api/submissions/{mine}", headers=h, json={"name": "my OWN"}).status_code == 200


# ------------------------------------------------------------------ 8: huge ids
def test_huge_ids_are_not_a_server_error(client, auth):  # noqa: ANN001
    h = auth("counter")
    for url in [
        "/models/99999999999999999999",
        "/api/models/99999999999999999999",
        "/models/0",
        "/api/models/-1",
    ]:
        assert client.get(url).status_code in (404, 422), url
    for url in [
        "/api/submissions/99999999999999999999",
        f"/api/submissions/{2**63}",
        f"/api/submissions/{2**31}",
    ]:
        assert client.get(url, headers=h).status_code in (404, 422), url
        assert client.delete(url, headers=h).status_code in (404, 422), url
        assert client.patch(url, headers=h, json={"public": True}).status_code in (404, 422), url
    assert client.get(f"/api/models/{2**31 - 1}").status_code == 404


# ------------------------------------------------------------------ 9: non-ASCII CSRF token
def test_non_ascii_csrf_is_a_403(client):  # noqa: ANN001
    web_login(client, "accent")
    r = client.post("/account/tokens", data={"name": "t", "csrf": "é"})
    assert r.status_code == 403
    r = client.patch("/api/submissions/1", json={"public": True}, headers={"x-csrf-token": b"\xc3\xa9"})
    assert r.status_code == 403


# ------------------------------------------------------------------ 11: CSV formula injection
def test_results_csv_neutralises_formulas(client, auth):  # noqa: ANN001
    import csv
    import io

    h = auth("formula")
    names = ['=HYPERLINK("https://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)"]
    for name in names:
        assert reported(client, h, name=name).status_code == 201, name
    pts = {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0, "file": "\t=1+1"}]}}
    assert reported(client, auth("formula2"), name="files", tasks=pts).status_code == 201
    rows = list(csv.DictReader(io.StringIO(client.get("/api/results.csv").text)))
    got = {r["model"] for r in rows}
    for name in names:
        assert "'" + name in got and name not in got
    assert next(r for r in rows if r["model"] == "files")["file"] == "'\t=1+1"
    roberta = next(r for r in rows if r["model"] == "RoBERTa-BASE" and r["task"] == "sst-2")
    assert float(roberta["task_elue_score"]) < 0  # negative numbers stay numbers


# ------------------------------------------------------------------ 14: password guessing is throttled
def test_password_guessing_is_throttled(client):  # noqa: ANN001
    token_for(client, "target")
    token_for(client, "bystander")
    for _ in range(10):
        r = client.post("/api/tokens", json={"username": "target", "password": "guess"})
        assert r.status_code == 401
    r = client.post("/api/tokens", json={"username": "target", "password": "password123"})
    assert r.status_code == 429 and "too many failed log-ins" in r.json()["detail"]
    csrf = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": "Target", "password": "password123", "csrf": csrf})
    assert r.status_code == 429 and "too many failed log-ins" in r.text
    # other users are not affected; a success clears a user's count
    assert (
        client.post("/api/tokens", json={"username": "bystander", "password": "password123"}).status_code
        == 200
    )
    # the window passes
    import time

    client.app.state.elue.login_throttle.clock = lambda: time.time() + 301
    assert (
        client.post("/api/tokens", json={"username": "target", "password": "password123"}).status_code == 200
    )


# ------------------------------------------------------------------ 15: sorting
def test_sorting_keeps_unranked_rows_at_the_bottom(client, auth):  # noqa: ANN001
    import re

    assert reported(client, auth("inc"), name="Incomplete one").status_code == 201

    def ids(url: str) -> list:
        return [(r["rank"], r["name"]) for r in client.get(url).json()["rows"]]

    default = ids("/api/leaderboard")
    ranks = [k for k, _ in default]
    n = sum(k is not None for k in ranks)
    assert ranks[:n] == sorted(ranks[:n]) and ranks[0] == 1 and all(k is None for k in ranks[n:])
    assert ids("/api/leaderboard?sort=rank&order=asc") == default
    desc = ids("/api/leaderboard?sort=rank&order=desc")
    assert desc[:n] == default[:n][::-1] and desc[n:] == default[n:]
    # the page's "#" link: first click = rank 1 first; "Model": A→Z first
    html = client.get("/leaderboard").text
    assert 'href="?track=elue&amp;sort=rank&amp;order=desc"' in html or "sort=rank&order=desc" in html
    name_link = re.search(r'href="([^"]*sort=name[^"]*)"', html).group(1).replace("&amp;", "&")
    assert name_link.endswith("order=asc")
    page = client.get("/leaderboard" + name_link).text
    names = re.findall(r'<a href="/models/\d+">([^<]+)</a>', page)
    assert len(names) >= 10 and names == sorted(names, key=str.lower)
    first_rows = re.findall(
        r'<tr class="[^"]*" data-id="(\d+)"', client.get("/leaderboard?sort=rank&order=asc").text
    )
    assert first_rows[0] == str(
        next(r["id"] for r in client.get("/api/leaderboard").json()["rows"] if r["rank"] == 1)
    )


# ------------------------------------------------------------------ 16: HEAD
def test_head_requests(client):  # noqa: ANN001
    for url in [
        "/",
        "/leaderboard",
        "/tasks/sst-2",
        "/api/leaderboard",
        "/api/results.csv",
        "/datasets/sst-2/test.tsv",
    ]:
        get = client.get(url)
        head = client.head(url)
        assert head.status_code == 200, url
        assert head.content == b""
        assert head.headers.get("content-type") == get.headers.get("content-type")
    assert client.head("/models/99999").status_code == 404


def test_head_on_a_download_sends_headers_without_reading_the_file(client, monkeypatch):  # noqa: ANN001
    import starlette.responses as responses

    opened: list = []
    real_open = responses.anyio.open_file

    async def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        opened.append(args[0])
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(responses.anyio, "open_file", spy)
    for url in ("/datasets/sst-2/test.tsv", "/static/plotly.min.js"):
        head = client.head(url)
        assert head.status_code == 200 and head.content == b"", url
        assert opened == [], url
        get = client.get(url)
        assert len(get.content) == int(head.headers["content-length"]) > 0 and len(opened) == 1, url
        opened.clear()


# ------------------------------------------------------------------ 17: HTML errors, size message, links, favicon
def test_validation_errors_are_html_for_browsers(client):  # noqa: ANN001
    html = {"accept": "text/html,application/xhtml+xml"}
    r = client.get("/models/1.5", headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "invalid request" in r.text and "model_id" in r.text
    assert client.get("/api/models/1.5", headers=html).headers["content-type"].startswith("application/json")
    assert client.get("/models/1.5").headers["content-type"].startswith("application/json")  # scripts
    csrf = web_login(client, "former")
    r = client.post("/submit", data={"csrf": csrf}, headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "file: missing" in r.text and "name: missing" in r.text
    assert 'id="account-link">former<' in r.text  # the error page's header knows who is logged in
    assert 'id="account-link">former<' in client.get("/models/99999", headers=html).text


def test_upload_limit_message_names_the_configured_limit(tmp_path):  # noqa: ANN001
    from fastapi.testclient import TestClient
    from server_setup import make_settings

    from elue.server import create_app

    c = TestClient(create_app(make_settings(tmp_path, max_upload_bytes=2 * 1024 * 1024)))
    h = {"authorization": f"Bearer {token_for(c, 'big')}"}
    r = c.post(
        "/api/submissions", headers=h, data={"name": "x"}, files={"file": ("s.zip", b"0" * (4 << 20), "x")}
    )
    assert r.status_code == 413 and "the limit is 2 MB" in r.json()["detail"], r.text


def test_links_long_and_upper_case(client, auth):  # noqa: ANN001
    h = auth("linker")
    r = reported(client, h, paper_url="https://example.org/" + "a" * 600)
    assert r.status_code == 400 and "500 characters" in r.json()["detail"]
    r = reported(client, h, paper_url="HTTPS://Example.org/Paper")
    assert r.status_code == 201 and r.json()["paper_url"] == "HTTPS://Example.org/Paper"
    assert reported(client, h, name="js", paper_url="JavaScript:alert(1)").status_code == 400


def test_favicon(client):  # noqa: ANN001
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00" and b"PNG" in r.content


# ------------------------------------------------------------------ 18: a bad token on public reads
def test_bad_token_reads_public_pages_as_anonymous(client):  # noqa: ANN001
    bad = {"authorization": "Bearer nope"}
    for url in ["/leaderboard", "/", "/tasks/sst-2", "/api/leaderboard", "/api/tasks/sst-2", "/models/1"]:
        assert client.get(url, headers=bad).status_code == 200, url
    r = client.get("/api/me", headers=bad)
    assert r.status_code == 401 and r.json()["detail"] == "invalid API token"
    assert client.get("/api/submissions", headers=bad).status_code == 401
    r = client.post("/api/submissions/reported", headers=bad, json={})
    assert r.status_code in (401, 422)
    assert client.patch("/api/submissions/1", headers=bad, json={"public": False}).status_code == 401


# ------------------------------------------------------------------ second review
def test_look_alike_names_are_the_same_name(client, auth):  # noqa: ANN001
    h = auth("poser2")
    for name in (
        "ElasticBERT-BASE\u200b",
        "\uff25lasticBERT-BASE",
        "ElasticBERT-\u200dBASE",
        " elasticbert-base ",
    ):
        r = reported(client, h, name=name)
        assert r.status_code == 409, (name, r.text)
    # non-ASCII letters fold on SQLite too (its lower() only folds ASCII)
    assert reported(client, auth("bob2"), name="Ünïcode Model").status_code == 201
    assert reported(client, h, name="üNÏCODE model").status_code == 409
    assert reported(client, h, name="(Deleted)").status_code == 400  # a deleted entry's placeholder


def test_entries_nobody_can_see_do_not_hold_their_name(client, auth, drain):  # noqa: ANN001
    owner = auth("secretive")
    upload(client, owner, name="Secret Project X", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    drain()  # fails: public in name only
    assert reported(client, auth("carol2"), name="secret project x").status_code == 201


def test_a_task_given_twice_is_refused(client, auth):  # noqa: ANN001
    tasks = {"sst-2": {"points": [{"mflops": 5, "performance": 50}]}, "SST2": {"elue_score": 3}}
    r = reported(client, auth("twice"), tasks=tasks)
    assert r.status_code == 400 and "given twice" in r.json()["detail"]


def test_scoring_limits_from_arguments_and_environment(monkeypatch, tmp_path):  # noqa: ANN001
    import pytest

    from elue.server.config import Settings

    monkeypatch.setenv("ELUE_SANDBOX_WALL_S", "99")
    assert Settings(state_dir=tmp_path).sandbox_wall_s == 99.0
    assert Settings(state_dir=tmp_path, sandbox_wall_s=10).sandbox_wall_s == 10  # arguments win
    for bad in ("nan", "0", "-1", "soon"):
        monkeypatch.setenv("ELUE_SCORING_TIMEOUT_S", bad)
        with pytest.raises(ValueError, match="ELUE_SCORING_TIMEOUT_S"):
            Settings(state_dir=tmp_path)
    monkeypatch.delenv("ELUE_SCORING_TIMEOUT_S")
    with pytest.raises(ValueError, match="scoring_timeout_s"):
        Settings(state_dir=tmp_path, scoring_timeout_s=float("inf"))


# ------------------------------------------------------------------ second audit
def test_reported_numbers_must_be_json_numbers(client, auth):  # noqa: ANN001
    h = auth("lax")
    for tasks in [
        {"sst-2": {"points": [{"mflops": 100, "performance": True}]}},
        {"sst-2": {"points": [{"mflops": "100", "performance": 90}]}},
        {"mrpc": {"elue_score": False, "params_m": 10}},
    ]:
        r = reported(client, h, tasks=tasks)
        assert r.status_code == 422 and "valid number" in r.text, (tasks, r.text)  # FastAPI's type errors
    assert reported(client, h, params_m=True).status_code == 422
    assert client.get("/api/submissions", headers=h).json() == []
    assert reported(client, h, params_m=10).status_code == 201  # ints are numbers


def test_a_name_taken_while_queued_keeps_the_entry_private(client, auth, drain):  # noqa: ANN001
    carol = auth("carol3")
    sub = upload(client, carol, name="Twin", public=True)  # queued: holds no name yet
    assert reported(client, auth("dave3"), name="twin").status_code == 201
    drain()
    mine = client.get(f"/api/submissions/{sub['id']}", headers=carol).json()
    assert mine["status"] == "scored" and mine["public"] is False
    assert "not published: another public entry is called 'Twin'" in mine["log"]
    names = [m["name"].lower() for m in client.get("/api/models").json()]
    assert names.count("twin") == 1


def test_a_baseline_curve_that_cannot_score_is_refused(client, auth, admin_headers):  # noqa: ANN001
    tasks = {"sst-2": {"points": [{"mflops": 100, "performance": 90}, {"mflops": 100, "performance": 85}]}}
    r = reported(client, auth("flat"), name="Flat", tasks=tasks)
    assert r.status_code == 201
    r = client.put(
        "/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": r.json()["id"]}
    )
    assert r.status_code == 400 and "distinct FLOPs" in r.json()["detail"], r.text


def test_the_guide_names_the_configured_address(client, settings):  # noqa: ANN001
    assert f"--server {settings.public_url} --token" in client.get("/guide").text
    # never the request's Host header: the guide is cached for every visitor
    assert "evil.example" not in client.get("/guide", headers={"host": "evil.example"}).text


def test_sign_ups_per_address_are_limited(tmp_path):  # noqa: ANN001
    from fastapi.testclient import TestClient
    from server_setup import make_settings

    from elue.server import create_app

    client = TestClient(
        create_app(make_settings(tmp_path, signup_limit=2), admin=("admin", "admin-password"))
    )
    token_for(client, "first")
    token_for(client, "second")
    csrf = csrf_of(client.get("/signup").text)
    form = {"username": "third", "password": "password123", "password2": "password123", "csrf": csrf}
    r = client.post("/signup", data=form, follow_redirects=False)
    assert r.status_code == 429 and "2 accounts were made from your address" in r.text
    r = client.post("/api/tokens", json={"username": "third", "password": "password123", "name": "x"})
    assert r.status_code == 401  # nothing was made
    # the admin is not counted (made by `elue serve --admin`, not through the form) and others are not held up
    other = TestClient(client.app, client=("10.0.0.9", 5000))
    token_for(other, "from-elsewhere")


def test_size_tracks_list_reported_entries_without_performance(client):  # noqa: ANN001
    rows = client.get("/api/leaderboard?track=40").json()["rows"]
    albert = [r for r in rows if r["name"] == "ALBERT-BASE"]
    assert albert and albert[0]["complete"] is False and albert[0]["rank"] is None


def test_a_task_without_a_baseline_curve_says_so(client):  # noqa: ANN001
    assert 'id="no-baseline"' in client.get("/tasks/mrpc").text
    assert 'id="no-baseline"' not in client.get("/tasks/sst-2").text


def test_the_token_form_address_leads_to_the_account(client):  # noqa: ANN001
    web_login(client, "tokens-page")
    r = client.get("/account/tokens", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/account"
