"""The crash test: kill the worker process mid-scoring, restart it: every submission ends scored,
exactly once (one stored result each), and nothing accepted is lost; a worker stopped mid-scoring (SIGTERM,
Ctrl-C: a restart of the service) gives its job back, its attempt not counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_fake_evaluator import evaluate as fake_evaluate
from server_helpers import PATIENCE_S, TINY_MODEL_PY, api_upload, wait_until, zip_bytes
from server_setup import make_settings, token_for
from sqlalchemy import func, select
from subprocesses import child_env

from elue.server import create_app
from elue.server.db import RUNNING, SCORED, Submission, TaskResult, open_database
from elue.server.worker import run_worker

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


# A stop while scoring (SIGTERM from `elue serve`'s shutdown, SIGTERM or Ctrl-C to `elue worker`): the worker died
# mid-job, the job was retaken when its lease ran out with one attempt more, and after max_attempts restarts of
# the service during one job it failed as "crashed the worker repeatedly", its owner's fault.


def _evaluations(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def _scoring_pid(counter: Path, n: int) -> int:
    """The scoring process of the n-th evaluation (0-based), once it has started."""
    wait_until(lambda: len(_evaluations(counter)) > n, PATIENCE_S, f"evaluation {n + 1} to start")
    return int(_evaluations(counter)[n].split()[1])


def _job(settings, sid: int):  # noqa: ANN001, ANN202
    with open_database(settings.database_url, upgrade=False)[1]() as x:
        sub = x.get(Submission, sid)
        results = x.scalar(select(func.count(TaskResult.id)).where(TaskResult.submission_id == sid))
        return sub.status, sub.attempts, sub.lease_owner, sub.log or "", results


def test_a_worker_stopped_mid_job_gives_it_back_each_time(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    counter = tmp_path / "evaluations.txt"
    monkeypatch.setenv("ELUE_FAKE_COUNTER", str(counter))
    monkeypatch.setenv("ELUE_FAKE_SLEEP", "60")
    sid = api_upload(client, auth("restarted"))["id"]
    stops = settings.max_attempts + 1  # more restarts than attempts: none may count
    for n in range(stops):
        stop = threading.Event()
        kw = {"stop": stop, "evaluator": fake_evaluate}
        t = threading.Thread(target=run_worker, args=(settings,), kwargs=kw, daemon=True)
        t.start()
        pid = _scoring_pid(counter, n)
        stop.set()
        t.join(10)  # `elue serve` kills its workers 10 s after asking them to stop
        assert not t.is_alive(), "the worker did not stop while it scored"
        assert not Path(f"/proc/{pid}").exists(), "the scoring process outlived the worker"
        status, attempts, owner, log, _ = _job(settings, sid)
        assert (status, attempts, owner) == ("queued", 0, None)
        assert log.count("the scoring worker was stopped") == n + 1, log
    monkeypatch.setenv("ELUE_FAKE_SLEEP", "0")
    assert run_worker(settings, once=True, evaluator=fake_evaluate) == 1  # another worker
    assert _job(settings, sid)[:2] == ("scored", 1) and _job(settings, sid)[4] == 1
    assert len(_evaluations(counter)) == stops + 1


class _StopOnceScored(threading.Event):
    """A stop that comes, once the job is taken, as soon as its scoring process has sent the result and exited:
    the first look at it after the claim waits for that, so the result waits, unread, in the pipe."""

    def __init__(self, settings, sid: int, counter: Path) -> None:  # noqa: ANN001
        super().__init__()
        self.settings, self.sid, self.counter = settings, sid, counter

    def is_set(self) -> bool:
        if not super().is_set() and _job(self.settings, self.sid)[0] != "queued":
            wait_until(lambda: _exited(int(_scoring_pid(self.counter, 0))), PATIENCE_S, "the scoring to end")
            self.set()
        return super().is_set()


def _exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_job_scored_before_the_stop_is_kept(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    counter = tmp_path / "evaluations.txt"
    monkeypatch.setenv("ELUE_FAKE_COUNTER", str(counter))
    sid = api_upload(client, auth("lucky"))["id"]
    stop = _StopOnceScored(settings, sid, counter)
    run_worker(settings, stop=stop, evaluator=fake_evaluate)
    assert stop.is_set()
    status, attempts, _, log, results = _job(settings, sid)
    assert (status, attempts, results) == ("scored", 1, 1) and "stopped" not in log, log
    assert run_worker(settings, once=True, evaluator=fake_evaluate) == 0
    assert len(_evaluations(counter)) == 1  # not scored again


def _dying_evaluator(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    fake_evaluate(*args, **kwargs)
    os.kill(
        os.getpid(), signal.SIGKILL
    )  # the scoring process killed with its worker, before it sent a result


def test_a_failure_that_comes_with_the_stop_is_not_the_uploads(client, auth, settings, monkeypatch, tmp_path):  # noqa: ANN001
    """Stopping a service signals every process of its cgroup at once: the scoring process and the sandbox's
    model.py die of the same signal as the worker. Their failure (here the scoring process gone without a word)
    is not the upload's: the job goes back, its attempt not counted."""
    counter = tmp_path / "evaluations.txt"
    monkeypatch.setenv("ELUE_FAKE_COUNTER", str(counter))
    sid = api_upload(client, auth("unlucky"))["id"]
    run_worker(settings, stop=_StopOnceScored(settings, sid, counter), evaluator=_dying_evaluator)
    assert _job(settings, sid)[:3] == ("queued", 0, None)


def _interrupted_evaluator(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    os.kill(
        os.getpid(), signal.SIGINT
    )  # Ctrl-C in the terminal of `elue serve` reaches its scoring processes
    return fake_evaluate(*args, **kwargs)


def test_a_ctrl_c_reaching_the_scoring_process_does_not_fail_the_job(client, auth, settings):  # noqa: ANN001
    """The worker decides (a worker of `elue serve` waits for its SIGTERM): the KeyboardInterrupt in the scoring
    process was sent back as the job's failure, "internal error while scoring (KeyboardInterrupt)"."""
    sid = api_upload(client, auth("interrupted"))["id"]
    assert run_worker(settings, once=True, evaluator=_interrupted_evaluator) == 1
    assert _job(settings, sid)[:2] == ("scored", 1)


@pytest.mark.parametrize(
    ("command", "sig"),
    [  # `elue worker` and Ctrl-C; a worker as `elue serve` starts it, and its SIGTERM
        (["-c", "from elue.cli import main; main()", "worker"], signal.SIGINT),
        (["-m", "elue.server.worker", "--parent-pid", str(os.getpid())], signal.SIGTERM),
    ],
    ids=["elue-worker-ctrl-c", "serve-worker-sigterm"],
)
def test_a_signal_mid_job_gives_the_job_back(client, auth, settings, tmp_path, command, sig):  # noqa: ANN001
    """The real processes: `elue worker` had no handler at all (SIGTERM and Ctrl-C killed it mid-job)."""
    counter = tmp_path / "evaluations.txt"
    sid = api_upload(client, auth("signalled"))["id"]
    env = {
        **child_env(),
        **settings.to_env(),
        "PYTHONPATH": os.pathsep.join([str(HERE), child_env()["PYTHONPATH"]]),
        "ELUE_EVALUATOR": "server_fake_evaluator:evaluate",
        "ELUE_FAKE_SLEEP": "60",
        "ELUE_FAKE_COUNTER": str(counter),
    }
    out = subprocess.PIPE
    w = subprocess.Popen([sys.executable, *command], env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        pid = _scoring_pid(counter, 0)
        if sig == signal.SIGINT:
            os.killpg(w.pid, sig)  # as Ctrl-C in a terminal: to the scoring process too
        else:
            w.send_signal(sig)
        out = "".join(x.decode() for x in w.communicate(timeout=10))
    finally:
        if w.poll() is None:
            w.kill()
    assert w.returncode == 0, out
    assert not Path(f"/proc/{pid}").exists(), "the scoring process outlived the worker"
    status, attempts, owner, log, _ = _job(settings, sid)
    assert (status, attempts, owner) == ("queued", 0, None), out
    assert "the scoring worker was stopped" in log and "back in the queue" in out
