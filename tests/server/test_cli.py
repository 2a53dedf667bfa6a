"""`elue submit` against a running `elue serve` (fake evaluator in the worker, so it is quick)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer
from server_helpers import PATIENCE_S, TINY_MODEL_PY

HERE = Path(__file__).resolve().parent
TSV = "index\tpred\tmodules\n0\t1\t(5),emb\n1\t0\t(5),emb\n"


@pytest.fixture(scope="module")
def live(tmp_path_factory):  # noqa: ANN001, ANN201
    from server_helpers import write_made_up_answers

    answers, _ = write_made_up_answers(tmp_path_factory.mktemp("answers"))
    # the worker that `elue serve` starts scores with the fake evaluator (found on PYTHONPATH)
    env = {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "ELUE_EVALUATOR": "server_fake_evaluator:evaluate",
    }
    server = LiveServer(tmp_path_factory.mktemp("serve"), answers, extra_env=env)
    yield server
    server.stop()


def _token(live) -> str:  # noqa: ANN001
    r = httpx.post(live.url + "/api/tokens", json={"username": "admin", "password": "admin-password"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _elue(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from elue.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_elue_submit_folder_waits_for_the_score(live, tmp_path):  # noqa: ANN001
    sub = tmp_path / "my-model"
    (sub / "sst-2").mkdir(parents=True)
    (sub / "model.py").write_text(TINY_MODEL_PY)
    (sub / "sst-2" / "exit1.tsv").write_text(TSV)
    env = {"ELUE_SERVER": live.url, "ELUE_TOKEN": _token(live)}
    t0 = time.time()
    r = _elue("submit", str(sub), "--name", "CLI model", "--public", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scored" in r.stdout and "sst-2" in r.stdout and "85.00 @ 1000.0 MFLOPs" in r.stdout
    assert time.time() - t0 < 60
    rows = httpx.get(live.url + "/api/leaderboard").json()["rows"]
    assert "CLI model" in [x["name"] for x in rows]


def test_elue_submit_reports_refusals(live, tmp_path):  # noqa: ANN001
    env = {"ELUE_SERVER": live.url, "ELUE_TOKEN": _token(live)}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.py").write_text(TINY_MODEL_PY)
    (bad / "weights.bin").write_text("x")
    (bad / "sst-2.tsv").write_text(TSV)
    r = _elue("submit", str(bad), "--name", "bad", env=env)
    assert r.returncode == 1 and "unexpected file 'weights.bin'" in r.stderr
    r = _elue("submit", str(bad), "--name", "bad", env={**env, "ELUE_TOKEN": "elue_wrong"})
    assert r.returncode == 1 and "invalid API token" in r.stderr
    # nobody listening: one line, no traceback
    r = _elue("submit", str(bad), env={**env, "ELUE_SERVER": "http://127.0.0.1:9"})
    assert r.returncode == 1 and "error: cannot reach the leaderboard at http://127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr
    r = _elue("submit", str(tmp_path / "no-such-folder"), env=env)
    assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr


def test_elue_submit_reported_entry(live, tmp_path):  # noqa: ANN001
    entry = {
        "name": "Paper model",
        "params_m": 30,
        "paper_url": "https://example.org/paper",
        "tasks": {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0}]}},
    }
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(entry))
    env = {"ELUE_SERVER": live.url, "ELUE_TOKEN": _token(live)}
    r = _elue("submit", str(path), "--reported", "--public", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "params 30.0M" in r.stdout and "point 1: 85.00 @ 1500.0 MFLOPs" in r.stdout  # no empty label
    row = next(
        x for x in httpx.get(live.url + "/api/leaderboard").json()["rows"] if x["name"] == "Paper model"
    )
    assert row["origin"] == "reported"


def test_elue_serve_with_a_bad_database_url_says_so(tmp_path):  # noqa: ANN001
    from typer.testing import CliRunner

    from elue.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--home", str(tmp_path), "--database-url", "nosuchdb://x", "--port", "8999"]
    )
    assert result.exit_code == 1, result.output
    assert "error: cannot open the database 'nosuchdb://x'" in result.output
    assert "Traceback" not in result.output


def test_sigterm_stops_serve_and_its_workers(tmp_path):  # noqa: ANN001
    """uvicorn re-raises the SIGTERM it caught after shutting down; serve must still stop its workers."""
    import signal
    import time

    from server_helpers import write_made_up_answers

    answers, _ = write_made_up_answers(tmp_path / "answers")
    server = LiveServer(tmp_path / "serve", answers)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + PATIENCE_S
        while not workers and time.monotonic() < deadline:  # the supervisor thread starts them (any thread's)
            for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
                workers += [int(pid) for pid in (task / "children").read_text().split()]
            time.sleep(0.2)
        assert workers, "serve started no worker"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(PATIENCE_S) == 128 + signal.SIGTERM

        def alive(pid: int) -> bool:  # a zombie waiting to be reaped has finished
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers), "a worker outlived serve"
    finally:
        server.stop()  # a failing check must not leave a server running


def test_a_local_client_cannot_pick_its_address(live):  # noqa: ANN001
    """Without --behind-proxy, X-Forwarded-For is not trusted: changing it does not escape the throttle."""
    body = {"username": "xff-victim", "password": "wrong-password"}
    for _ in range(10):
        assert httpx.post(live.url + "/api/tokens", json=body).status_code == 401
    r = httpx.post(live.url + "/api/tokens", json=body, headers={"X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 429


def test_help_shows_the_defaults_and_bad_settings_are_one_line(monkeypatch):  # noqa: ANN001
    """`[default: ...]` in a help text is rich markup and vanished from --help; and a bad setting from the
    environment is an error line, not a traceback."""
    from typer.testing import CliRunner

    from elue.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "(default: $ELUE_HOME or ./.elue)" in result.output
    monkeypatch.setenv("ELUE_SANDBOX_WALL_S", "-1")
    result = CliRunner().invoke(app, ["serve", "--port", "8998"])
    assert result.exit_code == 1 and "ELUE_SANDBOX_WALL_S" in result.output
    assert "Traceback" not in result.output
