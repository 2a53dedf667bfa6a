"""`elue serve` as a subprocess on a free loopback port (the real command: web process + worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server_helpers import PATIENCE_S
from subprocesses import free_port

from elue.costs.sandbox import bwrap_available


class LiveServer:
    def __init__(
        self, home: Path, data_dir: Path, *, extra_env: dict | None = None, args: list[str] | None = None
    ):
        self.log = home / "serve.log"
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ELUE_ADMIN_PASSWORD": "admin-password", **(extra_env or {})}
        if not bwrap_available()[0]:  # our own fixture model.py files run unsandboxed then
            env["ELUE_TRUST_MODEL_CODE"] = "1"
        env.pop("ELUE_DATABASE_URL", None)
        for _ in range(
            3
        ):  # the free port may be taken before serve binds it (another program's): another one
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
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
            if self._up():
                return
            if "address already in use" not in self.log.read_text().lower():
                break
        raise RuntimeError(f"elue serve did not come up:\n{self.log.read_text()}")

    def _up(self) -> bool:
        """Wait until serve answers on its port; False when it exited (or never answered: then stopped)."""
        deadline = time.monotonic() + PATIENCE_S  # start-up migrates and seeds: slow on a busy machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # anything it started goes too
                return False
            try:
                if httpx.get(self.url + "/api/leaderboard", timeout=5).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        return False

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
