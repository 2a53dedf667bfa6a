"""Fixtures of the server tests: a fresh deployment per test (SQLite in tmp_path), a test client,
users with tokens, and an in-process worker with the fake evaluator."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # server_* helper modules

from fastapi.testclient import TestClient  # noqa: E402
from server_fake_evaluator import evaluate as fake_evaluate  # noqa: E402
from server_setup import make_settings, token_for  # noqa: E402

from elue.server import Settings, create_app  # noqa: E402
from elue.server.worker import run_worker  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings):
    return create_app(settings, admin=("admin", "admin-password"))


@pytest.fixture
def client(app) -> TestClient:  # noqa: ANN001
    return TestClient(app)


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):  # noqa: ANN001, ANN201
    """A fresh database: a SQLite file, and PostgreSQL (an emptied schema) when ELUE_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'elue.db'}"
    url = os.environ.get("ELUE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ELUE_TEST_POSTGRES_URL not set")
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url
