"""The model.py sandbox: a good model is priced; broken and hostile ones give one clear SandboxError.

Sandbox launches are kept few: most broken/hostile models fail before importing torch (fast).
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest
from toolkit_fixtures import forged_model_py

import elue
from elue.costs import _worker, sandbox
from elue.costs.params import count_params
from elue.costs.sandbox import (
    CostTable,
    SandboxError,
    SandboxLimits,
    SandboxUnavailable,
    price_model,
)

BWRAP_OK, BWRAP_WHY = sandbox.bwrap_available()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bwrap not usable: {BWRAP_WHY}")

H, HEADS, FFN, VOCAB, EXPERTS = 32, 4, 64, 50, 4

GOOD = textwrap.dedent(
    f"""
    import torch
    from torch import nn
    from torch.nn import functional as F

    print('{{"ok": true, "module_names": [], "params": 1, "flops": []}}')  # must not fool the parent
    H, HEADS, FFN, VOCAB, EXPERTS = {H}, {HEADS}, {FFN}, {VOCAB}, {EXPERTS}

    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(VOCAB, H)
            self.pos = nn.Embedding(512, H)
            self.norm = nn.LayerNorm(H)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)
            return self.norm(self.word(ids) + self.pos(pos))

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(H, 3 * H)
            self.out = nn.Linear(H, H)
            self.norm = nn.LayerNorm(H)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, HEADS, H // HEADS).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v)
            return self.norm(x + self.out(ctx.transpose(1, 2).reshape(b, n, H)))

    def ffn():
        return nn.Sequential(nn.Linear(H, FFN), nn.GELU(), nn.Linear(FFN, H))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attn()
            self.ffn = ffn()
            self.norm = nn.LayerNorm(H)

        def forward(self, x):
            x = self.attn(x)
            return self.norm(x + self.ffn(x))

    class Exit(nn.Module):
        def __init__(self):
            super().__init__()
            self.pooler = nn.Linear(H, H)
            self.classifier = nn.Linear(H, 2)

        def forward(self, cls):
            return self.classifier(torch.tanh(self.pooler(cls)))

    emb = Emb()
    layers = [Layer() for _ in range(2)]
    exits = [Exit() for _ in range(2)]
    router = nn.Linear(H, EXPERTS, bias=False)
    experts = [ffn() for _ in range(EXPERTS)]
    attn_moe = Attn()

    module_list = {{"emb": emb, "exit_1": exits[0], "exit_2": exits[1], "router_1": router,
                    "attn_moe": attn_moe}}
    module_list.update({{f"layer_{{i + 1}}": m for i, m in enumerate(layers)}})
    module_list.update({{f"expert_{{i}}": m for i, m in enumerate(experts)}})
    entire_model = nn.ModuleList([emb, *layers, *exits, router, attn_moe, *experts])
    """
)


def layer_macs(n):
    d = H // HEADS
    return 4 * H * H * n + HEADS * (2 * n * n * d + 2 * n * n) + 2 * 2 * H * n + 2 * H * FFN * n


def write(tmp_path: Path, source: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


@needs_bwrap
def test_good_model_in_sandbox(tmp_path):
    model = write(tmp_path, GOOD)
    # token-level early exit and a mixture of experts, as test files would list them
    calls = [
        ("emb", (10,)),
        ("layer_1", (10, H)),
        ("exit_1", (H,)),
        ("layer_2", (6, H)),
        ("exit_2", (H,)),
        ("attn_moe", (10, H)),
        ("router_1", (10, H)),
        ("expert_2", (3, H)),
        ("expert_0", (7, H)),
        ("layer_1", (10, H)),  # repeated: priced once
    ]
    seen = []
    table = price_model(model, calls, progress=lambda done, total: seen.append((done, total)))
    assert isinstance(table, CostTable)
    assert table.module_names[:3] == ["emb", "exit_1", "exit_2"]
    assert "expert_3" in table.module_names
    ns: dict = {}
    exec(compile(GOOD, "model.py", "exec"), ns)
    assert table.params == count_params(ns["entire_model"])
    f = table.flops
    assert len(f) == 9
    assert f[("emb", (10,))] == 2 * (2 * H * 10)
    assert f[("layer_1", (10, H))] == 2 * layer_macs(10)
    assert f[("layer_2", (6, H))] == 2 * layer_macs(6)
    assert f[("exit_1", (H,))] == 2 * (H * H + H * 2)
    assert f[("router_1", (10, H))] == 2 * (10 * H * EXPERTS)
    assert f[("expert_2", (3, H))] == 2 * (2 * H * FFN * 3)
    assert f[("expert_0", (7, H))] == 2 * (2 * H * FFN * 7)
    # an example's cost is the sum over its calls
    token_exit = f[("layer_1", (10, H))] + f[("layer_2", (6, H))]
    assert token_exit == 2 * (layer_macs(10) + layer_macs(6))
    assert seen and seen[-1] == (9, 9)


def test_missing_bwrap_needs_trust(tmp_path, monkeypatch):
    model = write(tmp_path, GOOD)
    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*trust-model-code"):
        price_model(model, [("exit_1", (H,))])
    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: "/bin/false")  # installed but unusable
    with pytest.raises(SandboxUnavailable, match="unusable"):
        price_model(model)
    table = price_model(model, trust_model_code=True)  # no calls: names and params only
    assert "layer_2" in table.module_names and table.params > 0 and table.flops == {}


# ---------------------------------------------------------------------------------------------------
# broken model.py: one clear message each (these fail before torch is imported: cheap launches)

BROKEN = {
    "syntax": ("import torch\nmodule_list = {\n  'a': 1,,\n}\n", r"syntax error at line 3"),
    "import": (
        "def helper():\n    raise ValueError('no config here')\nhelper()\n",
        r"(?s)raised ValueError: no config here while being imported\n.*model.py, line 2, in helper",
    ),
    "names": ("x = 1\n", r"must define .*missing: module_list, entire_model"),
    "not_dict": ("module_list = [1, 2]\nentire_model = None\n", r"module_list must be a dict.*not list"),
    "memory": ("blob = bytearray(1 << 40)\n", r"ran out of memory"),
    "exit": ("raise SystemExit(3)\n", r"raised SystemExit"),
    "empty": ("module_list = {}\nentire_model = None\n", r"module_list is empty"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_model_one_clear_error(tmp_path, case):
    source, pattern = BROKEN[case]
    model = write(tmp_path, source)
    with pytest.raises(SandboxError, match=pattern) as info:
        price_model(model, trust_model_code=not BWRAP_OK)
    assert "Traceback (most recent call last)" not in str(info.value)


@needs_bwrap
def test_missing_module_names_listed(tmp_path):
    model = write(tmp_path, GOOD)
    with pytest.raises(SandboxError, match=r"not in model.py's module_list: layer_3, pooler; available: "):
        price_model(model, [("layer_1", (4, H)), ("layer_3", (4, H)), ("pooler", (H,))])


def test_module_failing_at_shape_message(tmp_path):
    """Same worker code, run in-process (cheap): a module that cannot take the shape."""
    model = write(tmp_path, GOOD)
    with pytest.raises(
        _worker._Fail,
        match=r"module 'layer_1' fails at input shape \(4,7\), with float32 zeros of shape \(1, 4, 7\): "
        r"RuntimeError: ",
    ):
        _worker.run({"model_py": str(model), "calls": [["layer_1", [4, 7]]]}, lambda obj: None)


def test_missing_module_names_in_the_files_order_and_available_in_model_pys(tmp_path):
    """`elue flops` / scoring listed the available names sorted as text (exit_1, exit_10, exit_11, ..., exit_2):
    model.py's own order reads layer by layer; the missing ones come in the test file's order."""
    source = "from torch import nn\nmodule_list = nn.ModuleDict({f'exit_{i}': nn.Linear(2, 2) for i in range(1, 12)})\nentire_model = module_list\n"
    model = write(tmp_path, source)
    calls = [["exit_12", [2]], ["exit_1", [2]], ["emb", [3]], ["exit_12", [3]]]
    with pytest.raises(_worker._Fail) as info:
        _worker.run({"model_py": str(model), "calls": calls}, lambda obj: None)
    names = ", ".join(f"exit_{i}" for i in range(1, 12))
    assert (
        str(info.value) == f"module name(s) not in model.py's module_list: exit_12, emb; available: {names}"
    )


@pytest.mark.parametrize(
    "head, encoding",
    [(b"\xef\xbb\xbf", "utf-8"), (b"# -*- coding: latin-1 -*-\n", "latin-1")],
    ids=["utf-8 BOM", "coding cookie"],
)
def test_model_py_is_read_as_python_reads_source(tmp_path, head, encoding):
    """A BOM (an editor's UTF-8) or a PEP 263 coding line: Python runs such a file; it was refused (a syntax
    error at U+FEFF, or 'cannot read' for the latin-1 bytes)."""
    model = tmp_path / "model.py"
    source = "# caf\u00e9\nfrom torch import nn\nmodule_list = {'a': nn.Linear(2, 3)}\nentire_model = module_list['a']\n"
    model.write_bytes(head + source.encode(encoding))
    result = _worker.run({"model_py": str(model), "calls": [["a", [2]]]}, lambda obj: None)
    assert result["params"] == 9 and result["flops"] == [["a", [2], 12]]


@pytest.mark.parametrize(
    "entire, expected",
    [
        ("inner", 2 * 42),  # a layer kept in a plain list: its 42 parameters are not in entire_model
        ("Whole(3)", 3 * 42),  # another instance holding all three layers: as many, not more
    ],
)
def test_worker_counts_module_list_parameters_for_the_warning(tmp_path, entire, expected):
    """The worker also counts module_list's own parameters (each shared tensor once), so `elue validate`
    can say when they are more than entire_model's: a layer left out of the parameter count."""
    model = write(
        tmp_path,
        f"""
        from torch import nn

        class Whole(nn.Module):
            def __init__(self, n):
                super().__init__()
                self.layers = nn.ModuleList(nn.Linear(6, 6) for _ in range(n))
                self.extra = [nn.Linear(6, 6)]  # a plain list: not a submodule

        inner = Whole(2)
        module_list = {{"layer_1": inner.layers[0], "layer_2": inner.layers[1], "layer_3": inner.extra[0],
                       "tied": inner.layers[0]}}
        entire_model = {entire}
        """,
    )
    result = _worker.run({"model_py": str(model), "calls": [["layer_1", [6]]]}, lambda obj: None)
    assert result["module_list_params"] == 3 * 42
    assert result["params"] == expected


@pytest.mark.parametrize("sent, kept", [(126, 126), (-1, None), ("126", None), (1.5, None), (10**61, None)])
def test_module_list_count_from_the_worker_is_plain_or_dropped(sent, kept):
    """The count is untrusted and only feeds a warning: anything but a plain count is dropped, not an error."""
    assert sandbox._plain_count(sent) == kept


def test_model_py_that_python_cannot_decode_is_one_clear_error(tmp_path):
    model = tmp_path / "model.py"
    model.write_bytes(b"x = 1\n# caf\xe9\n")
    with pytest.raises(_worker._Fail, match=r"^model.py is not valid UTF-8 .*line 2"):
        _worker.run({"model_py": str(model)}, lambda obj: None)


def test_module_list_entries_must_be_modules(tmp_path):
    model = write(
        tmp_path,
        "from torch import nn\nmodule_list = {'a': nn.Linear(2, 2), 'b': 3}\nentire_model = nn.Linear(2, 2)\n",
    )
    with pytest.raises(_worker._Fail, match=r"bad entries: 'b' \(int\)"):
        _worker.run({"model_py": str(model)}, lambda obj: None)
    model = write(
        tmp_path, "from torch import nn\nmodule_list = {'a': nn.Linear(2, 2)}\nentire_model = [1]\n"
    )
    with pytest.raises(_worker._Fail, match=r"entire_model must be an nn.Module, not list"):
        _worker.run({"model_py": str(model)}, lambda obj: None)


def test_model_dummy_input_is_used(tmp_path):
    model = write(
        tmp_path,
        """
        import torch
        from torch import nn

        class TwoInputs(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(20, 8)
                self.lin = nn.Linear(8, 4)

            def forward(self, ids, scale):
                return self.lin(self.emb(ids) * scale)

        module_list = {"two": TwoInputs()}
        entire_model = module_list["two"]

        def dummy_input(name, shape):
            return (torch.zeros((1, *shape), dtype=torch.long), torch.ones(1, shape[0], 1))
        """,
    )
    out = _worker.run({"model_py": str(model), "calls": [["two", [5]]]}, lambda obj: None)
    assert out["ok"] and out["flops"] == [["two", [5], 2 * 5 * 8 * 4]]
    assert out["params"] == 20 * 8 + 8 * 4 + 4


# ---------------------------------------------------------------------------------------------------
# hostile model.py


@needs_bwrap
def test_hostile_socket_blocked(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    model = write(
        tmp_path,
        f"""
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"stolen")
        """,
    )
    try:
        with pytest.raises(SandboxError, match=r"raised (ConnectionRefusedError|OSError)"):
            price_model(model)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody reached the host's loopback
    finally:
        server.close()


@needs_bwrap
def test_hostile_write_outside_scratch(tmp_path):
    target = tmp_path / "pwned" / "x.txt"
    in_src = Path(elue.__file__).resolve().parent / "pwned_by_model.txt"
    model = write(
        tmp_path,
        f"""
        import os
        results = []
        for path in [{str(target)!r}, {str(in_src)!r}, "/sandbox/model.py"]:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "a") as fh:
                    fh.write("pwned")
                results.append("wrote")
            except OSError as exc:
                results.append(type(exc).__name__)
        raise RuntimeError("attempts " + " ".join(results))
        """,
    )
    try:
        with pytest.raises(
            SandboxError, match=r"RuntimeError: attempts wrote OSError (OSError|PermissionError)"
        ):
            price_model(model)
        assert not target.exists() and not target.parent.exists()
        assert not in_src.exists()
        assert "pwned" not in model.read_text().split("raise")[-1]
    finally:
        in_src.unlink(missing_ok=True)


@needs_bwrap
def test_hostile_read_answer_key(tmp_path):
    secret = tmp_path / "secret" / "test_labels.tsv"
    secret.parent.mkdir()
    secret.write_text("index\tlabel\n0\t1\n")
    model = write(
        tmp_path,
        f"""
        import os
        visible = [p for p in ["/work/shared", "/work/main/tests", "/work/main/docs", {str(tmp_path)!r}]
                   if os.path.exists(p)]
        assert not visible, f"visible: {{visible}}"
        print(open({str(secret)!r}).read())
        """,
    )
    with pytest.raises(SandboxError, match=r"raised FileNotFoundError") as info:
        price_model(model)
    assert "label" not in str(info.value).split("FileNotFoundError")[-1].split("\n")[0].replace(
        "test_labels", ""
    )


@needs_bwrap
def test_hostile_infinite_loop_cpu_limit(tmp_path):
    model = write(tmp_path, "while True:\n    pass\n")
    with pytest.raises(SandboxError, match=r"CPU time limit \(1 s\)"):
        price_model(model, limits=SandboxLimits(cpu_s=1, wall_s=60))


def test_hostile_sleep_wall_limit(tmp_path):
    model = write(tmp_path, "import time\ntime.sleep(600)\n")
    with pytest.raises(SandboxError, match=r"timed out.*wall-clock limit of 1.5 s"):
        price_model(model, limits=SandboxLimits(wall_s=1.5), trust_model_code=not BWRAP_OK)


def test_forged_negative_costs_are_refused(tmp_path):
    # model.py runs in the worker's process, so it can reach the result channel (here: up the stack to
    # the function that writes it). The numbers cannot be made tamper-proof (docs/costs.md), but ones no
    # honest count gives are refused rather than published.
    model = write(tmp_path, forged_model_py("-5", "1"))
    with pytest.raises(SandboxError, match=r"impossible \(negative or too large\) costs: -5 parameters"):
        price_model(model, [("layer_1", (4, 8))], trust_model_code=True)
    model.write_text(model.read_text().replace('"params": -5', '"params": 5').replace("s, 1]", "s, -10]"))
    with pytest.raises(SandboxError, match="-10 FLOPs for 'layer_1'"):
        price_model(model, [("layer_1", (4, 8))], trust_model_code=True)


def test_forged_result_lacking_a_call_is_refused(tmp_path):
    # a result channel answer that prices only the first of the two calls asked for
    source = forged_model_py("5", "10").replace("for n, s in calls]", "for n, s in calls[:1]]")
    assert "calls[:1]" in source
    model = write(tmp_path, source)
    with pytest.raises(SandboxError, match=r"returned no FLOPs for 1 call\(s\)"):
        price_model(model, [("layer_1", (4, 8)), ("layer_1", (5, 8))], trust_model_code=True)
    assert price_model(model, [("layer_1", (4, 8))], trust_model_code=True).flops == {("layer_1", (4, 8)): 10}


@pytest.mark.parametrize(
    ("params", "flops", "message"),
    [
        ("5", "10**400", "impossible .* costs: 401-digit number FLOPs for 'layer_1'"),
        ("10**70", "1", "impossible .* costs: 71-digit number parameters"),
        ("5", "float('inf')", "malformed result"),
    ],
)
def test_forged_huge_costs_are_refused_with_a_message(tmp_path, params, flops, message):
    # a model.py reaching the result channel with 10**400 FLOPs: the float sums of the scores overflowed
    # (OverflowError traceback from `elue evaluate`); Infinity gave one from int()
    model = write(tmp_path, forged_model_py(params, flops))
    with pytest.raises(SandboxError, match=message):
        price_model(model, [("layer_1", (4, 8))], trust_model_code=True)
