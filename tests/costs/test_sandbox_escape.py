"""Hostile model.py files trying to get out of the sandbox (or to hurt the process that runs it).

Each probe reports what it managed through its exception message (first line) or, where it needs more
room, through the last line of stderr before `os._exit` (the parent quotes it in the SandboxError).
Probes only open host files for writing (never write them) and never exhaust anything for real.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from elue.costs import sandbox
from elue.costs.sandbox import SandboxError, SandboxLimits, price_model

BWRAP_OK, BWRAP_WHY = sandbox.bwrap_available()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bwrap not usable: {BWRAP_WHY}")
HOST_ROOT = sandbox._host_root()


def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(source))
    return path


TRY = """
def attempt(key, fn):
    try:
        out[key] = fn()
    except BaseException as exc:
        out[key] = type(exc).__name__
"""


def report(tmp_path: Path, body: str, **kw) -> dict:
    """Run `body` (which fills the dict `out`) as model.py in the sandbox; return `out`."""
    model = write(
        tmp_path,
        "import json, os, sys\nout = {}\n"
        + TRY
        + textwrap.dedent(body)
        + "\nsys.stderr.write(json.dumps(out) + '\\n'); sys.stderr.flush(); os._exit(3)\n",
    )
    with pytest.raises(SandboxError) as info:
        price_model(model, **kw)
    msg = str(info.value)
    assert "without a result: " in msg, msg
    return json.loads(msg.split("without a result: ", 1)[1])


@needs_bwrap
def test_host_kernel_settings_not_writable(tmp_path):
    # as host root, the sandbox user used to be uid 0 outside: /proc/sys (kernel.core_pattern: a root
    # shell on the host at the next crash) was writable. Only opened here, never written.
    out = report(
        tmp_path,
        """
        def opened(path):
            os.close(os.open(path, os.O_WRONLY))
            return "opened"
        for p in [
            "/proc/sys/kernel/core_pattern",
            "/proc/sys/vm/drop_caches",
            "/proc/sys/fs/file-max",
            "/proc/sys/kernel/pid_max",
        ]:
            attempt(p, lambda p=p: opened(p))
        out["uid_map"] = open("/proc/self/uid_map").read().split()
        out["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm"))]
        """,
    )
    assert out["/proc/sys/kernel/core_pattern"] in ("PermissionError", "OSError"), out
    assert out["/proc/sys/vm/drop_caches"] in ("PermissionError", "OSError"), out
    assert out["/proc/sys/fs/file-max"] in ("PermissionError", "OSError"), out
    assert set(out["caps"]) == {"0000000000000000"}, out
    inside, outside = int(out["uid_map"][0]), int(out["uid_map"][1])
    if HOST_ROOT:
        # the sandbox's uid is not the host's root: no user namespace and uid 65534 ("0 0 4294967295":
        # the host's own uids), or a namespace whose uid maps to a host uid other than 0
        assert inside == outside == 0 or outside != 0, out
        # without a user namespace the sandbox's pid namespace belongs to the host's root: pid_max closed
        assert out["/proc/sys/kernel/pid_max"] in ("PermissionError", "OSError"), out
    # Run by another user, the sandbox is that user on the host (an unprivileged user namespace maps no
    # other uid), but bwrap's --disable-userns nests a second namespace, so uid_map reads "65534 0 1"
    # (uid 0 of bwrap's outer namespace: the host user). And since Linux 6.14 pid_max is per pid
    # namespace, writable there by the sandbox as its pid namespace's owner: not a host setting.
    if inside == outside == 0:
        assert HOST_ROOT


@needs_bwrap
def test_no_unbounded_writable_filesystem(tmp_path):
    # the tmpfs root and /dev, /dev/shm of bwrap have no size limit (half the host's RAM each)
    out = report(
        tmp_path,
        """
        def put(path):
            with open(path, "w") as fh:
                fh.write("x")
            return "wrote"
        for p in ["/pwned", "/dev/pwned", "/dev/shm/pwned", "/etc/pwned", "/proc/pwned"]:
            attempt(p, lambda p=p: put(p))
        sizes = {}
        for d in ["/", "/dev", "/dev/shm", "/tmp", "/sandbox", "/dev/pts"]:
            try:
                if os.access(d, os.W_OK) and not os.statvfs(d).f_flag & os.ST_RDONLY:
                    s = os.statvfs(d)
                    sizes[d] = s.f_blocks * s.f_frsize
            except OSError:
                pass
        out["writable"] = sizes
        """,
    )
    for p in ["/pwned", "/dev/pwned", "/dev/shm/pwned", "/etc/pwned", "/proc/pwned"]:
        assert out[p] != "wrote", out
    scratch = SandboxLimits().scratch_bytes
    assert all(size <= scratch for size in out["writable"].values()), out
    assert set(out["writable"]) <= {"/tmp", "/sandbox", "/dev/pts"}, out


def test_memory_and_file_size_limits_hold(tmp_path):
    # 3 GiB of address space is no problem for the host (mapped, never touched), so only RLIMIT_AS refuses it
    # (model.py's `bytearray(1 << 40)` fails on any host, limit or not); a 2 MiB file only RLIMIT_FSIZE
    out = report(
        tmp_path,
        """
        import mmap
        attempt("mmap", lambda: mmap.mmap(-1, 3 << 30) and "mapped")
        def big():
            with open("big.bin", "wb") as fh:
                fh.write(b"x" * (2 << 20))
            return "wrote"
        attempt("file", big)
        """,
        limits=SandboxLimits(memory_bytes=2 << 30, file_bytes=1 << 20),
        trust_model_code=not BWRAP_OK,
    )
    assert out == {"mmap": "OSError", "file": "OSError"}, out


def test_wall_clock_timeout_kills_the_sandboxed_processes(tmp_path):
    # the run is abandoned at the wall-clock limit: what model.py started must not live on
    token = f"{600 + os.getpid() % 1000}.{time.time_ns() % 10**9}"
    model = write(tmp_path, f"import os\nos.execv('/usr/bin/sleep', ['sleep', '{token}'])\n")
    with pytest.raises(SandboxError, match="wall-clock limit of 2 s"):
        price_model(model, limits=SandboxLimits(wall_s=2), trust_model_code=not BWRAP_OK)
    left = _pids_running(["sleep", token])
    for pid in left:
        os.kill(pid, 9)
    assert not left


def _pids_running(argv: list[str]) -> list[int]:
    wanted = ("\0".join(argv) + "\0").encode()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read() == wanted:
                    out.append(int(pid))
        except OSError:
            pass
    return out


@needs_bwrap
@pytest.mark.skipif(not HOST_ROOT, reason="the process limit is set for the sandbox user of a root host")
def test_fork_bomb_is_bounded(tmp_path):
    # root is exempt from RLIMIT_NPROC: a fork or thread bomb used to take all of the host's pids
    out = report(
        tmp_path,
        """
        import time
        kids, err = [], None
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError as exc:
                err = type(exc).__name__
                break
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            kids.append(pid)
        out["forked"], out["err"] = len(kids), err
        for k in kids:
            os.kill(k, 9)
        """,
        limits=SandboxLimits(processes=16, wall_s=60),
    )
    assert out["forked"] < 16 and out["err"] == "BlockingIOError", out


@needs_bwrap
@pytest.mark.skipif(not HOST_ROOT, reason="bwrap's init runs as another user only on a root host")
def test_cannot_trace_or_signal_the_sandbox_init(tmp_path):
    # pid 1 is bwrap's init: stopping it (PTRACE_ATTACH) hung the run until the wall-clock limit, and a
    # traced init could be kept alive after its parent died
    out = report(
        tmp_path,
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        out["ptrace"] = libc.ptrace(16, 1, 0, 0) == 0 and "attached" or os.strerror(ctypes.get_errno())
        attempt("mem", lambda: os.close(os.open("/proc/1/mem", os.O_RDWR)) or "opened")
        attempt("kill0", lambda: os.kill(1, 0) or "allowed")
        """,
        limits=SandboxLimits(wall_s=30),
    )
    assert out["ptrace"] != "attached" and out["mem"] != "opened" and out["kill0"] != "allowed", out


def test_deeply_nested_result_is_one_error(tmp_path):
    # the result channel is reachable from model.py (fd 3): a nested result crashed the parent with a
    # RecursionError instead of a SandboxError
    model = write(
        tmp_path,
        """
        import os
        os.write(3, b'{"ok": true, "flops": ' + b"[" * 200000 + b"\\n")
        os._exit(0)
        """,
    )
    with pytest.raises(SandboxError):
        price_model(model, trust_model_code=not BWRAP_OK)


def test_junk_on_the_result_channel_is_not_kept(tmp_path):
    # 1000 lines of up to 16 MiB each used to be kept in the parent (16 GiB); here 1000 × 64 KiB
    model = write(
        tmp_path,
        """
        import os
        line = b'{"x": "' + b"y" * 65536 + b'"}\\n'
        for _ in range(1000):
            os.write(3, line)
        os.write(3, b'{"ok": false, "error": "' + b"z" * (4 << 20) + b'"}\\n')
        os._exit(0)
        """,
    )
    tracemalloc.start()
    try:
        with pytest.raises(SandboxError) as info:
            price_model(model, trust_model_code=not BWRAP_OK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, peak
    assert len(str(info.value)) <= 5000  # one message, not 4 MiB of it


@needs_bwrap
def test_parent_environment_and_files_not_inherited(tmp_path, monkeypatch):
    monkeypatch.setenv("ELUE_SECRET_KEY", "s3cret-key")
    monkeypatch.setenv("ELUE_DATABASE_URL", "postgresql://u:pw@/db")
    secret = tmp_path / "keep" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("s3cret-file")
    held = open(secret)  # noqa: SIM115 - a file the parent holds open (like a DB or the upload)
    os.set_inheritable(held.fileno(), True)
    try:
        out = report(
            tmp_path,
            """
            fds = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    fds[fd] = os.readlink("/proc/self/fd/" + fd)
                except OSError:
                    pass
            out["fds"] = fds
            out["env"] = dict(os.environ)
            out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            out["environ1"] = None
            attempt("environ1", lambda: open("/proc/1/environ").read())
            attempt("sys", lambda: os.listdir("/sys"))
            attempt("run", lambda: os.listdir("/run"))
            attempt("home", lambda: os.listdir("/home"))
            attempt("root", lambda: os.listdir("/root"))
            attempt("shadow", lambda: open("/etc/shadow").read())
            """,
        )
    finally:
        held.close()
    blob = json.dumps(out)
    assert "s3cret" not in blob and "ELUE_" not in blob and "postgresql" not in blob, out
    assert all(t.startswith(("pipe:", "/proc")) for t in out["fds"].values()), out
    assert max(out["pids"]) < 10, out  # a PID namespace: no host process is visible
    assert out["sys"] == out["run"] == out["home"] == "FileNotFoundError", out
    assert out["shadow"] == "FileNotFoundError", out
    assert out["root"] in ("FileNotFoundError", "PermissionError") or out["root"] == [".pyenv"], out
