"""Run an untrusted model.py and hand back its cost table as plain data.

model.py is executed by `python -m elue.costs._worker` in a separate process:
- under bubblewrap (`bwrap`): no network (all namespaces unshared), all capabilities dropped, a
  read-only view of only the system libraries, the Python installation, its site-packages and the
  `elue` package; a private tmpfs as working directory with model.py bound read-only into it; no view
  of /work, home directories, the submission folder or any answer key; it dies with its parent;
  never as the host's uid 0 (on a root host: no user namespace, uid 65534 and RLIMIT_NPROC);
- with rlimits on CPU time, address space and file size (set before exec), and a wall-clock timeout
  that kills the whole process group;
- talking JSON only (request on stdin, JSON lines back); the parent never unpickles anything.

Without a usable bwrap, `price_model` raises SandboxUnavailable unless `trust_model_code=True`,
in which case the same worker runs in a plain subprocess with the same limits.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Shape = tuple[int, ...]

__all__ = [
    "CostTable",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "bwrap_available",
    "price_model",
]

BWRAP_HINT = (
    "model.py is untrusted code and is only run inside a bubblewrap sandbox, but `bwrap` is {why}. "
    "Install bubblewrap (e.g. `apt-get install bubblewrap`), or, for code you trust, pass "
    "trust_model_code=True (CLI: --trust-model-code) to run it without the sandbox."
)


class SandboxError(Exception):
    """model.py could not be priced; the message says why, in one piece, for the submitter.

    `module_names`: model.py's module names when it loaded but test files name modules it lacks.
    `failed_call`: the (name, shape) call whose pricing failed, when one did."""

    def __init__(
        self,
        message: str,
        module_names: list[str] | None = None,
        failed_call: tuple[str, tuple[int, ...]] | None = None,
    ):
        super().__init__(message)
        self.module_names = module_names
        self.failed_call = failed_call


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run on this machine (no usable bwrap) and the code was not trusted."""


@dataclass
class SandboxLimits:
    """Resource limits of one pricing run (all overridable)."""

    cpu_s: int = 300  # RLIMIT_CPU, seconds of CPU time (all threads)
    wall_s: float = 600.0  # wall-clock timeout; the whole process group is killed
    memory_bytes: int = 8 << 30  # RLIMIT_AS (torch maps a lot of address space; 8 GiB is ample)
    file_bytes: int = 256 << 20  # RLIMIT_FSIZE: largest file the worker may write
    scratch_bytes: int = 256 << 20  # size of the tmpfs working directory and /tmp
    threads: int = 1  # torch threads inside the worker
    # RLIMIT_NPROC of the sandbox user on a root host: its processes and threads, counted over every sandbox
    # running at once (a server scores several submissions side by side, each with torch's threads)
    processes: int = 512


@dataclass
class CostTable:
    """What model.py costs: its module names, parameter count and FLOPs per distinct call."""

    module_names: list[str]
    params: int
    flops: dict[tuple[str, Shape], int] = field(default_factory=dict)  # 2 × MACs at batch 1
    pricing_s: float = 0.0  # seconds the worker spent pricing, after model.py was loaded
    # parameters of module_list's modules together (each shared tensor once), for a warning only: more
    # than `params` means entire_model lacks a layer the submission calls; None when not counted
    module_list_params: int | None = None


# ---------------------------------------------------------------------------------------------------
# bubblewrap


def _bwrap_path() -> str | None:
    return shutil.which("bwrap") or ("/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None)


def _elue_src() -> Path:
    import elue

    return Path(elue.__file__).resolve().parent


def _python_roots() -> list[str]:
    """Directories the worker's Python needs: prefixes, the stdlib, site-packages (read-only)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.add(p)
    for p in sys.path:
        if p and ("site-packages" in p or "dist-packages" in p) and os.path.isdir(p):
            roots.add(p)
    exe = os.path.realpath(sys.executable)
    roots.add(os.path.dirname(os.path.dirname(exe)))
    out = []
    for r in sorted({os.path.realpath(r) for r in roots if r and os.path.isdir(r)}):
        if r in ("/", "/usr") or r.startswith("/usr/"):
            continue  # /usr is bound as a whole
        if not any(r.startswith(o + os.sep) for o in out):
            out.append(r)
    return out


def _host_root() -> bool:
    """True when this process is the host's root (uid 0 outside any user namespace that remaps it)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return True
    return any(r[:2] == ["0", "0"] for r in rows)


SANDBOX_UID = 65534  # "nobody": the sandbox's user, inside and (on a root host) outside

_USERNS = ["--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
# On a root host a user namespace maps the sandbox's uid to the host's uid 0: model.py, capabilities
# dropped or not, then owned every root-owned file it could see, /proc/sys among them (a write to
# kernel.core_pattern is a root shell on the host). There bwrap runs privileged, without a user
# namespace, and a launcher run first in the sandbox drops to uid/gid 65534 (real, effective, saved;
# no groups; permitted and effective capabilities cleared by the kernel) before exec'ing the worker.
_PRIVILEGED = [
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--cap-drop",
    "ALL",
    "--cap-add",
    "CAP_SETUID",
    "--cap-add",
    "CAP_SETGID",
]
_DROP_PRIVILEGES = f"""
import os, sys
u = {SANDBOX_UID}
os.setgroups([])
os.setresgid(u, u, u)
os.setresuid(u, u, u)
caps = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith(("CapPrm:", "CapEff:"))]
if os.getresuid() != (u, u, u) or os.getresgid() != (u, u, u) or os.getgroups() or set(caps) != {{"0" * 16}}:
    sys.exit("the sandbox could not drop its privileges")
os.execv(sys.argv[1], sys.argv[1:])
"""


def _launcher(mode: str) -> list[str]:
    """What the sandbox runs before the worker's command (the privilege drop on a root host)."""
    return [sys.executable, "-I", "-S", "-c", _DROP_PRIVILEGES] if mode == "privileged" else []


def _modes() -> tuple[str, ...]:
    """The ways to run bwrap here, best first. On a root host only the privileged one is safe."""
    return ("privileged",) if _host_root() else ("userns", "plain")


def _bwrap_args(bwrap: str, model_copy: Path, limits: SandboxLimits, mode: str | None = None) -> list[str]:
    if mode is None:
        mode = _PROBE_MODE.get(bwrap, _modes()[0])
    if mode == "privileged":
        ns = _PRIVILEGED
    elif mode == "userns":
        ns = [*_USERNS, "--disable-userns", "--cap-drop", "ALL"]
    else:
        ns = ["--unshare-all", "--cap-drop", "ALL"]
    args = [bwrap, *ns, "--die-with-parent", "--new-session"]
    args += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    args += ["--perms", "0755", "--dir", "/etc"]  # bwrap would create it 0700: closed to uid 65534
    for f in (
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/alternatives",
    ):
        if os.path.exists(f):
            args += ["--ro-bind", f, f]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # the only writable places, both of bounded size (bwrap's own tmpfs root and /dev are not: they are
    # remounted read-only below)
    args += ["--perms", "01777", "--size", str(limits.scratch_bytes), "--tmpfs", "/tmp"]
    binds = list(_python_roots())
    # symlinked interpreters (venvs) may point elsewhere: bind the real interpreter's directory too
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    if not exe_dir.startswith("/usr/") and not any(exe_dir.startswith(r + os.sep) for r in _python_roots()):
        binds.append(exe_dir)
    binds.append(str(_elue_src()))
    made: set[str] = set()
    bound = ["/usr"]
    for root in binds:
        # parent folders that bwrap would create with the host's modes (/root: 0700, closed to uid 65534)
        parents = [str(p) for p in reversed(Path(root).parents) if str(p) != "/"]
        for parent in parents:
            if parent not in made and not any(parent == b or parent.startswith(b + os.sep) for b in bound):
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", root, root]
        bound.append(root)
    args += ["--perms", "01777", "--size", str(limits.scratch_bytes), "--tmpfs", "/sandbox"]
    args += ["--ro-bind", str(model_copy), "/sandbox/model.py", "--chdir", "/sandbox"]
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return args


def _env(limits: SandboxLimits, pythonpath: str, home: str) -> dict[str, str]:
    threads = str(limits.threads)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "PYTHONPATH": pythonpath,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
        "LANG": "C.UTF-8",
    }


_PROBE: dict[str, str | None] = {}
_PROBE_MODE: dict[str, str] = {}


def bwrap_available() -> tuple[bool, str]:
    """(usable, why not). Runs a trivial command in the same kind of sandbox once per process."""
    bwrap = _bwrap_path()
    if bwrap is None:
        return False, "not installed"
    if bwrap in _PROBE:
        why = _PROBE[bwrap]
        return why is None, why or ""
    why: str | None = "installed but unusable here"
    with tempfile.TemporaryDirectory(prefix="elue-probe-") as tmp:
        probe = Path(tmp) / "model.py"
        probe.write_text("")
        os.chmod(probe, 0o444)
        for mode in _modes():
            cmd = [
                *_bwrap_args(bwrap, probe, SandboxLimits(), mode=mode),
                *_launcher(mode),
                sys.executable,
                "-S",
                "-c",
                "import os; print(open('/sandbox/model.py').read() == '' and os.getcwd())",
            ]
            env = _env(SandboxLimits(), "", "/sandbox")
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
            except (OSError, subprocess.SubprocessError) as exc:
                why = f"installed but unusable here ({exc})"
                continue
            if proc.returncode == 0 and proc.stdout.strip() == "/sandbox":
                why = None
                _PROBE_MODE[bwrap] = mode
                break
            why = f"installed but unusable here ({_last_line(proc.stderr) or proc.returncode})"
    if why and _host_root():
        why += (
            "; as the host's root, model.py is only run where bwrap can set up the sandbox itself and "
            "drop to uid 65534 (a user namespace would map model.py to the host's uid 0)"
        )
    _PROBE[bwrap] = why
    return why is None, why or ""


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


# ---------------------------------------------------------------------------------------------------
# running the worker


def _preexec(limits: SandboxLimits, nproc: bool = False) -> Callable[[], None]:
    def apply() -> None:
        cpu = max(1, int(limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc:
            # counts the tasks (processes and threads) of the sandbox's user on the host: binding for
            # uid 65534, never for root, which the kernel exempts (a fork or thread bomb took all pids)
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return apply


def _signal_message(rc: int, limits: SandboxLimits, stderr_tail: str) -> str:
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and "cpu" in stderr_tail.lower()):
        return f"model.py exceeded the CPU time limit ({limits.cpu_s} s) and was stopped"
    if sig == signal.SIGKILL:
        return (
            "the model.py worker was killed (SIGKILL), most likely for exceeding the memory limit "
            f"({limits.memory_bytes / 2**30:.1f} GiB)"
        )
    if sig == signal.SIGSEGV:
        return "the model.py worker crashed (segmentation fault), e.g. after running out of memory"
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"the model.py worker was killed by signal {name}"
    tail = f": {stderr_tail}" if stderr_tail else ""
    return f"the model.py worker exited with status {rc} without a result{tail}"


def price_model(
    model_py: Path | str,
    calls: Iterable[tuple[str, Shape]] = (),
    *,
    trust_model_code: bool = False,
    limits: SandboxLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CostTable:
    """Load model.py in the sandbox; return its module names, parameter count and the FLOPs of each
    distinct (name, shape) in `calls` (FLOPs = 2 × MACs of one call at batch 1).

    Raises SandboxError (one message) for anything wrong with model.py, SandboxUnavailable when bwrap
    is missing or unusable and `trust_model_code` is False. With no calls, only names and params.
    """
    limits = limits or SandboxLimits()
    model_py = Path(model_py)
    if model_py.is_dir():
        raise SandboxError(f"{model_py} is a folder; give the model.py file (e.g. {model_py / 'model.py'})")
    if not model_py.is_file():
        raise SandboxError(f"model.py not found: {model_py}")
    wanted = list(dict.fromkeys((str(n), tuple(int(d) for d in s)) for n, s in calls))

    use_bwrap = True
    mode = None
    bwrap = _bwrap_path()
    ok, why = bwrap_available()
    if not ok:
        if not trust_model_code:
            raise SandboxUnavailable(BWRAP_HINT.format(why=why))
        use_bwrap = False

    with tempfile.TemporaryDirectory(prefix="elue-model-") as tmp:
        tmpdir = Path(tmp)
        copy = tmpdir / "model.py"
        try:
            shutil.copyfile(model_py, copy)
        except OSError as exc:
            raise SandboxError(f"cannot read model.py: {exc}") from None
        os.chmod(copy, 0o444)
        src_parent = str(_elue_src().parent)
        if use_bwrap:
            mode = _PROBE_MODE.get(bwrap, _modes()[0])
            cmd = [
                *_bwrap_args(bwrap, copy, limits, mode),
                *_launcher(mode),
                sys.executable,
                "-m",
                "elue.costs._worker",
            ]
            env = _env(limits, src_parent, "/sandbox")
            cwd = None
            target = "/sandbox/model.py"
        else:
            scratch = tmpdir / "scratch"
            scratch.mkdir()
            cmd = [sys.executable, "-m", "elue.costs._worker"]
            env = _env(limits, src_parent, str(scratch))
            env["TMPDIR"] = str(scratch)
            cwd = str(scratch)
            target = str(copy)
        request = {
            "model_py": target,
            "calls": [[n, list(s)] for n, s in wanted],
            "progress": progress is not None,
            "threads": limits.threads,
        }
        nproc = use_bwrap and mode == "privileged"
        result = _run_worker(cmd, env, cwd, request, limits, progress, nproc=nproc)

    if not result.get("ok"):
        names = result.get("module_names")
        raise SandboxError(
            _short(str(result.get("error") or "model.py could not be priced")),
            module_names=[str(n) for n in names] if isinstance(names, list) else None,
            failed_call=_plain_call(result.get("failed_call")),
        )
    try:
        flops = {(str(n), tuple(int(d) for d in s)): int(f) for n, s, f in result["flops"]}
        table = CostTable(
            module_names=[str(n) for n in result["module_names"]],
            params=int(result["params"]),
            flops=flops,
            pricing_s=float(result.get("pricing_s", 0.0)),
            module_list_params=_plain_count(result.get("module_list_params")),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity)
        raise SandboxError(f"the model.py worker returned a malformed result ({exc})") from None
    missing = [c for c in wanted if c not in table.flops]
    if missing:
        raise SandboxError(f"the model.py worker returned no FLOPs for {len(missing)} call(s)")
    # no honest count is negative or astronomically large: such numbers come from a model.py that tampered
    # with the counter (10**400 FLOPs overflowed the float sums of the scores: a traceback)
    bad = [
        f"{_digits(f)} FLOPs for {name!r}" for (name, _), f in table.flops.items() if not 0 <= f <= MAX_COUNT
    ]
    if not 0 <= table.params <= MAX_COUNT:
        bad.insert(0, f"{_digits(table.params)} parameters")
    if bad:
        raise SandboxError(f"the model.py worker returned impossible (negative or too large) costs: {bad[0]}")
    return table


# above any honest count (one meta matmul is at most ~2**126 MACs) and far below float64's overflow
MAX_COUNT = 10**60


def _plain_count(value) -> int | None:
    """A count the worker sent for a warning only: a non-negative int within MAX_COUNT, else None."""
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None


def _short(message: str, limit: int = 4000) -> str:
    """An error message from the worker (untrusted: model.py can write one of 16 MiB), cut to size."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _digits(n: int) -> str:
    """A count for a message: a 401-digit number is not printed whole."""
    return str(n) if abs(n) < 10**30 else f"{'-' if n < 0 else ''}{len(str(abs(n)))}-digit number"


def _run_worker(cmd, env, cwd, request, limits: SandboxLimits, progress, nproc: bool = False) -> dict:
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            preexec_fn=_preexec(limits, nproc),
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start the model.py worker: {exc}") from None

    stderr_chunks: list[bytes] = []

    def drain_stderr() -> None:  # keep the last ~64 KiB of what model.py printed
        size = 0
        for chunk in iter(lambda: proc.stderr.read1(8192), b""):
            stderr_chunks.append(chunk)
            size += len(chunk)
            while size > 65536 and len(stderr_chunks) > 1:
                size -= len(stderr_chunks.pop(0))

    lines: list[str] = []  # at most one: the last result line (what model.py sends is not kept)

    def read_stdout() -> None:
        # bounded lines: an over-long line (no newline in 16 MiB) is discarded, never buffered whole
        limit = 16 << 20
        oversize = False
        while True:
            raw = proc.stdout.readline(limit)
            if not raw:
                break
            if not raw.endswith(b"\n"):
                oversize = True
                continue
            if oversize:  # the tail of an over-long line
                oversize = False
                continue
            if progress is not None and raw.startswith(b'{"progress"'):
                try:
                    done, total = json.loads(raw)["progress"]
                    progress(int(done), int(total))
                except Exception:  # noqa: BLE001 - a bad line or a failing callback must not stop pricing
                    pass
                continue
            if raw.startswith(b'{"ok"'):
                lines[:] = [raw.decode("utf-8", "replace").strip()]  # only the final result matters

    t_err = threading.Thread(target=drain_stderr, daemon=True)
    t_out = threading.Thread(target=read_stdout, daemon=True)
    t_err.start()
    t_out.start()
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except OSError:
        pass
    deadline = time.monotonic() + limits.wall_s
    timed_out = False
    while True:
        try:
            proc.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                timed_out = True
                _kill_group(proc)
                break
    t_out.join(timeout=5)
    t_err.join(timeout=5)
    if timed_out:
        raise SandboxError(
            f"model.py timed out: no result within the wall-clock limit of {limits.wall_s:g} s"
        )
    result = None
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a deeply nested line from model.py
            continue
        if isinstance(obj, dict) and "ok" in obj:
            result = obj
            break
    if result is None:
        tail = _last_line(b"".join(stderr_chunks).decode("utf-8", "replace"))
        raise SandboxError(_signal_message(proc.returncode, limits, tail))
    return result


def descendant_pids(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (Linux /proc), deepest last."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    # kill the sandboxed processes first (they live in their own session), so that bwrap reaps them
    # and no zombie is left to an init that may not reap
    for pid in reversed(descendant_pids(proc.pid)):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _plain_call(value) -> tuple[str, tuple[int, ...]] | None:
    """A worker's ["name", [d1, ...]] as a call, or None for anything else (it is untrusted output)."""
    try:
        name, shape = value
        return str(name), tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None
