"""What tests that start `elue` (or torchrun) in child processes share: a free port, the child's environment,
the torchrun executable. Import as `from subprocesses import ...` (tests/ is on the path)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
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
