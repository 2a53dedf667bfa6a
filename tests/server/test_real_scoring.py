"""The worker with the real toolkit (`elue.submission.evaluate_submission`, model.py in the sandbox):
a full-size SST-2 submission is scored; a hostile model.py fails with the sandbox's message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_helpers import HOSTILE_MODEL_PY, make_submission, zip_folder
from server_setup import make_settings, token_for

from elue.costs.sandbox import bwrap_available
from elue.data import read_test_indices
from elue.server import create_app
from elue.server.worker import run_worker

pytestmark = pytest.mark.slow


def test_full_size_sst2_submission_is_scored(tmp_path, data_dir):  # noqa: ANN001
    s = make_settings(tmp_path, data_dir=data_dir, evaluator="elue.submission:evaluate_submission")
    c = TestClient(create_app(s))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    folder = make_submission(tmp_path / "sub", read_test_indices(data_dir, "sst-2"))
    t0 = time.time()
    r = c.post(
        "/api/submissions",
        headers=h,
        data={"name": "tiny", "public": "true"},
        files={"file": ("s.zip", zip_folder(folder), "application/zip")},
    )
    assert r.status_code == 202, r.text
    assert run_worker(s, once=True) == 1
    elapsed = time.time() - t0
    got = c.get(f"/api/submissions/{r.json()['id']}", headers=h).json()
    assert got["status"] == "scored", got["log"]
    pts = got["result"]["tasks"]["sst-2"]["points"]
    assert [p["examples"] for p in pts] == [1821, 1821]
    assert pts[0]["mflops"] < pts[1]["mflops"]  # exit 1 is cheaper than exit 2
    assert 30 < pts[0]["performance"] < 70  # random predictions
    assert got["result"]["tasks"]["sst-2"]["elue_score"] < -20
    print(f"full-size SST-2 submission scored {elapsed:.1f} s after upload")


def test_hostile_model_py_fails_cleanly_in_the_sandbox(tmp_path, data_dir):  # noqa: ANN001
    Path("/tmp/elue-pwned").unlink(missing_ok=True)
    if not bwrap_available()[0]:
        pytest.skip("bubblewrap missing or unusable here")
    s = make_settings(tmp_path, data_dir=data_dir, evaluator="elue.submission:evaluate_submission")
    c = TestClient(create_app(s))
    h = {"authorization": f"Bearer {token_for(c, 'mallory')}"}
    idx = read_test_indices(data_dir, "sst-2")
    folder = make_submission(tmp_path / "sub", idx, model_py=HOSTILE_MODEL_PY)
    r = c.post(
        "/api/submissions",
        headers=h,
        data={"name": "evil"},
        files={"file": ("s.zip", zip_folder(folder), "application/zip")},
    )
    assert r.status_code == 202
    run_worker(s, once=True)
    got = c.get(f"/api/submissions/{r.json()['id']}", headers=h).json()
    assert got["status"] == "failed"
    assert got["error"] and "internal error" not in got["error"]
    print("hostile model.py ->", got["error"])
    assert not Path("/tmp/elue-pwned").exists()  # its write did not reach the host


def test_sleeping_model_py_is_stopped_by_the_servers_sandbox_limit(tmp_path, data_dir):  # noqa: ANN001
    """`time.sleep(10**6)` uses no CPU: only the wall-clock limit the server passes stops it (not the
    toolkit's 600 s default)."""
    s = make_settings(
        tmp_path, data_dir=data_dir, evaluator="elue.submission:evaluate_submission", sandbox_wall_s=3.0
    )
    c = TestClient(create_app(s))
    h = {"authorization": f"Bearer {token_for(c, 'sleeper')}"}
    idx = read_test_indices(data_dir, "sst-2")
    folder = make_submission(tmp_path / "sub", idx, model_py="import time\ntime.sleep(10**6)\n")
    r = c.post(
        "/api/submissions",
        headers=h,
        data={"name": "sleepy"},
        files={"file": ("s.zip", zip_folder(folder), "application/zip")},
    )
    assert r.status_code == 202, r.text
    t0 = time.time()
    run_worker(s, once=True)
    assert (
        time.time() - t0 < 300
    )  # far below the toolkit's 600 s (60 s was tight for a busy machine's scoring)
    got = c.get(f"/api/submissions/{r.json()['id']}", headers=h).json()
    assert got["status"] == "failed" and "3 s" in got["error"], got["error"]
