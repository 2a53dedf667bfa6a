"""Regression tests of the fifth review round of the leaderboard: admin take-over, invisible characters in
names, two users publishing one name at once, lone surrogates, points per task, tasks without answer keys."""

from __future__ import annotations

import sqlite3

import pytest
from server_helpers import SUB, TSV, zip_bytes
from server_setup import make_settings, serve_args, token_for
from test_review_fixes import reported

from elue.server import create_app, service
from elue.server.db import open_database
from elue.server.storage import UploadError, extract_zip


def test_admin_flag_does_not_promote_an_account_made_by_signing_up(tmp_path):  # noqa: ANN001
    settings = make_settings(tmp_path)
    create_app(settings)
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:
        service.create_user(s, "admin", "attacker-pw")  # someone signed up under the name first
        for pw in (None, "operator-pw"):
            with pytest.raises(service.ServiceError, match="ordinary account"):
                service.ensure_admin(s, "Admin", pw)  # compared as sign-up compares names
        assert not service.authenticate(s, "admin", "attacker-pw").is_admin
        # the account's owner may promote it, proving it with its password
        user, made = service.ensure_admin(s, "admin", "attacker-pw")
        assert user.is_admin and made is None
    with sessions() as s:  # a new admin: a password is made (and returned to be shown) unless one is given
        user, made = service.ensure_admin(s, "root")
        assert user.is_admin and service.authenticate(s, "root", made) is not None
        user, made = service.ensure_admin(s, "ROOT", "chosen-password")  # an admin: the given password is set
        assert made is None and service.authenticate(s, "root", "chosen-password") is not None
        with pytest.raises(service.ServiceError, match="8 characters"):
            service.ensure_admin(s, "root", "short")


def test_elue_serve_admin_refuses_a_signed_up_name(tmp_path, monkeypatch):  # noqa: ANN001
    from typer.testing import CliRunner

    from elue.cli import app as cli

    settings = make_settings(tmp_path)
    create_app(settings)
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:
        service.create_user(s, "admin", "attacker-pw")
    monkeypatch.delenv("ELUE_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("must not start"))
    r = CliRunner().invoke(cli, [*serve_args(settings), "--admin", "Admin"])
    assert r.exit_code == 1 and "ordinary account" in r.output and "Traceback" not in r.output, r.output
    assert "password" not in r.output.split("ordinary account")[0]  # no password printed that was not set


@pytest.mark.parametrize("mark", ["\u034f", "\ufe0f", "\u3164", "\u2800", "\u00ad", "\U000e0041", "\u180e"])
def test_invisible_characters_do_not_make_another_name(client, auth, mark):  # noqa: ANN001
    h = auth("poser")
    for name in (f"ElasticBERT-BASE{mark}", f"Elastic{mark}BERT-BASE"):
        r = reported(client, h, name=name)
        assert r.status_code == 409, (name, r.text)
    r = reported(client, h, name=f"Own{mark} model", public=False)
    assert r.status_code == 201 and r.json()["name"] == "Own model"  # stored without it


def test_the_names_lock_is_held_until_the_transaction_ends(settings):  # noqa: ANN001
    create_app(settings)
    _, sessions = open_database(settings.database_url, upgrade=False)
    path = settings.database_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, timeout=0.1)
    with sessions() as s:
        service.lock_public_names(s)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("INSERT INTO meta (key, value) VALUES ('probe', '1')")
        s.rollback()
    other.execute("INSERT INTO meta (key, value) VALUES ('probe', '1')")  # free again
    other.rollback()


def test_lone_surrogates_are_a_400_not_a_500(client, auth):  # noqa: ANN001
    h = auth("surrogate")
    for url, body, headers in [
        ("/api/tokens", '{"username":"\\ud800","password":"x"}', {}),
        (
            "/api/submissions/reported",
            '{"name":"ok","params_m":1,"paper_url":"https://a.b/\\ud800","tasks":{"sst-2":{"elue_score":1}}}',
            h,
        ),
    ]:
        r = client.post(url, content=body, headers={**headers, "content-type": "application/json"})
        assert r.status_code == 400 and "surrogate" in r.json()["detail"], (url, r.text)
    assert client.get("/api/submissions", headers=h).json() == []


def test_operating_points_per_task_are_capped(tmp_path):  # noqa: ANN001
    settings = make_settings(tmp_path, max_points=3)
    files = {"model.py": SUB["model.py"], **{f"sst-2/p{i}.tsv": TSV for i in range(4)}}
    with pytest.raises(UploadError, match=r"sst-2 \(4\): at most 3"):
        extract_zip(zip_bytes(files), settings)
    assert not any(settings.staging_dir.iterdir())
    assert make_settings(tmp_path / "d").max_points == 20


def test_a_task_the_site_cannot_score_is_refused_at_upload(client, settings):  # noqa: ANN001
    h = {"authorization": f"Bearer {token_for(client, 'sci')}"}
    files = {"model.py": SUB["model.py"], "scitail.tsv": TSV}
    for _ in range(settings.daily_limit + 1):  # refused before it counts toward the daily limit
        r = client.post(
            "/api/submissions", headers=h, data={"name": "x"}, files={"file": ("s.zip", zip_bytes(files))}
        )
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "cannot score scitail: it scores sst-2" in detail and str(settings.data_dir) not in detail
    assert client.get("/api/submissions", headers=h).json() == []
    r = client.post(
        "/api/submissions", headers=h, data={"name": "x"}, files={"file": ("s.zip", zip_bytes(SUB))}
    )
    assert r.status_code == 202, r.text


def test_the_guide_states_the_limits(client, settings):  # noqa: ANN001
    text = " ".join(client.get("/guide").text.split())
    assert (
        f"{settings.daily_limit} submissions a day" in text
        and f"at most {settings.max_points} test files" in text
    )


def test_the_response_cache_is_bounded_in_total_and_keeps_no_locks():
    """Made-up query strings on a cached page are new entries each: the total size is bounded, and no lock
    is kept per query string."""
    import asyncio

    from elue.server.cache import ResponseCache

    async def page(scope, receive, send):  # noqa: ANN001, ANN202
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 1000})

    cache = ResponseCache(page, ttl=60, max_total_bytes=10_000)

    async def get(query: bytes) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/leaderboard",
            "query_string": query,
            "headers": [],
        }

        async def send(message):  # noqa: ANN001, ANN202
            return None

        await cache(scope, None, send)

    async def many() -> None:
        for i in range(100):
            await get(str(i).encode())
            assert cache.total_bytes <= 10_000 and len(cache.entries) <= 10

    asyncio.run(many())
    assert cache.locks == {}
    assert cache.total_bytes == sum(len(e[3]) for e in cache.entries.values()) > 0
