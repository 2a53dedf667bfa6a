"""What tests that start `elue` (or torchrun) in child processes share: a free port, the child's environment,
the torchrun executable, waiting for a condition, a process's children and signal handlers. Import as
`from subprocesses import ...` (tests/ is on the path)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from shared_paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """This environment plus the repo's src/ on PYTHONPATH, one thread per process, no hub access."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def torchrun() -> str | None:
    """The torchrun next to this Python (or on PATH); None when there is none."""
    beside = Path(sys.executable).with_name("torchrun")
    return shutil.which("torchrun") or (str(beside) if beside.exists() else None)


def run_torchrun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 <args>` on a free port (see `run_or_dump`)."""
    cmd = [torchrun(), "--nproc_per_node", "2", "--master_port", str(free_port()), *args]
    return run_or_dump(cmd, timeout)


def run_or_dump(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `cmd` in `child_env()`, output captured. A run that outlives `timeout` (seen once in CI: a finished
    torchrun fine-tuning run that never exited) fails the test with the Python stacks of every process in it:
    faulthandler prints them on the SIGABRT sent to the whole process group."""
    env = dict(child_env(), PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(
            f"still running after {timeout:g} s: {cmd}\nstacks:\n{err[-8000:]}\n{out[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# How long tests wait for what happens at once on an idle machine (a server up, a job scored, a process gone, a
# child past its start-up): generous, for a slow or busy CI machine. A wait only costs all of it on failure.
PATIENCE_S = 120.0


def wait_until(pred, timeout: float = PATIENCE_S, what: str = "a condition", every: float = 0.05) -> None:  # noqa: ANN001
    """Poll `pred` until it is true; fail the test naming `what` after `timeout` seconds (monotonic: a change of
    the wall clock moves no deadline). `pred` is checked once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (any of its threads'); [] once it is gone. Linux /proc."""
    kids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def catches(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Whether process `pid` has a handler for `sig` installed (Linux /proc SigCgt); False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) >> (sig - 1) & 1)
