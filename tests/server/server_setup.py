"""Deployment helpers of the server tests (imported by conftest.py and the test modules; a module of
its own because `conftest` names are ambiguous across test folders)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from server_helpers import write_made_up_answers
from shared_paths import shared_data_dir

from elue.costs.sandbox import bwrap_available
from elue.server import Settings

REPO_DATA = shared_data_dir()  # the real data, or None


def make_settings(tmp_path: Path, **kw) -> Settings:
    answers, _ = write_made_up_answers(tmp_path / "answers")
    defaults = dict(
        state_dir=tmp_path / "state",
        data_dir=answers,
        cache_seconds=0.0,
        lease_seconds=2.0,
        heartbeat_seconds=0.3,
        poll_seconds=0.05,
        secret_key="test-secret",
        evaluator="server_fake_evaluator:evaluate",
        # our own fixture model.py files; without a usable bubblewrap they run unsandboxed
        trust_model_code=not bwrap_available()[0],
    )
    defaults.update(kw)
    return Settings(**defaults)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def token_for(client: TestClient, username: str, password: str = "password123", create: bool = True) -> str:
    """Sign up through the web form (unless create=False), then get an API token."""
    if create:
        csrf = csrf_of(client.get("/signup").text)
        r = client.post(
            "/signup",
            data={"username": username, "password": password, "password2": password, "csrf": csrf},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        client.cookies.clear()
    r = client.post("/api/tokens", json={"username": username, "password": password, "name": "tests"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def web_login(client: TestClient, username: str) -> str:
    """Sign up `username`, log in through the form; returns the session's CSRF token."""
    token_for(client, username)
    csrf = csrf_of(client.get("/login").text)
    r = client.post(
        "/login", data={"username": username, "password": "password123", "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    return csrf_of(client.get("/submit").text)


def serve_args(settings: Settings) -> list[str]:
    """`elue serve` on these settings' home, data and database, with no scoring worker (for CliRunner)."""
    home, data = str(settings.state_dir), str(settings.data_dir)
    return [
        "serve",
        "--home",
        home,
        "--data-dir",
        data,
        "--workers",
        "0",
        "--database-url",
        settings.database_url,
    ]
