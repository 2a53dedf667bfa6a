"""Accounts: log-in, CSRF, API tokens, password guessing."""

from __future__ import annotations

import time

from server_setup import csrf_of, token_for, web_login


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
