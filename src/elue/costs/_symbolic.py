"""MACs as a formula of the input shape: one symbolic run instead of one run per shape.

The module is run once on fake tensors whose sizes are symbols (torch's `ShapeEnv`, the machinery
behind `torch.compile`'s dynamic shapes), under the same counter as `flops.count_macs`. The sum of
MACs comes out as an expression in the input sizes, e.g. `1560*s0**2 + 7080960*s0` for a BERT-base
layer, and the ShapeEnv records every decision the code took on a size (`if n > 512`, `int(n)`, a
slice bound) as a guard. The formula is used for another shape only where every guard and every
size range holds for that shape; anywhere else the shape is counted concretely. It is also checked
against the concrete counts already made before it is trusted (see ModuleFlops).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Any

import sympy
import torch
from torch import nn

Shape = tuple[int, ...]


class Formula:
    """MACs(shape) for the shapes where the symbolic run's guards hold; None elsewhere."""

    def __init__(self, expr, dims: list, guards: list, ranges: dict):
        self.rank = len(dims)
        self.dims = dims  # per input dim: a sympy Symbol, or an int for a dim fixed in the run
        self.syms = [d for d in dims if isinstance(d, sympy.Symbol)]
        self.ranges = ranges  # symbol -> (lower, upper)
        self._expr = expr
        self._guards = guards
        self._fast = _lambdify(self.syms, [expr, *guards])

    @property
    def shareable(self) -> bool:
        """No guard constrains a free size, only dims pinned to one value (a BERT layer's hidden size, fixed by
        its weights): a guard on a free size may come from an integer attribute (`if n > self.k`), which
        modules of the same signature need not share."""
        pinned = {s for s, (lo, hi) in self.ranges.items() if lo == hi}
        return all(g.free_symbols <= pinned for g in self._guards)

    def __call__(self, shape: Shape) -> int | None:
        if len(shape) != self.rank:
            return None
        values = []
        for d, v in zip(self.dims, shape, strict=True):
            if isinstance(d, sympy.Symbol):
                lo, hi = self.ranges[d]
                if not lo <= v <= hi:
                    return None
                values.append(v)
            elif d != v:
                return None
        if self._fast is not None:
            try:
                out = self._fast(*values)
                if all(bool(g) for g in out[1:]):
                    return int(out[0])
                return None
            except Exception:  # noqa: BLE001 - fall back to sympy substitution
                pass
        sub = {s: sympy.Integer(v) for s, v in zip(self.syms, values, strict=True)}
        for g in self._guards:
            r = g.xreplace(sub)
            if r.free_symbols or not bool(r):
                return None
        r = self._expr.xreplace(sub)
        return None if r.free_symbols else int(r)


def _lambdify(syms, exprs):
    try:
        names = {
            "FloorDiv": lambda a, b: a // b,
            "CleanDiv": lambda a, b: a // b,
            "IntTrueDiv": lambda a, b: a / b,
            "Mod": lambda a, b: a % b,
            "PythonMod": lambda a, b: a % b,
            "Max": max,
            "Min": min,
            "Eq": lambda a, b: a == b,
            "Ne": lambda a, b: a != b,
        }
        return sympy.lambdify(syms, exprs, modules=[names, "math"])
    except Exception:  # noqa: BLE001
        return None


def _bound(x, default: float) -> float:
    try:
        if x in (sympy.oo, -sympy.oo) or not x.is_finite:
            return default
        return int(x)
    except Exception:  # noqa: BLE001
        return default


@contextmanager
def _quiet_fake_tensors():
    """torch logs an op that fails on fake tensors (`F.pad` with a symbolic size: 'failed while attempting to
    run meta for aten.constant_pad_nd', a 15-line traceback) before it raises; the caller falls back to
    concrete counts, so nothing failed for the user, who saw the traceback on stderr."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def symbolic_macs(module: nn.Module, shape: Shape, dtype: torch.dtype) -> Formula:
    """Run `module` once on a zeros-like input of `shape` (batch 1) with symbolic sizes; raise on any
    difficulty (the caller then counts concretely)."""
    with _quiet_fake_tensors():
        return _symbolic_macs(module, shape, dtype)


def _symbolic_macs(module: nn.Module, shape: Shape, dtype: torch.dtype) -> Formula:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    from elue.costs.flops import _AttentionPricer, _Counter, _PreserveAttributes

    env = ShapeEnv(duck_shape=False)  # no silent "equal sizes share a symbol"
    mode = FakeTensorMode(shape_env=env)
    # inputs live where the parameters do when those are meta (a model.py built under
    # `torch.device("meta")`): the fake input must not mix devices with them
    meta = any(t.device.type == "meta" for t in module.parameters())
    example = torch.zeros((1, *shape), dtype=dtype, device="meta" if meta else "cpu")
    ctx = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.STATIC] + [DimDynamic.DYNAMIC] * len(shape))
    x = mode.from_tensor(example, symbolic_context=ctx)
    state: dict[str, Any] = {}
    seen: dict[int, Any] = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    ):
        f = seen.get(id(t))
        if f is None:
            f = seen[id(t)] = mode.from_tensor(t, static_shapes=True)
        state[name] = f
    counter = _Counter(params=state.values(), fast_meta=False)
    with torch.no_grad(), _PreserveAttributes(module), mode, _AttentionPricer(counter), counter:
        torch.func.functional_call(module, state, (x,), tie_weights=False, strict=False)
    macs = counter.macs
    expr = macs.node._expr if isinstance(macs, torch.SymInt) else sympy.Integer(int(macs))
    dims = []
    for d in x.shape[1:]:
        dims.append(d.node._expr if isinstance(d, torch.SymInt) else int(d))
    if getattr(env, "deferred_runtime_asserts", None) and any(env.deferred_runtime_asserts.values()):
        raise RuntimeError("data-dependent sizes")
    syms = {d for d in dims if isinstance(d, sympy.Symbol)}
    guards = [g.expr for g in env.guards]
    ranges = {}
    for s in syms:
        vr = env.var_to_range.get(s)
        ranges[s] = (_bound(vr.lower, -math.inf), _bound(vr.upper, math.inf)) if vr else (2, math.inf)
    for e in [expr, *guards]:
        if not e.free_symbols <= syms:
            raise RuntimeError("the MACs depend on sizes other than the input's")
    formula = Formula(expr, dims, guards, ranges)
    if formula(shape) is None:
        raise RuntimeError("the formula does not hold at its own example")
    return formula


_SKIP = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_state_dict_hooks"}
_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _value_key(v: Any, depth: int = 0) -> Any:
    if v is None or isinstance(v, (bool, str, float, torch.dtype, torch.device)):
        return (type(v).__name__, v)
    if isinstance(v, int):
        return ("int",)  # integers (layer indices, ...) may differ
    if isinstance(v, (tuple, list)) and depth < 3:
        return (type(v).__name__, tuple(_value_key(x, depth + 1) for x in v))
    if isinstance(v, dict) and depth < 3 and all(isinstance(k, (str, int, float, bool)) for k in v):
        return ("dict", tuple(sorted((repr(k), _value_key(x, depth + 1)) for k, x in v.items())))
    to_dict = getattr(v, "to_dict", None)
    if callable(to_dict) and depth < 1:  # configuration objects
        try:
            return (type(v).__qualname__, _value_key(to_dict(), depth + 1))
        except Exception:  # noqa: BLE001
            pass
    if callable(v) and hasattr(v, "__qualname__") and not hasattr(v, "__self__"):
        if getattr(v, "__closure__", None):
            return ("object", id(v))
        return ("function", getattr(v, "__module__", ""), v.__qualname__)
    return ("object", id(v))  # unknown: equal only to itself


def signature(module: nn.Module) -> Any:
    """What a symbolic run depends on, apart from integer attributes; None if it cannot be told."""
    parts = []
    try:
        for path, sub in module.named_modules(remove_duplicate=False):
            attrs = vars(sub)
            if any(attrs.get(h) for h in _HOOKS):
                return None
            items = []
            for k in sorted(attrs):
                if k in _SKIP or k in _HOOKS:
                    continue
                items.append((k, _value_key(attrs[k])))
            params = tuple(
                (k, tuple(p.shape), p.dtype) if p is not None else (k, None)
                for k, p in sub._parameters.items()
            )
            buffers = tuple(
                (k, tuple(b.shape), b.dtype) if b is not None else (k, None) for k, b in sub._buffers.items()
            )
            parts.append((path, type(sub).__module__, type(sub).__qualname__, tuple(items), params, buffers))
        out = tuple(parts)
        hash(out)
        return out
    except Exception:  # noqa: BLE001
        return None
