"""The process that runs model.py (inside the sandbox): `python -m elue.costs._worker`.

Protocol: one JSON request on stdin
    {"model_py": "/sandbox/model.py", "calls": [["layer_1", [10, 768]], ...], "progress": true}
and JSON lines on the *result channel*, the process's original stdout:
    {"progress": [done, total]}            (zero or more)
    {"ok": true, "module_names": [...], "params": N, "module_list_params": M, "flops": [["layer_1", [10, 768], F], ...]}
 or {"ok": false, "error": "<one clear message>"}
Before model.py is imported, file descriptor 1 is pointed at stderr, so anything model.py prints
(Python or C level) goes to stderr and cannot corrupt the channel. Nothing but JSON is written on it.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import os
import sys
import time
import tokenize
import traceback
from typing import Any


def _exc_line(exc: BaseException) -> str:
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else ""
    if len(first) > 400:
        first = first[:400] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _tail(exc: BaseException, model_py: str, frames: int = 4) -> str:
    """The last few traceback frames, model.py's frames first-class (other files shortened)."""
    tb = traceback.extract_tb(exc.__traceback__)
    keep = [f for f in tb if f.filename == model_py] or list(tb)
    keep = keep[-frames:]
    lines = []
    for f in keep:
        where = "model.py" if f.filename == model_py else os.path.basename(f.filename)
        lines.append(f"  {where}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}")
    return "\n".join(lines)


class _Fail(Exception):
    """One clear message for the submitter; `extra` goes back as plain data next to it."""

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.extra = extra


def _source(model_py: str) -> str:
    """model.py's text, decoded as Python decodes a source file: UTF-8 with or without a BOM, or the
    encoding its PEP 263 coding line names (a BOM'd file was a syntax error at U+FEFF)."""
    try:
        with open(model_py, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise _Fail(f"cannot read model.py: {_exc_line(exc)}") from None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError as exc:  # an unknown encoding, or a coding line that contradicts a BOM
        raise _Fail(f"model.py has a bad encoding declaration: {exc.msg}") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding.startswith("utf-8") else encoding
        line = raw[: exc.start].count(b"\n") + 1
        raise _Fail(f"model.py is not valid {name} text (line {line}): save it as UTF-8") from None


def _load(model_py: str):
    source = _source(model_py)
    try:
        code = compile(source, model_py, "exec")
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        text = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        raise _Fail(f"model.py has a syntax error at {where}: {exc.msg}{text}") from None
    spec = importlib.util.spec_from_file_location("model", model_py)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["model"] = mod
    try:
        exec(code, mod.__dict__)
    except MemoryError:
        raise _Fail("model.py ran out of memory while being imported (memory limit reached)") from None
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt from model.py too
        raise _Fail(
            f"model.py raised {_exc_line(exc)} while being imported\n{_tail(exc, model_py)}"
        ) from None
    return mod


def _check(mod) -> tuple[dict, Any, Any]:
    missing = [n for n in ("module_list", "entire_model") if not hasattr(mod, n)]
    if missing:
        raise _Fail(
            "model.py must define `module_list: dict[str, nn.Module]` and `entire_model: nn.Module`; "
            f"missing: {', '.join(missing)}"
        )
    ml = mod.module_list
    if type(ml).__name__ == "ModuleDict":
        ml = dict(ml.items())
    if not isinstance(ml, dict):
        raise _Fail(f"model.py's module_list must be a dict of name -> nn.Module, not {type(ml).__name__}")

    if not ml:
        raise _Fail("model.py's module_list is empty")

    from torch import nn

    bad = [
        f"{k!r} ({type(v).__name__})"
        for k, v in ml.items()
        if not isinstance(k, str) or not isinstance(v, nn.Module)
    ]
    if bad:
        raise _Fail(
            "model.py's module_list must map string names to nn.Module instances; bad entries: "
            + ", ".join(bad[:10])
        )
    em = mod.entire_model
    if not isinstance(em, nn.Module):
        raise _Fail(f"model.py's entire_model must be an nn.Module, not {type(em).__name__}")
    dummy = getattr(mod, "dummy_input", None)
    if dummy is not None and not callable(dummy):
        raise _Fail("model.py's dummy_input must be a function (name, shape) -> tuple")
    return ml, em, dummy


def run(request: dict, emit, freeze_heap: bool = False) -> dict:
    """Load model.py, price the requested calls. `freeze_heap`: in the worker process only (see below)."""
    model_py = request["model_py"]
    calls = [(str(n), tuple(int(d) for d in s)) for n, s in request.get("calls", [])]
    mod = _load(model_py)
    module_list, entire_model, dummy = _check(mod)

    import torch

    from elue.costs.flops import FlopCountError, ModuleFlops
    from elue.costs.params import count_params

    torch.set_num_threads(max(1, int(request.get("threads", 1))))

    try:
        params = count_params(entire_model)
    except Exception as exc:  # noqa: BLE001
        raise _Fail(f"cannot count the parameters of entire_model: {_exc_line(exc)}") from None
    try:
        # only for a warning: modules holding more than the whole model means a layer was left out of it
        module_list_params = count_params(*module_list.values())
    except Exception:  # noqa: BLE001
        module_list_params = None

    loaded_at = time.perf_counter()  # model.py imported and built: pricing starts here
    if freeze_heap:
        # What is loaded now (torch, transformers, model.py) lives until the worker process ends: keep the
        # collector from walking it again in each full collection that pricing's many small objects set off
        # (~0.25 s of ~0.9 s for a BERT-base model.py here). Not in a caller's process: its objects would
        # never be freed.
        gc.freeze()
    wanted = list(dict.fromkeys(calls))
    # both lists in an order a reader follows: the test file's and model.py's own (sorted as text,
    # exit_1, exit_10, exit_11, ..., exit_2 hid where a name was missing from)
    missing = list(dict.fromkeys(n for n, _ in wanted if n not in module_list))
    if missing:
        raise _Fail(
            "module name(s) not in model.py's module_list: "
            + ", ".join(missing)
            + "; available: "
            + ", ".join(module_list),
            module_names=list(module_list),
        )
    for m in module_list.values():
        m.eval()
    counter = ModuleFlops(module_list, dummy)
    counter.expect(wanted)
    out = []
    total = len(wanted)
    step = max(1, total // 100)
    with torch.no_grad():
        for i, (name, shape) in enumerate(wanted, start=1):
            try:
                flops = counter(name, shape)
            except FlopCountError as exc:
                raise _Fail(
                    f"module {name!r} fails at input shape {shape_text(shape)}, {exc}",
                    failed_call=[name, list(shape)],
                ) from None
            except MemoryError:
                raise _Fail(
                    f"module {name!r} ran out of memory at input shape {shape_text(shape)} (memory limit reached)",
                    failed_call=[name, list(shape)],
                ) from None
            except Exception as exc:  # noqa: BLE001
                # torch reports a failed allocation as a RuntimeError ("... can't allocate memory ...")
                oom = isinstance(exc, torch.OutOfMemoryError) or "allocate memory" in str(exc)
                what = "ran out of memory (memory limit reached)" if oom else _exc_line(exc)
                raise _Fail(
                    f"module {name!r} fails at input shape {shape_text(shape)}: {what}",
                    failed_call=[name, list(shape)],
                ) from None
            out.append([name, list(shape), int(flops)])
            if request.get("progress") and (i % step == 0 or i == total):
                emit({"progress": [i, total]})
    return {
        "ok": True,
        "module_names": list(module_list),
        "params": int(params),
        "module_list_params": module_list_params,
        "flops": out,
        "pricing_s": time.perf_counter() - loaded_at,
    }


def shape_text(shape) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def main() -> int:
    raw = sys.stdin.read()
    # the result channel: a private copy of the original stdout; fd 1 then points at stderr
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(obj: dict) -> None:
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    try:
        request = json.loads(raw)
    except ValueError as exc:
        emit({"ok": False, "error": f"bad request: {exc}"})
        return 2
    try:
        result = run(request, emit, freeze_heap=True)
    except _Fail as exc:
        result = {"ok": False, "error": str(exc), **exc.extra}
    except MemoryError:
        result = {"ok": False, "error": "model.py ran out of memory (memory limit reached)"}
    except BaseException as exc:  # noqa: BLE001
        result = {"ok": False, "error": f"model.py failed: {_exc_line(exc)}"}
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
