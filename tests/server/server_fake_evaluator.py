"""A stand-in for `elue.submission.evaluate_submission` (same signature) for fast server tests.

Env: ELUE_FAKE_SLEEP (seconds to take), ELUE_FAKE_COUNTER (file: one line appended per evaluation).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class SubmissionError(Exception):
    """Stands in for elue.submission.SubmissionError (the worker matches it by name) without importing
    torch, so worker processes in tests start fast."""


def evaluate(submission_dir: Path, answers_dir: Path, *, baseline=None, trust_model_code=False, limits=None):  # noqa: ANN001
    seen = os.environ.get("ELUE_FAKE_LIMITS")  # file: the sandbox wall limit the worker passed
    if seen:
        Path(seen).write_text(str(getattr(limits, "wall_s", None)))
    counter = os.environ.get("ELUE_FAKE_COUNTER")
    if counter:
        with open(counter, "a") as f:
            f.write(f"{Path(submission_dir).name} {os.getpid()}\n")
    time.sleep(float(os.environ.get("ELUE_FAKE_SLEEP", "0")))
    root = Path(submission_dir)
    if "HOSTILE" in (root / "model.py").read_text():
        raise SubmissionError("model.py failed in the sandbox: network access is not allowed")
    if "HUGE_ERROR" in (root / "model.py").read_text():  # like a test file's 31 MB header line
        raise SubmissionError(f"{root}/sst-2/a.tsv, line 1: bad header {'0' * 5_000_000!r}")
    tasks = {}
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(task_dir.glob("*.tsv"))
        points = []
        for k, f in enumerate(files):
            n = sum(1 for _ in f.open()) - 1
            points.append(
                {
                    "file": f.name,
                    "mflops": 1000.0 + 1000 * k,
                    "performance": 85.0 + k,
                    "metrics": {"accuracy": 85.0 + k},
                    "examples": n,
                }
            )
        tasks[task_dir.name] = {"params_m": 50.0, "elue_score": None, "points": points}
    return {"tasks": tasks, "elue_score": None}
