"""Accounts: log-in, CSRF, API tokens, password guessing."""

from __future__ import annotations

import contextlib
import re
import threading
import time

import pytest
from fastapi.testclient import TestClient
from server_helpers import run_at_once
from server_setup import csrf_of, make_settings, token_for, web_login
from sqlalchemy import func, select

from elue.server import create_app
from elue.server.db import User


def test_non_ascii_csrf_is_a_403(client):  # noqa: ANN001
    web_login(client, "accent")
    r = client.post("/account/tokens", data={"name": "t", "csrf": "é"})
    assert r.status_code == 403
    r = client.patch("/api/submissions/1", json={"public": True}, headers={"x-csrf-token": b"\xc3\xa9"})
    assert r.status_code == 403


def test_password_guessing_is_throttled(client):  # noqa: ANN001
    token_for(client, "target")
    token_for(client, "bystander")
    for _ in range(10):
        r = client.post("/api/tokens", json={"username": "target", "password": "guess"})
        assert r.status_code == 401
    r = client.post("/api/tokens", json={"username": "target", "password": "password123"})
    assert r.status_code == 429 and "too many failed log-ins" in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 300  # a script's retry loop knows how long to wait
    csrf = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": "Target", "password": "password123", "csrf": csrf})
    assert r.status_code == 429 and "too many failed log-ins" in r.text
    # other users are not affected; a success clears a user's count
    assert (
        client.post("/api/tokens", json={"username": "bystander", "password": "password123"}).status_code
        == 200
    )
    # the window passes

    client.app.state.elue.login_throttle.clock = lambda: time.time() + 301
    assert (
        client.post("/api/tokens", json={"username": "target", "password": "password123"}).status_code == 200
    )


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


def test_a_token_from_http_basic_credentials_needs_no_body(client, auth):  # noqa: ANN001
    """`curl -u name:password -X POST /api/tokens` (the docs' "or with HTTP Basic credentials") was a 422
    asking for a JSON body; with `{}` it worked."""
    auth("basic-user")
    r = client.post("/api/tokens", auth=("basic-user", "password123"))
    assert r.status_code == 200, r.text
    assert r.json()["user"] == "basic-user" and r.json()["name"] == ""
    me = client.get("/api/me", headers={"authorization": f"Bearer {r.json()['token']}"})
    assert me.json()["username"] == "basic-user"
    r = client.post("/api/tokens", auth=("basic-user", "wrong-password"))
    assert r.status_code == 401 and r.json() == {"detail": "wrong user name or password"}
    # nothing at all: told to log in, not that a body is missing
    r = client.post("/api/tokens")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_an_api_write_without_the_csrf_header_says_what_the_api_wants(client):  # noqa: ANN001
    """A session's API write without X-CSRF-Token was told "the form expired … reload and retry" (no form)."""
    csrf = web_login(client, "session-script")
    r = client.post("/api/tokens", json={"name": "x"})
    assert r.status_code == 403 and "X-CSRF-Token header" in r.json()["detail"], r.text
    assert "Authorization: Bearer" in r.json()["detail"]
    assert client.post("/api/tokens", json={"name": "x"}, headers={"x-csrf-token": csrf}).status_code == 200
    # a page's form keeps its words
    r = client.post("/account/tokens", data={"name": "t", "csrf": "forged"}, headers={"accept": "text/html"})
    assert r.status_code == 403 and "form expired" in r.text


def test_the_token_form_address_leads_to_the_account(client):  # noqa: ANN001
    web_login(client, "tokens-page")
    r = client.get("/account/tokens", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/account"


def test_log_in_with_the_user_name_in_another_case(client, auth):  # noqa: ANN001
    auth("Alice")  # signed up as "Alice"; "alice" cannot sign up (names are unique in any case)
    r = client.post("/api/tokens", json={"username": "alice", "password": "password123"})
    assert r.status_code == 200 and r.json()["user"] == "Alice"
    csrf = csrf_of(client.get("/login").text)
    data = {"username": "ALICE ", "password": "password123", "csrf": csrf}
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text  # a phone's keyboard capitalises the first letter
    assert client.post("/api/tokens", json={"username": "alice", "password": "wrong-pass"}).status_code == 401


@pytest.mark.parametrize("second", ["twin", "TWIN"])
def test_two_sign_ups_of_one_name_at_once_make_one_account(db_url, tmp_path, monkeypatch, second):  # noqa: ANN001
    """A double-clicked sign-up form (or two people choosing one name at the same moment): both requests used to
    pass the "taken" check before either stored its row, so the second was a 500 (the unique index), or, for the
    name in another case, a second account that could never log in (names are unique in any case)."""
    from elue.server import service

    app = create_app(make_settings(tmp_path, database_url=db_url))
    # the sign-up's clock is read by the per-address limit, after the name check and before the insert: without
    # the lock both requests meet here, past their checks; with it the second waits for the first's commit, so
    # the first waits out the barrier (the fixed code always pays this timeout)
    both_checked = threading.Barrier(2, timeout=3)
    real_now = service.utcnow

    def slow_now():  # noqa: ANN202
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait()
        return real_now()

    monkeypatch.setattr(service, "utcnow", slow_now)
    answers = []

    def sign_up(name: str) -> None:
        c = TestClient(app, raise_server_exceptions=False)
        form = {"username": name, "password": "password123", "password2": "password123"}
        form["csrf"] = csrf_of(c.get("/signup").text)
        answers.append(c.post("/signup", data=form, follow_redirects=False).status_code)

    run_at_once(sign_up, ["twin", second])
    assert sorted(answers) == [303, 409], answers
    with app.state.elue.sessions() as s:
        names = s.scalars(select(User.username).where(func.lower(User.username) == "twin")).all()
    assert len(names) == 1, names


def test_an_unknown_user_name_costs_one_password_hash_as_a_known_one(client, monkeypatch):  # noqa: ANN001
    """Log-in must not tell which names have accounts by its time: the unknown name took two scrypt runs
    (a dummy hashed, then checked) where a known one takes one."""
    import hashlib

    token_for(client, "known")
    calls = []
    scrypt = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or scrypt(*a, **k))
    costs = {}
    for name in ("known", "unknown-name", "known"):
        calls.clear()
        r = client.post("/api/tokens", json={"username": name, "password": "wrong-password"})
        assert r.status_code == 401
        costs[name] = len(calls)
    assert costs == {"known": 1, "unknown-name": 1}


def test_changing_the_password_ends_every_other_session(app, client):  # noqa: ANN001
    """There was no way to change a password (a leaked one stayed valid for good). Now: the current password is
    checked, the old one stops working, every other session of the user ends, the one asking goes on with a
    fresh session, and API tokens stay."""
    csrf = web_login(client, "changer")
    other = TestClient(app)  # the same user in another browser
    other_csrf = csrf_of(other.get("/login").text)
    other.post("/login", data={"username": "changer", "password": "password123", "csrf": other_csrf})
    assert other.get("/account", follow_redirects=False).status_code == 200
    token = token_for(TestClient(app), "changer", create=False)
    old_cookie = client.cookies.get("elue_session")

    def change(current: str, new: str, new2: str | None = None, token: str | None = None):  # noqa: ANN202
        data = {"current": current, "new": new, "new2": new2 or new, "csrf": token or csrf}
        return client.post("/account/password", data=data, follow_redirects=False)

    assert change("password123", "new-password", "other-password").status_code == 400
    r = change("wrong-password", "new-password")
    assert r.status_code == 401 and "the current password is wrong" in r.text
    assert change("password123", "short").status_code == 400
    assert change("password123", "new-password", token="forged").status_code == 403
    r = change("password123", "new-password")
    assert r.status_code == 303 and r.headers["location"] == "/account?password=changed"
    page = client.get(r.headers["location"], follow_redirects=False)
    assert page.status_code == 200 and 'id="password-changed"' in page.text
    assert csrf_of(page.text) != csrf  # a fresh session
    assert other.get("/account", follow_redirects=False).status_code == 303  # logged out
    stolen = TestClient(app, cookies={"elue_session": old_cookie})
    assert stolen.get("/account", follow_redirects=False).status_code == 303
    assert (
        client.post("/api/tokens", json={"username": "changer", "password": "password123"}).status_code == 401
    )
    assert (
        client.post("/api/tokens", json={"username": "changer", "password": "new-password"}).status_code
        == 200
    )
    assert client.get("/api/me", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert (
        TestClient(app)
        .post("/account/password", data={"current": "x", "new": "y" * 8, "new2": "y" * 8})
        .status_code
        == 403
    )


def test_a_401_of_the_api_names_the_bearer_scheme(client):  # noqa: ANN001
    r = client.get("/api/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    bad = {"authorization": "Bearer elue_nonsense"}
    for r in (client.get("/api/me", headers=bad), client.delete("/api/submissions/1", headers=bad)):
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_api_tokens_per_user_are_bounded(client, monkeypatch):  # noqa: ANN001
    """One account could add token rows without end (from a session they cost the site nothing)."""
    from elue.server import service

    monkeypatch.setattr(service, "MAX_TOKENS", 3)
    csrf = web_login(client, "hoarder")  # holds one token already (token_for)
    for _ in range(2):
        assert client.post("/account/tokens", data={"name": "t", "csrf": csrf}).status_code == 200
    r = client.post("/account/tokens", data={"name": "t", "csrf": csrf}, headers={"accept": "text/html"})
    assert r.status_code == 409 and "revoke one first" in r.text
    r = client.post("/api/tokens", json={"username": "hoarder", "password": "password123"})
    assert r.status_code == 409
    page = client.get("/account").text
    token_id = re.search(r'action="/account/tokens/(\d+)/delete"', page).group(1)
    assert client.post(f"/account/tokens/{token_id}/delete", data={"csrf": csrf}).status_code == 200
    assert (
        client.post("/api/tokens", json={"username": "hoarder", "password": "password123"}).status_code == 200
    )


def test_a_token_name_over_the_limit_is_refused_with_its_length(client):  # noqa: ANN001
    """A 300-character token name was stored cut at 100 without a word (as descriptions once were)."""
    csrf = web_login(client, "namer")
    r = client.post("/api/tokens", json={"username": "namer", "password": "password123", "name": "x" * 300})
    assert r.status_code == 400
    assert r.json() == {"detail": "the token name has 300 characters: at most 100"}
    r = client.post(
        "/account/tokens", data={"name": "y" * 101, "csrf": csrf}, headers={"accept": "text/html"}
    )
    assert r.status_code == 400 and "the token name has 101 characters: at most 100" in r.text
    r = client.post("/api/tokens", json={"username": "namer", "password": "password123", "name": "z" * 100})
    assert r.status_code == 200 and r.json()["name"] == "z" * 100  # the limit itself is kept whole
    assert "y" * 100 not in client.get("/account").text  # nothing stored for the refused one


def test_every_write_of_a_session_needs_its_csrf_token(client):  # noqa: ANN001
    """Each route that is not a GET, found from the app's routes (so a new one is checked too), refuses a request
    that carries the admin's session cookie but not the session's CSRF token (a form posted by another site),
    and changes nothing."""
    from elue.server.routes import api, web

    csrf = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": "admin", "password": "admin-password", "csrf": csrf})
    csrf = csrf_of(client.get("/account").text)
    ok = client.post(
        "/submit/reported",
        data={
            "name": "mine",
            "params_m": "5",
            "paper_url": "https://e.org",
            "numbers": "sst-2, 10, 80",
            "csrf": csrf,
            "public": "1",
        },
    )
    sid = int(re.search(r"/submissions/(\d+)", str(ok.url)).group(1))
    before = client.get("/api/submissions", headers={"x-csrf-token": csrf}).json()
    form = {
        "username": "admin",
        "password": "x" * 8,
        "password2": "x" * 8,
        "current": "admin-password",
        "new": "y" * 8,
        "new2": "y" * 8,
        "name": "forged",
        "params_m": "5",
        "paper_url": "https://e.org",
        "numbers": "sst-2, 10, 80",
        "task": "sst-2",
        "submission_id": str(sid),
        "hidden": "1",
        "public": "1",
    }
    body = {
        "name": "forged",
        "params_m": 5,
        "paper_url": "https://e.org",
        "tasks": {},
        "submission_id": sid,
        "hidden": True,
        "public": True,
    }
    upload = {"file": ("s.zip", b"PK", "application/zip")}

    def body_for(route) -> dict:  # noqa: ANN001 - the fields its JSON body has (another one is a 422)
        import typing

        from pydantic import BaseModel

        for param in route.dependant.body_params:
            ann = param.field_info.annotation
            for model in (ann, *typing.get_args(ann)):
                if isinstance(model, type) and issubclass(model, BaseModel):
                    return {k: v for k, v in body.items() if k in model.model_fields}
        return body

    routes = [*api.router.routes, *web.router.routes]
    by_key = {(m, r.path): r for r in routes for m in r.methods}
    writes = [(m, r.path) for r in routes for m in r.methods - {"GET", "HEAD"}]
    assert len(writes) >= 18
    for method, path in writes:
        url = path.format(sub_id=sid, token_id=1, task="sst-2", action="delete")
        for forged in ({}, {"x-csrf-token": "forged"}):
            if path.startswith("/api"):
                files = upload if path == "/api/submissions" and method == "POST" else None
                kw = (
                    {"data": {k: str(v) for k, v in body.items() if k != "tasks"}, "files": files}
                    if files
                    else {"json": body_for(by_key[method, path])}
                )
                r = client.request(method, url, headers=forged, **kw)
            else:
                files = upload if path == "/submit" else None
                r = client.request(
                    method,
                    url,
                    data={**form, "csrf": forged.get("x-csrf-token", "")},
                    files=files,
                    headers={"accept": "text/html"},
                    follow_redirects=False,
                )
            assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
    assert client.get("/api/submissions", headers={"x-csrf-token": csrf}).json() == before
    assert client.get("/account", follow_redirects=False).status_code == 200  # not logged out
    assert (
        client.post("/api/tokens", json={"username": "admin", "password": "admin-password"}).status_code
        == 200
    )


def test_log_in_starts_a_new_session(app, client):  # noqa: ANN001
    """Session fixation: a cookie planted in the victim's browser before log-in (the attacker's own anonymous
    session) is not logged in by the victim's log-in, and the victim's session has a CSRF token of its own."""
    token_for(client, "victim")
    attacker = TestClient(app)
    planted_csrf = csrf_of(attacker.get("/login").text)
    planted = attacker.cookies.get("elue_session")
    victim = TestClient(app)
    planted_h = {"cookie": f"elue_session={planted}"}
    assert (
        csrf_of(victim.get("/login", headers=planted_h).text) == planted_csrf
    )  # the planted session is in use
    form = {"username": "victim", "password": "password123", "csrf": planted_csrf}
    r = victim.post("/login", data=form, headers=planted_h, follow_redirects=False)
    issued = r.cookies.get("elue_session")
    assert r.status_code == 303 and issued and issued != planted
    assert csrf_of(victim.get("/account", headers={"cookie": f"elue_session={issued}"}).text) != planted_csrf
    assert attacker.get("/account", follow_redirects=False).status_code == 303  # still nobody


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "javascript:alert(1)",
        "evil.example",
        " //evil.example",
        "/%2F/evil.example",
    ],
)
def test_log_in_never_redirects_off_the_site(client, target):  # noqa: ANN001
    """An open redirect (`/login?next=//evil.example`) would send a user who just logged in to a look-alike site."""
    from urllib.parse import urljoin, urlsplit

    token_for(client, "traveller")
    csrf = csrf_of(client.get("/login").text)
    form = {"username": "traveller", "password": "password123", "csrf": csrf, "next": target}
    r = client.post("/login", data=form, follow_redirects=False)
    location = r.headers["location"]
    # as a browser reads it (it drops tabs and newlines, and takes a backslash for a slash)
    read = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    assert (
        r.status_code == 303 and urlsplit(urljoin("http://elue.example/login", read)).netloc == "elue.example"
    )


def test_the_sign_up_form_says_the_user_name_rule_and_buttons_name_their_token(client):  # noqa: ANN001
    """The sign-up form's pattern gave only the browser's "Please match the requested format." for 'alice smith'
    (the rule was nowhere on the page); the account page's "revoke" buttons all read "revoke" to a screen reader,
    without the token they revoke."""
    from server_setup import web_login

    page = client.get("/signup").text
    assert "User name (3–32 letters, digits, _ . -)" in page
    assert 'title="3 to 32 characters: letters, digits, _ . -"' in page
    web_login(client, "reader")  # has an API token called "tests"
    assert 'aria-label="Revoke token tests"' in client.get("/account").text
