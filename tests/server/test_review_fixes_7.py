"""Regression tests of the seventh review round of the leaderboard: a stored metric that is not finite, NUL
characters (PostgreSQL stores none; run against it when ELUE_TEST_POSTGRES_URL is set), `elue submit`'s small
numbers, a reported entry's paper link, log-in names in any case, and no-store on the answers for a user."""

from __future__ import annotations

from fastapi.testclient import TestClient
from server_helpers import api_upload
from server_setup import csrf_of, make_settings, token_for
from sqlalchemy import select

from elue.server import create_app
from elue.server.db import Point, bump_board_version
from elue.server.worker import run_worker


# ------------------------------------------------------------------ 1: a stored metric that is not finite
def test_a_non_finite_stored_metric_does_not_break_the_pages(client, auth, drain):  # noqa: ANN001
    sub = api_upload(client, auth("alice"), name="m", public=True)
    drain()
    with client.app.state.elue.sessions() as s:  # a row of another writer (the service never stores NaN)
        for p in s.scalars(select(Point)):
            if p.metrics:
                p.metrics = {**p.metrics, "accuracy": float("nan")}
        bump_board_version(s)
        s.commit()
    client.app.state.elue.board.invalidate()
    for url in ["/api/results.csv", f"/models/{sub['id']}", "/api/results.json", f"/api/models/{sub['id']}"]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])


# ------------------------------------------------------------------ 2: NUL characters (PostgreSQL stores none)
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


class SubmissionError(Exception):
    """Matched by name by the worker, as the toolkit's."""


def _nul_evaluator(submission_dir, answers_dir, **kw):  # noqa: ANN001, ANN003, ANN202
    raise SubmissionError("sst-2/a.tsv, line 2: model.py printed 'x\x00y'")


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


# ------------------------------------------------------------------ 3: elue submit prints small numbers
def test_elue_submit_prints_a_tiny_models_mflops_and_params(capsys):  # noqa: ANN001
    from elue.cli.server_commands import _print_result

    point = {"file": "exit1.tsv", "performance": 47.886, "mflops": 0.04814}
    task = {"elue_score": -30.42, "params_m": 0.005444, "points": [point]}
    _print_result({"status": "scored", "result": {"tasks": {"sst-2": task}, "elue_score": None}})
    out = capsys.readouterr().out
    assert "params 0.00544M" in out and "exit1.tsv: 47.89 @ 0.0481 MFLOPs" in out  # was 0.0M, 0.0 MFLOPs


# ------------------------------------------------------------------ 4: a reported entry keeps its paper link
def test_a_reported_entry_cannot_lose_its_paper_link(client, auth):  # noqa: ANN001
    h = auth("alice")
    body = {
        "name": "r",
        "params_m": 1,
        "paper_url": "https://example.com/p",
        "tasks": {"sst-2": {"elue_score": 1}},
    }
    sid = client.post("/api/submissions/reported", headers=h, json=body).json()["id"]
    r = client.patch(f"/api/submissions/{sid}", headers=h, json={"paper_url": ""})
    assert r.status_code == 400 and "paper" in r.json()["detail"]
    assert client.get(f"/api/submissions/{sid}", headers=h).json()["paper_url"] == "https://example.com/p"
    sid2 = api_upload(client, h)["id"]  # a measured entry needs none
    assert client.patch(f"/api/submissions/{sid2}", headers=h, json={"paper_url": ""}).status_code == 200


# ------------------------------------------------------------------ 5: log-in names in any case
def test_log_in_with_the_user_name_in_another_case(client, auth):  # noqa: ANN001
    auth("Alice")  # signed up as "Alice"; "alice" cannot sign up (names are unique in any case)
    r = client.post("/api/tokens", json={"username": "alice", "password": "password123"})
    assert r.status_code == 200 and r.json()["user"] == "Alice"
    csrf = csrf_of(client.get("/login").text)
    data = {"username": "ALICE ", "password": "password123", "csrf": csrf}
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text  # a phone's keyboard capitalises the first letter
    assert client.post("/api/tokens", json={"username": "alice", "password": "wrong-pass"}).status_code == 401


# ------------------------------------------------------------------ 6: pages of a logged-in user are not stored
def test_responses_for_a_user_tell_caches_not_to_store_them(client, auth):  # noqa: ANN001
    h = auth("alice")
    sid = api_upload(client, h)["id"]
    csrf = csrf_of(client.get("/login").text)
    data = {"username": "alice", "password": "password123", "csrf": csrf}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 303
    # a proxy in front of the site that caches pages must not hand alice's pages (her CSRF token, logs) to others
    for url in ["/account", f"/submissions/{sid}", "/leaderboard", f"/models/{sid}"]:
        assert "no-store" in client.get(url).headers.get("cache-control", ""), url
    client.cookies.clear()
    for url in [f"/api/submissions/{sid}", "/api/me", "/api/leaderboard"]:
        assert "no-store" in client.get(url, headers=h).headers.get("cache-control", ""), url
    assert "no-store" in client.get("/login").headers.get("cache-control", "")  # sets a session cookie
    client.cookies.clear()
    anon = client.get("/leaderboard")  # an anonymous page may be cached
    assert "set-cookie" not in anon.headers and "no-store" not in anon.headers.get("cache-control", "")
    plotly = client.get("/static/plotly.min.js", headers=h)  # the explicit caching of assets stays
    assert plotly.headers["cache-control"] == "public, max-age=86400"
