"""`elue serve` in process (CliRunner, uvicorn.run replaced) or stopped at start: admin, cookies, home."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from server_setup import make_settings, serve_args

from elue.server import create_app, service
from elue.server.db import open_database


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


def test_serve_says_the_admin_password_came_from_the_environment(tmp_path, monkeypatch):  # noqa: ANN001
    """A new admin with ELUE_ADMIN_PASSWORD set was told it had 'the account's own password'."""
    from typer.testing import CliRunner

    from elue.cli import app as cli

    settings = make_settings(tmp_path)
    # serve exports its settings as ELUE_* for the web processes, and installs a SIGTERM handler: both are
    # undone after the test (the exported database URL made later tests share one database)
    monkeypatch.setattr(os, "environ", {**os.environ, "ELUE_ADMIN_PASSWORD": "a-long-password"})
    monkeypatch.setattr("signal.signal", lambda *a: None)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    args = serve_args(settings)
    r = CliRunner().invoke(cli, [*args, "--admin", "boss"])
    assert r.exit_code == 0, r.output
    assert "admin 'boss': password from ELUE_ADMIN_PASSWORD" in r.output and "own password" not in r.output


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


def test_serve_with_an_unusable_home_says_so(tmp_path):  # noqa: ANN001
    """A --home that cannot be made (here: a file is in the way; also read-only or full) used to end
    `elue serve` with a traceback."""
    home = tmp_path / "home"
    home.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELUE_")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from elue.cli import main; main()",
            "serve",
            "--home",
            str(home),
            "--workers",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"cannot use the state folder {home}" in out.stderr.replace("\n", "")


def test_serve_never_prints_the_database_password(tmp_path, monkeypatch):  # noqa: ANN001
    """The start-up line and the "cannot open the database" message printed the URL as given, password
    included, into the service's log."""
    from typer.testing import CliRunner

    from elue.cli import app as cli

    url = "postgresql+psycopg2://elue:s3cret-pw@127.0.0.1:1/elue"  # nothing listens on port 1
    settings = make_settings(tmp_path)
    args = [*serve_args(settings)[:-1], url]
    monkeypatch.setattr(os, "environ", {**os.environ, "ELUE_SECRET_KEY": "k"})
    monkeypatch.setattr("signal.signal", lambda *a: None)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "cannot open the database" in r.output, r.output
    assert "s3cret-pw" not in r.output and "elue:***@127.0.0.1:1" in r.output
    monkeypatch.setattr("elue.server.create_app", lambda *a, **k: None)  # as if the database were there
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "ELUE leaderboard on" in r.output, r.output
    assert "s3cret-pw" not in r.output and "elue:***@127.0.0.1:1" in r.output


@pytest.mark.parametrize("data", ["missing", "no-keys", "keys"])
def test_serve_warns_when_the_data_folder_holds_no_answer_keys(tmp_path, monkeypatch, data):  # noqa: ANN001
    """A --data-dir that does not exist or holds no `<task>/test_labels.tsv` (a typo, the hub's files alone)
    started without a word, and every upload was then refused; the warning it had (for no folder at all) said
    uploads would queue and fail."""
    from typer.testing import CliRunner

    from elue.cli import app as cli

    settings = make_settings(tmp_path)
    folder = {"missing": tmp_path / "nowhere", "no-keys": tmp_path / "hub", "keys": settings.data_dir}[data]
    (tmp_path / "hub" / "sst-2").mkdir(parents=True)
    (tmp_path / "hub" / "sst-2" / "test.tsv").write_text("index\tsentence\n0\tx\n")
    args = serve_args(settings)
    args[args.index("--data-dir") + 1] = str(folder)
    monkeypatch.setattr(os, "environ", {**os.environ, "ELUE_SECRET_KEY": "k"})
    monkeypatch.setattr("signal.signal", lambda *a: None)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    warned = f"warning: no answer keys in {folder}" in r.output and "every upload will be refused" in r.output
    assert warned is (data != "keys"), r.output


def test_serve_on_a_database_of_a_newer_schema_says_so(tmp_path, monkeypatch):  # noqa: ANN001
    """A database upgraded by a newer elue (a deploy rolled back) stopped `elue serve` with Alembic's traceback."""
    from sqlalchemy import text
    from typer.testing import CliRunner

    from elue.cli import app as cli

    settings = make_settings(tmp_path)
    engine, _ = open_database(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("must not start"))
    r = CliRunner().invoke(cli, serve_args(settings))
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Can't locate revision identified by '0099'" in r.output and "newer version of elue" in r.output


def _worker_args(settings, *extra: str) -> list[str]:  # noqa: ANN001
    home, data = str(settings.state_dir), str(settings.data_dir)
    return ["worker", "--home", home, "--data-dir", data, "--database-url", settings.database_url, *extra]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("garbage", "Could not parse SQLAlchemy URL"),
        ("postgres://u:s3cret@127.0.0.1/db", "SQLAlchemy spells it postgresql://"),
        (
            "postgresql://u:s3cret@127.0.0.1/db",
            "its driver is not installed",
        ),  # psycopg 3: made missing below
        ("postgresql+psycopg2://u:s3cret@127.0.0.1:1/db", "Connection refused"),  # nothing listens on port 1
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_database_url_that_cannot_work_is_one_line(tmp_path, monkeypatch, command, url, said):  # noqa: ANN001
    """`elue worker` ended with SQLAlchemy's traceback for a bad URL, a driver that is not installed or (with --once)
    a database it cannot reach; `elue serve` too for the driver (`postgresql://` means psycopg 3 to SQLAlchemy 2.1)."""
    from typer.testing import CliRunner

    from elue.cli import app as cli

    monkeypatch.setitem(sys.modules, "psycopg", None)  # an import of it fails, installed or not
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("must not start"))
    monkeypatch.setattr("elue.server.worker.run_worker", lambda *a, **k: pytest.fail("must not start"))
    settings = make_settings(tmp_path)
    args = serve_args(settings) if command == "serve" else _worker_args(settings, "--once")
    args[args.index("--database-url") + 1] = url
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), (
        r.output
    )
    assert "error: cannot open the database" in r.output and said in r.output, r.output
    assert "s3cret" not in r.output and "Background on this error" not in r.output


def test_a_worker_refuses_a_database_of_a_newer_schema_and_an_unusable_home(tmp_path, monkeypatch, caplog):  # noqa: ANN001
    """A worker never migrates: on a database a newer elue had upgraded it took jobs without a word (serve refused
    it), and a home it cannot use ended it with a traceback."""
    from sqlalchemy import text
    from typer.testing import CliRunner

    from elue.cli import app as cli
    from elue.server.worker import run_worker

    settings = make_settings(tmp_path)
    engine, _ = open_database(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    monkeypatch.setattr("elue.server.worker.run_worker", lambda *a, **k: pytest.fail("must not start"))
    r = CliRunner().invoke(cli, _worker_args(settings))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "schema is at revision 0099, which this elue does not have" in r.output, r.output
    # a worker already running when the schema changed (or one of an older elue's serve): it takes no job
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="elue.server.worker"):
        assert run_worker(settings, once=True, evaluator=lambda *a, **k: pytest.fail("no job")) == 0
    assert "which this elue does not have" in caplog.text and "not scoring" in caplog.text

    home = tmp_path / "a-file"
    home.write_text("not a folder")
    args = _worker_args(settings, "--once")
    args[args.index("--home") + 1] = str(home)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert f"cannot use the state folder {home}" in r.output.replace("\n", ""), r.output
