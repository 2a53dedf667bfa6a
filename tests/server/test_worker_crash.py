"""The crash test: kill the worker process mid-scoring, restart it: every submission ends scored,
exactly once (one stored result each), and nothing accepted is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from server_helpers import PATIENCE_S, TINY_MODEL_PY, wait_until, zip_bytes
from server_setup import make_settings, token_for
from sqlalchemy import func, select

from elue.server import create_app
from elue.server.db import RUNNING, SCORED, Submission, TaskResult

HERE = Path(__file__).resolve().parent
TSV = "index\tpred\tmodules\n0\t1\t(5),emb\n"


def _worker(settings, counter: Path, sleep: float) -> subprocess.Popen:  # noqa: ANN001
    env = {
        **os.environ,
        **settings.to_env(),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "ELUE_FAKE_SLEEP": str(sleep),
        "ELUE_FAKE_COUNTER": str(counter),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "elue.server.worker",
            "--evaluator",
            "server_fake_evaluator:evaluate",
            "--lease-seconds",
            "3",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_worker_mid_scoring_then_restart(tmp_path):  # noqa: ANN001
    s = make_settings(tmp_path)
    app = create_app(s)
    c = TestClient(app)
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    ids = []
    for i in range(3):
        r = c.post(
            "/api/submissions",
            headers=h,
            data={"name": f"m{i}"},
            files={"file": ("s.zip", zip_bytes({"model.py": TINY_MODEL_PY, "sst-2/a.tsv": TSV}), "x")},
        )
        assert r.status_code == 202
        ids.append(r.json()["id"])
    sessions = app.state.elue.sessions
    counter = tmp_path / "evaluations.txt"

    def status(sid: int) -> str:
        with sessions() as x:
            return x.get(Submission, sid).status

    # slow: it is surely mid-scoring when killed, however long this process waits to be scheduled (it was 5 s; its
    # orphaned scoring process sleeps on after the kill, harmlessly)
    w1 = _worker(s, counter, sleep=30.0)
    try:
        wait_until(
            lambda: counter.exists() and counter.read_text().strip(), PATIENCE_S, "the first job to start"
        )
        os.kill(w1.pid, signal.SIGKILL)  # mid-scoring
        w1.wait(10)
    finally:
        if w1.poll() is None:
            w1.kill()
    assert status(ids[0]) == RUNNING  # held by a dead worker
    w2 = _worker(s, counter, sleep=0.5)
    try:
        wait_until(lambda: all(status(i) == SCORED for i in ids), PATIENCE_S, "every submission to be scored")
    finally:
        w2.send_signal(signal.SIGTERM)
        try:
            w2.wait(10)
        except subprocess.TimeoutExpired:
            w2.kill()
    with sessions() as x:
        for sid in ids:
            n = x.scalar(select(func.count(TaskResult.id)).where(TaskResult.submission_id == sid))
            assert n == 1, f"submission {sid} has {n} stored results"
        killed = x.get(Submission, ids[0])
        assert killed.attempts == 2 and killed.lease_owner is None
        assert [x.get(Submission, i).attempts for i in ids[1:]] == [1, 1]
    runs = [line.split()[0] for line in counter.read_text().splitlines()]
    assert len(runs) == 4  # the killed job ran twice, the others once
