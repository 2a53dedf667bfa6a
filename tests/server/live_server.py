"""`elue serve` as a subprocess on a free loopback port (the real command: web process + worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from subprocesses import free_port

from elue.costs.sandbox import bwrap_available


class LiveServer:
    def __init__(
        self, home: Path, data_dir: Path, *, extra_env: dict | None = None, args: list[str] | None = None
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "serve.log"
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ELUE_ADMIN_PASSWORD": "admin-password", **(extra_env or {})}
        if not bwrap_available()[0]:  # our own fixture model.py files run unsandboxed then
            env["ELUE_TRUST_MODEL_CODE"] = "1"
        env.pop("ELUE_DATABASE_URL", None)
        cmd = [
            sys.executable,
            "-c",
            "from elue.cli import main; main()",
            "serve",
            "--port",
            str(self.port),
            "--home",
            str(home),
            "--data-dir",
            str(data_dir),
            "--admin",
            "admin",
            *(args or []),
        ]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        t0 = time.time()
        while time.time() - t0 < 60:
            if self.proc.poll() is not None:
                raise RuntimeError(f"elue serve exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/api/leaderboard", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"elue serve did not come up:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # serve stops its workers on the way out
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        try:  # anything left in serve's process group (a worker that outlived it) goes too
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
