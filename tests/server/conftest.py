"""Fixtures of the server tests: a fresh deployment per test (SQLite in tmp_path), a test client,
users with tokens, and an in-process worker with the fake evaluator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # server_helpers, server_fake_evaluator

from fastapi.testclient import TestClient
from server_fake_evaluator import evaluate as fake_evaluate
from server_helpers import write_made_up_answers

from elue.server import Settings, create_app
from elue.server.worker import run_worker

HERE = Path(__file__).resolve().parent


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
    )
    defaults.update(kw)
    return Settings(**defaults)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings):
    return create_app(settings, admin=("admin", "admin-password"))


@pytest.fixture
def client(app) -> TestClient:  # noqa: ANN001
    return TestClient(app)


def token_for(client: TestClient, username: str, password: str = "password123", create: bool = True) -> str:
    if create:
        r = client.get("/signup")
        csrf = _csrf(r.text)
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


def _csrf(html: str) -> str:
    import re

    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


@pytest.fixture
def auth(client: TestClient):  # noqa: ANN201
    """auth("alice") -> headers with a fresh user's API token."""

    def make(username: str) -> dict:
        return {"authorization": f"Bearer {token_for(client, username)}"}

    return make


@pytest.fixture
def admin_headers(client: TestClient) -> dict:
    return {"authorization": f"Bearer {token_for(client, 'admin', 'admin-password', create=False)}"}


@pytest.fixture
def drain(settings: Settings):  # noqa: ANN201
    """drain() scores every queued submission in this process with the fake evaluator."""

    def run() -> int:
        return run_worker(settings, once=True, evaluator=fake_evaluate)

    return run
