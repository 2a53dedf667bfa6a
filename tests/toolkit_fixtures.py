"""Small made-up submissions and answer keys for toolkit tests (no real data needed)."""

from __future__ import annotations

from pathlib import Path

# Tiny hand-priced model: emb = Embedding + LayerNorm(32) -> 2*32*n MACs; layer_i = Linear(32, 32)
# without bias on n tokens -> 1024*n MACs; exit_i = Linear(32, 2) on the [CLS] vector -> 64 MACs.
TINY_MODEL_PY = """
from torch import nn

class Emb(nn.Module):
    def __init__(self):
        super().__init__()
        self.word = nn.Embedding(100, 32)
        self.norm = nn.LayerNorm(32)

    def forward(self, ids):
        return self.norm(self.word(ids))

module_list = {"emb": Emb()}
for i in (1, 2):
    module_list[f"layer_{i}"] = nn.Linear(32, 32, bias=False)
    module_list[f"exit_{i}"] = nn.Linear(32, 2)

entire_model = nn.ModuleDict(module_list)
"""
TINY_PARAMS = 100 * 32 + 2 * 32 + 2 * (32 * 32) + 2 * (32 * 2 + 2)


def tiny_flops(n: int, exit_layer: int) -> int:
    """FLOPs (2 x MACs) of a dynamic trace through `exit_layer` layers, n tokens."""
    return 2 * (64 * n + exit_layer * (1024 * n + 64))


def tiny_trace(n: int, exit_layer: int) -> str:
    parts = [f"({n}),emb"]
    for i in range(1, exit_layer + 1):
        parts += [f"({n},32),layer_{i}", f"(32),exit_{i}"]
    return "; ".join(parts)


SST2_KEY = [(0, 1), (1, 0), (2, 1), (3, 1), (4, 0)]  # (index, label)
# (index, pred, tokens, exit layer)
SST2_ROWS = [(0, 1, 5, 1), (1, 0, 7, 2), (2, 0, 5, 2), (3, 1, 9, 1), (4, 0, 12, 2)]


def write_answers(root: Path) -> Path:
    """An answers dir with sst-2 test.tsv and test_labels.tsv (made-up rows)."""
    task_dir = root / "sst-2"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "test.tsv").write_text(
        "index\tsentence\n" + "".join(f"{i}\tmade-up sentence {i}\n" for i, _ in SST2_KEY)
    )
    (task_dir / "test_labels.tsv").write_text("index\tlabel\n" + "".join(f"{i}\t{y}\n" for i, y in SST2_KEY))
    return root


def write_submission(root: Path, rows=SST2_ROWS, name: str = "sst-2.tsv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(TINY_MODEL_PY)
    (root / name).write_text(
        "index\tpred\tmodules\n" + "".join(f"{i}\t{p}\t{tiny_trace(n, e)}\n" for i, p, n, e in rows)
    )
    return root


# model.py runs in the sandbox worker's process, so it can reach the result channel (up the stack to the
# function that writes it) and send any numbers: the tests of what is refused
_FORGED_MODEL_PY = """
import os, sys
from torch import nn
module_list = {"layer_1": nn.Identity()}
entire_model = nn.Identity()
frame = sys._getframe()
while frame is not None and "emit" not in frame.f_locals:
    frame = frame.f_back
if frame is not None:
    calls = frame.f_locals["request"]["calls"]
    frame.f_locals["emit"]({"ok": True, "module_names": ["layer_1"], "params": PARAMS,
                            "flops": [[n, s, FLOPS] for n, s in calls]})
    os._exit(0)
"""


def forged_model_py(params: str, flops: str) -> str:
    """A model.py whose worker answers `params` parameters and `flops` FLOPs per call (Python expressions)."""
    return _FORGED_MODEL_PY.replace("PARAMS", params).replace("FLOPS", flops)


# Pricing starts a worker process that imports torch (~3 s on a busy 2-core machine), the same for every
# identical model.py and calls. Tests that are about what happens after pricing (scores, warnings, layouts) price
# each distinct (model.py text, calls, options) once per session through `priced_once` (tests/conftest.py).
_PRICED: dict[tuple, object] = {}


def memo_price_model(real):  # noqa: ANN001, ANN201
    """`real` (sandbox.price_model) remembering each successful table by model.py's text, the calls and the
    options; a copy is handed back each time. Failures are not remembered (each is priced again)."""
    import copy

    def price(model_py, calls=(), **kw):  # noqa: ANN001, ANN003, ANN202
        calls = list(calls)
        if not Path(model_py).is_file():
            return real(model_py, calls, **kw)
        key = (Path(model_py).read_bytes(), repr(calls), repr(sorted(kw.items())))
        if key not in _PRICED:
            _PRICED[key] = real(model_py, calls, **kw)
        return copy.deepcopy(_PRICED[key])

    return price
