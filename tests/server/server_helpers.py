"""Submissions for the server tests: a tiny model.py, test files over real or made-up indices, zips."""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path

import numpy as np
from subprocesses import PATIENCE_S, wait_until  # noqa: F401  (re-exported for the server tests)
from toolkit_fixtures import TINY_MODEL_PY  # noqa: F401  (re-exported: the toolkit tests' hand-priced model)

HOSTILE_MODEL_PY = """
import os, socket
open("/tmp/elue-pwned", "w").write("x")
socket.create_connection(("1.1.1.1", 80), timeout=2)
os.system("rm -rf ~")
from torch import nn
module_list = {"emb": nn.Linear(2, 2)}
entire_model = nn.ModuleDict(module_list)
"""


def trace(n: int, exit_layer: int) -> str:
    parts = [f"({n}),emb"]
    for i in range(1, exit_layer + 1):
        parts += [f"({n},32),layer_{i}", f"(32),exit_{i}"]
    return "; ".join(parts)


def write_test_file(path: Path, indices, exit_layer: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, 2, size=len(indices))
    lengths = rng.integers(5, 40, size=len(indices))
    lines = ["index\tpred\tmodules"]
    lines += [
        f"{i}\t{p}\t{trace(int(n), exit_layer)}" for i, p, n in zip(indices, preds, lengths, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_submission(folder: Path, indices, task: str = "sst-2", model_py: str = TINY_MODEL_PY) -> Path:
    """model.py + two operating points (exit after layer 1 and after layer 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(model_py)
    write_test_file(folder / task / "exit1.tsv", indices, 1, seed=1)
    write_test_file(folder / task / "exit2.tsv", indices, 2, seed=2)
    return folder


def zip_bytes(files: dict[str, bytes | str], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def zip_folder(folder: Path) -> bytes:
    return zip_bytes(
        {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    )


def write_made_up_answers(root: Path, n: int = 20) -> tuple[Path, list[int]]:
    """An answers dir with sst-2 test.tsv + test_labels.tsv of n made-up rows."""
    d = root / "sst-2"
    d.mkdir(parents=True, exist_ok=True)
    idx = list(range(n))
    (d / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\tmade-up sentence {i}\n" for i in idx))
    (d / "test_labels.tsv").write_text("index\tlabel\n" + "".join(f"{i}\t{i % 2}\n" for i in idx))
    return root, idx


# a two-point sst-2 submission of the tiny model, small enough for API tests
TSV = "index\tpred\tmodules\n0\t1\t(5),emb\n1\t0\t(5),emb\n"
SUB = {"model.py": TINY_MODEL_PY, "sst-2/a.tsv": TSV, "sst-2/b.tsv": TSV}


def api_upload(client, headers, name="my model", public=False, files=SUB):  # noqa: ANN001, ANN201
    """POST a zip to /api/submissions; asserts it was accepted and returns the JSON answer."""
    r = client.post(
        "/api/submissions",
        headers=headers,
        data={"name": name, "public": str(public).lower()},
        files={"file": ("s.zip", zip_bytes(files), "application/zip")},
    )
    assert r.status_code == 202, r.text
    return r.json()


def api_reported(client, headers, name="Paper", **kw):  # noqa: ANN001, ANN201
    """POST a public reported entry (one SST-2 point) to /api/submissions/reported; `kw` overrides fields of
    the body. Returns the response (the tests check refusals too)."""
    body = {
        "name": name,
        "params_m": 10,
        "paper_url": "https://example.org/p",
        "public": True,
        "tasks": {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0}]}},
        **kw,
    }
    return client.post("/api/submissions/reported", headers=headers, json=body)


# the public pages and reads that must answer 200 whatever is stored
PUBLIC_URLS = [
    "/",
    "/leaderboard",
    "/tasks/sst-2",
    "/api/leaderboard",
    "/api/models",
    "/api/tasks/sst-2",
    "/api/results.json",
    "/api/results.csv",
]


def run_at_once(target, args: list) -> None:  # noqa: ANN001
    """`target(a)` for each `a` in `args`, each in its own thread, all started before any is joined (the race
    tests: what meets inside the service is up to their barriers)."""
    threads = [threading.Thread(target=target, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
