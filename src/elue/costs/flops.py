"""MACs and FLOPs of one module call under the ELUE convention (spec §3; rules in docs/costs.md).

The counter is a `TorchDispatchMode` that prices ATen operations by their shapes, plus a thin
`TorchFunctionMode` that prices `F.scaled_dot_product_attention` as a whole. By default the call runs
on the `meta` device (no data, no arithmetic): parameters and buffers are swapped for meta tensors with
`torch.func.functional_call`, so the caller's module is not touched. A module that cannot run on meta
(it builds CPU tensors inside `forward`, calls `.item()`, ...) is run again on real CPU zeros.

Rules, in MACs (FLOPs = 2 × MACs):
- products (mm, addmm, bmm, baddbmm, matmul, linear, mv, dot, convolution, bilinear, an LSTM layer):
  multiply-accumulates of the product; bias adds are free;
- attention (any implementation): per head, L queries, S keys, head size E (values Ev):
  L·S·E (QKᵀ) + L·S·Ev (softmax·V) + L·S (scaling) + L·S (softmax);
- softmax / log-softmax: 1 per element, also written out as exp(scores - max) / sum; LayerNorm / batch norm / group norm / RMS norm: 2 per element,
  also written out as x * rsqrt(mean(x²) + eps) (Llama's, T5's RMSNorm) or with sqrt, torch.var or torch.std;
- a multiplication or division by a scalar costs 1 per element of an attention score tensor (the
  product of two activations (a weight split, sliced, concatenated or scaled is no activation), also
  after a mask or another score was added to it, or scaled by the
  product itself as baddbmm's alpha); a scalar applied to an operand *before* such a product (Q/√d)
  is charged as 1 per element of the product's output, once per product, so "scale Q", "scale K and
  Q" and "scale the scores" all cost L·S;
- everything else (embedding lookups, activations, dropout, residual and mask adds, reshapes): 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

Shape = tuple[int, ...]

aten = torch.ops.aten

__all__ = [
    "FlopCountError",
    "ModuleFlops",
    "count_macs",
    "default_dummy_input",
    "module_flops",
]


class FlopCountError(RuntimeError):
    """A module could not be run at the requested input (the message says which and why)."""


def _prod(xs: Iterable[int]) -> int:
    return math.prod(xs)  # no int(): sizes may be symbolic


def _packet(*names: str) -> set:
    out = set()
    for n in names:
        op = getattr(aten, n, None)
        if op is not None:
            out.add(op)
    return out


# ---------------------------------------------------------------------------------------------------
# pricing of single ATen ops


def _mm(a: torch.Tensor, b: torch.Tensor) -> int:  # (n,k) @ (k,m)
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(a: torch.Tensor, b: torch.Tensor) -> int:  # (B,n,k) @ (B,k,m)
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _matmul(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.dim() == 1 and b.dim() == 1:
        return a.shape[0]
    a_shape = (1, *a.shape) if a.dim() == 1 else tuple(a.shape)
    b_shape = (*b.shape, 1) if b.dim() == 1 else tuple(b.shape)
    batch = torch.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    return _prod(batch) * a_shape[-2] * a_shape[-1] * b_shape[-1]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads_first: bool = True) -> int:
    """Attention MACs by the convention, q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    if not heads_first:  # (B, L, H, E) layout of the low-level flash/efficient kernels
        q, k, v = q.transpose(-2, -3), k.transpose(-2, -3), v.transpose(-2, -3)
    batch_heads = _prod(q.shape[:-2])
    length, e = q.shape[-2], q.shape[-1]
    s, ev = k.shape[-2], v.shape[-1]
    return batch_heads * (length * s * e + length * s * ev + 2 * length * s)


_PRODUCTS_2D = _packet("mm", "addmm", "_addmm_activation")
_PRODUCTS_3D = _packet("bmm", "baddbmm", "addbmm")
_NORMS = _packet(
    "native_layer_norm",
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "native_group_norm",
    "_fused_rms_norm",
    "rms_norm",
    "layer_norm",
    "group_norm",
    "batch_norm",
)
_SOFTMAX = _packet("_softmax", "_safe_softmax", "_log_softmax", "softmax", "log_softmax")
_SCALE = _packet("mul", "div", "mul_", "div_")
_EXP = _packet("exp", "exp_")
_MASKING = _packet("add", "sub", "add_", "sub_", "where", "masked_fill", "masked_fill_")
_FUSED_ATTN = _packet(
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "scaled_dot_product_attention",
)
_FUSED_ATTN_BLHE = _packet("_flash_attention_forward", "_efficient_attention_forward")
_CONV = _packet(
    "convolution",
    "_convolution",
    "conv1d",
    "conv2d",
    "conv3d",
    "mkldnn_convolution",
    "cudnn_convolution",
    "_slow_conv2d_forward",
)
# ops whose output is the same data seen differently: tags (parameter / score / pre-scaled) flow through
_VIEWS = _packet(
    "view",
    "_unsafe_view",
    "reshape",
    "_reshape_alias",
    "transpose",
    "permute",
    "expand",
    "t",
    "unsqueeze",
    "squeeze",
    "clone",
    "contiguous",
    "alias",
    "detach",
    "_to_copy",
    "to",
    "lift_fresh",
    "as_strided",
    "unflatten",
    "flatten",
    "movedim",
    "swapaxes",
    "transpose_",
    # parts of a tensor: a packed QKV weight split in three (nn.MultiheadAttention with query not key) is
    # still a weight, and a slice of the scores still scores
    "slice",
    "select",
    "narrow",
    "split",
    "split_with_sizes",
    "unsafe_split",
    "unbind",
    "chunk",
    "tensor_split",
)
_ROOTS = _packet("rsqrt", "sqrt")
# a norm's statistics from one op: var (then a root, as mean(x²) above) and std (the root included)
_VARIANCE = _packet("var", "var_mean")
_STD = _packet("std", "std_mean")


def _is_two(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 2


def _is_norm_stat(tag: Any, kind: str) -> bool:
    """Tags of a hand-written norm's statistics: ("square", n) for x², ("meansq", n) for mean(x²)."""
    return isinstance(tag, tuple) and tag[0] == kind


_MKLDNN_RNN_LAYER = getattr(aten, "mkldnn_rnn_layer", None)
# ops that build a weight from weights (QKV weights concatenated, torch's weight norm): still a weight
_FROM_PARAMS = _packet("cat", "stack", "_weight_norm", "_weight_norm_interface")


def _is_scalar(x: Any) -> bool:
    # a size-derived scale (`q.size(-1) ** -0.5`) is a SymFloat in a symbolic run: a scalar all the same (taken
    # for none, the scaling went uncharged there, the formula disagreed with the concrete counts and every shape
    # of such a module was counted concretely)
    if isinstance(x, (int, float, torch.SymInt, torch.SymFloat)) and not isinstance(x, bool):
        return True
    return isinstance(x, torch.Tensor) and x.numel() == 1


# fast output shapes on meta for the ops whose meta kernels are slow Python decompositions
def _meta_out(func, args, kwargs):  # noqa: C901
    p = func.overloadpacket
    # only well-formed calls take the fast path; anything odd goes to the genuine meta kernel,
    # which raises the same errors a real run would
    if p in (aten.mm, aten.addmm):
        a, b = (args[0], args[1]) if p is aten.mm else (args[1], args[2])
        if a.dim() == 2 and b.dim() == 2 and a.shape[1] == b.shape[0] and a.dtype == b.dtype:
            out = (a.shape[0], b.shape[1])
            if p is aten.addmm and not _broadcasts(args[0], out, a.dtype):
                return None
            return torch.empty(out, dtype=a.dtype, device="meta")
    elif p in (aten.bmm, aten.baddbmm):
        a, b = (args[0], args[1]) if p is aten.bmm else (args[1], args[2])
        if (
            a.dim() == 3
            and b.dim() == 3
            and a.shape[0] == b.shape[0]
            and a.shape[2] == b.shape[1]
            and a.dtype == b.dtype
        ):
            out = (a.shape[0], a.shape[1], b.shape[2])
            if p is aten.baddbmm and not _broadcasts(args[0], out, a.dtype):
                return None
            return torch.empty(out, dtype=a.dtype, device="meta")
    elif p is aten.native_layer_norm and func is aten.native_layer_norm.default:
        x, normalized = args[0], tuple(args[1])
        k = len(normalized)
        if k == 0 or tuple(x.shape[x.dim() - k :]) != normalized:
            return None
        for t in args[2:4]:
            if t is not None and (tuple(t.shape) != normalized or t.dtype != x.dtype):
                return None
        stat_shape = tuple(x.shape[: x.dim() - len(normalized)]) + (1,) * len(normalized)
        stat_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        return (
            torch.empty(x.shape, dtype=x.dtype, device="meta"),
            torch.empty(stat_shape, dtype=stat_dtype, device="meta"),
            torch.empty(stat_shape, dtype=stat_dtype, device="meta"),
        )
    elif p is aten._softmax:
        x, half_to_float = args[0], args[2]
        dtype = torch.float32 if half_to_float else x.dtype
        return torch.empty(x.shape, dtype=dtype, device="meta")
    elif p is getattr(aten, "_safe_softmax", None):
        x = args[0]
        dtype = kwargs.get("dtype") or (args[2] if len(args) > 2 else None) or x.dtype
        return torch.empty(x.shape, dtype=dtype, device="meta")
    elif p is aten.embedding:
        w, idx = args[0], args[1]
        if w.is_contiguous() and w.dim() == 2 and idx.dtype in (torch.int64, torch.int32):
            return torch.empty((*idx.shape, *w.shape[1:]), dtype=w.dtype, device="meta")
    elif p in _POINTWISE and not kwargs:
        return _pointwise_out(args)
    return None


def _broadcasts(bias: object, out: tuple, dtype: torch.dtype) -> bool:
    if not isinstance(bias, torch.Tensor) or bias.dtype != dtype or bias.dim() > len(out):
        return False
    return all(b in (1, o) for b, o in zip(reversed(bias.shape), reversed(out), strict=False))


def _pointwise_out(args):
    """Output of a float elementwise op on contiguous meta tensors: the broadcast shape, same dtype."""
    shapes = []
    dtype = None
    for a in args:
        if isinstance(a, torch.Tensor):
            if not a.dtype.is_floating_point or (dtype is not None and a.dtype != dtype):
                return None
            if not a.is_contiguous():
                return None
            dtype = a.dtype
            shapes.append(a.shape)
        elif not isinstance(a, (int, float)):
            return None
    if dtype is None:
        return None
    return torch.empty(torch.broadcast_shapes(*shapes), dtype=dtype, device="meta")


class _Counter(TorchDispatchMode):
    """Sums MACs of the ATen ops that run under it."""

    def __init__(self, params: Iterable[torch.Tensor] = (), fast_meta: bool = True):
        super().__init__()
        self.macs = 0
        self.suspended = 0  # > 0 while a whole attention call is being priced at function level
        self.fast_meta = fast_meta
        # id -> (tensor, tag); tensors are kept alive for the duration so ids cannot be reused
        self._tags: dict[int, tuple[torch.Tensor, Any]] = {}
        for p in params:
            self._tags[id(p)] = (p, "param")

    def _tag(self, t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            hit = self._tags.get(id(t))
            if hit is not None and hit[0] is t:
                return hit[1]
        return None

    def _set(self, out: Any, tag: Any) -> None:
        if isinstance(out, torch.Tensor):
            self._tags[id(out)] = (out, tag)
        elif isinstance(out, (tuple, list)):  # split, unbind, chunk: every part
            for o in out:
                self._set(o, tag)

    def _product(self, a: torch.Tensor, b: torch.Tensor, out: Any, scaled: bool = False) -> None:
        """Bookkeeping for a product of a and b: activation × activation is an attention score. `scaled`: the
        product itself scales its result (baddbmm's alpha)."""
        ta, tb = self._tag(a), self._tag(b)
        if ta == "param" or tb == "param":
            if isinstance(out, torch.Tensor) and ta == "param" and tb == "param":
                self._set(out, "param")
            return
        if (ta == "prescaled" or tb == "prescaled" or scaled) and isinstance(out, torch.Tensor):
            self.macs += out.numel()  # the scaling of the scores, done on an operand or by the product
        self._set(out, "score")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        p = func.overloadpacket
        out = None
        if self.fast_meta and p in _FAST_META:
            out = _meta_out(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if self.suspended:
            return out
        if p in _VIEWS:
            tag = self._tag(args[0]) if args else None
            if tag is not None:
                self._set(out, tag)
        elif p in _PRODUCTS_2D:
            a, b = (args[0], args[1]) if p is aten.mm else (args[1], args[2])
            self.macs += _mm(a, b)
            self._product(a, b, out, scaled=kwargs.get("alpha", 1) != 1)
        elif p in _PRODUCTS_3D:
            a, b = (args[0], args[1]) if p is aten.bmm else (args[1], args[2])
            self.macs += _bmm(a, b)
            self._product(a, b, out, scaled=kwargs.get("alpha", 1) != 1)
        elif p is aten.matmul:
            self.macs += _matmul(args[0], args[1])
            self._product(args[0], args[1], out)
        elif p is aten.linear:
            self.macs += args[0].numel() * args[1].shape[0]
        elif p in (aten.mv, aten.addmv):
            a, b = (args[0], args[1]) if p is aten.mv else (args[1], args[2])
            self.macs += a.numel()
        elif p in (aten.dot, aten.vdot):
            self.macs += args[0].numel()
        elif p in _SCALE:
            self._scale(args, out)
        elif p in _MASKING:  # scores plus a mask (or plus other scores) are still scores
            if isinstance(out, torch.Tensor) and any(
                self._tag(a) == "score" and tuple(a.shape) == tuple(out.shape) for a in args
            ):
                self._set(out, "score")
            elif _is_norm_stat(self._tag(args[0]), "meansq") and len(args) > 1 and _is_scalar(args[1]):
                self._set(out, self._tag(args[0]))  # mean(x²) + eps
        elif p is aten.pow:
            # a hand-written RMSNorm (Llama's, T5's) or LayerNorm: x * rsqrt(mean(x²) + eps), charged 2 per
            # element of x like nn.RMSNorm and nn.LayerNorm (it cost 0: elementwise ops are free)
            if isinstance(args[0], torch.Tensor) and len(args) > 1 and _is_two(args[1]):
                self._set(out, ("square", args[0].numel()))
        elif p is aten.mean:
            if _is_norm_stat(self._tag(args[0]), "square"):
                self._set(out, ("meansq", self._tag(args[0])[1]))
        elif p in _VARIANCE:  # (x - mean) / sqrt(var(x) + eps): LayerNorm written with torch.var
            self._set(out, ("meansq", args[0].numel()))
        elif p in _STD:  # (x - mean) / (std(x) + eps): its root is inside the op
            self.macs += 2 * args[0].numel()
        elif p in _ROOTS:
            tag = self._tag(args[0])
            if _is_norm_stat(tag, "meansq"):
                self.macs += 2 * tag[1]
        elif p in _SOFTMAX:
            self.macs += args[0].numel()
        elif p in _EXP:
            # a softmax written out, exp(s - max) / sum (or with a 1 added to the sum): its exp of the scores is
            # charged as the softmax is, 1 per element (it cost 0: elementwise ops are free)
            if self._tag(args[0]) == "score":
                self.macs += args[0].numel()
        elif p in _NORMS:
            self.macs += 2 * args[0].numel()
        elif p in _FUSED_ATTN:
            self.macs += _attention(args[0], args[1], args[2])
        elif p in _FUSED_ATTN_BLHE:
            self.macs += _attention(args[0], args[1], args[2], heads_first=False)
        elif p in _CONV:
            self.macs += _conv(args, out)
        elif p is aten._trilinear:
            self.macs += _trilinear(args, out)
        elif p is _MKLDNN_RNN_LAYER:
            # one LSTM layer and direction as one CPU kernel (the real-tensor fallback; meta runs the gates as
            # mm ops and was priced, the CPU 0): every step multiplies by W_ih and W_hh
            x, w_ih, w_hh = args[0], args[1], args[2]
            self.macs += x.numel() // x.shape[-1] * (w_ih.numel() + w_hh.numel())
        elif p in _FROM_PARAMS:
            parts = [t for a in args for t in (a if isinstance(a, (list, tuple)) else (a,))]
            tensors = [t for t in parts if isinstance(t, torch.Tensor)]
            if tensors and all(self._tag(t) == "param" for t in tensors):
                self._set(out, "param")
        return out

    def _scale(self, args, out) -> None:
        if len(args) < 2:
            return
        a, b = args[0], args[1]
        if _is_scalar(b) and isinstance(a, torch.Tensor) and not _is_scalar(a):
            x = a
        elif _is_scalar(a) and isinstance(b, torch.Tensor) and not _is_scalar(b):
            x = b
        else:
            return
        tag = self._tag(x)
        if tag == "param":  # a scaled weight is a weight (its products are no scores)
            self._set(out, "param")
        elif tag == "score":
            self.macs += x.numel()
            self._set(out, "score")
        elif tag is None:
            self._set(out, "prescaled")


def _conv(args, out) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 and isinstance(args[6], bool) else False
    per_out = _prod(w.shape[1:])
    if transposed:  # weight (in, out/groups, *k): every input element is spread over out/groups × k
        return x.numel() * per_out
    return (out[0] if isinstance(out, tuple) else out).numel() * per_out


def _trilinear(args, out) -> int:
    """aten._trilinear (nn.Bilinear): every output element sums the products over the summed dimensions."""
    inputs, expands, sumdim = args[:3], args[3:6], args[6]
    shapes = []
    for t, dims in zip(inputs, expands, strict=True):
        shape = list(t.shape)
        for d in sorted(dims):
            shape.insert(d, 1)
        shapes.append(shape)
    return out.numel() * _prod(max(s[d] for s in shapes) for d in sumdim)


_POINTWISE = _packet(
    "add",
    "sub",
    "mul",
    "div",
    "gelu",
    "relu",
    "silu",
    "tanh",
    "sigmoid",
    "erf",
    "neg",
    "exp",
    "sqrt",
    "rsqrt",
)
_FAST_META = (
    _packet("mm", "addmm", "bmm", "baddbmm", "native_layer_norm", "_softmax", "_safe_softmax", "embedding")
    | _POINTWISE
)

_SDPA = torch.nn.functional.scaled_dot_product_attention
_RMS_NORMS = {
    f for f in (getattr(torch.nn.functional, "rms_norm", None), getattr(torch, "rms_norm", None)) if f
}


def _sdpa_well_formed(q, k, v) -> bool:
    return (
        q.dim() >= 2
        and k.dim() == q.dim()
        and v.dim() == q.dim()
        and q.shape[-1] == k.shape[-1]
        and k.shape[-2] == v.shape[-2]
        and q.dtype == k.dtype == v.dtype
    )


class _AttentionPricer(TorchFunctionMode):
    """Prices `F.scaled_dot_product_attention` as a whole, whatever kernel it dispatches to."""

    def __init__(self, counter: _Counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RMS_NORMS and not self.counter.suspended:
            # on meta and CPU torch runs RMS norm as pow/mean/rsqrt/mul (0 by the rules), on CUDA as one fused
            # op: priced here as a whole, so that every device gives the same count
            self.counter.macs += 2 * (args[0] if args else kwargs["input"]).numel()
            self.counter.suspended += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.counter.suspended -= 1
        if func is _SDPA and not self.counter.suspended:
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            v = args[2] if len(args) > 2 else kwargs["value"]
            self.counter.macs += _attention(q, k, v)
            self.counter.suspended += 1
            try:
                if q.device.type == "meta" and _sdpa_well_formed(q, k, v):
                    shape = (*q.shape[:-1], v.shape[-1])
                    return torch.empty(shape, dtype=q.dtype, device="meta")
                return func(*args, **kwargs)
            finally:
                self.counter.suspended -= 1
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------
# running a call


def _to_meta(x: Any, seen: dict[int, torch.Tensor] | None = None) -> Any:
    # one tensor given twice stays one tensor: code tests `query is key` (nn.MultiheadAttention)
    seen = {} if seen is None else seen
    if isinstance(x, torch.Tensor):
        if id(x) not in seen:
            seen[id(x)] = torch.empty(x.shape, dtype=x.dtype, device="meta")
        return seen[id(x)]
    if isinstance(x, tuple):
        return tuple(_to_meta(y, seen) for y in x)
    if isinstance(x, list):
        return [_to_meta(y, seen) for y in x]
    if isinstance(x, dict):
        return {k: _to_meta(v, seen) for k, v in x.items()}
    return x


def _split_inputs(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, list):
        return tuple(inputs), {}
    if isinstance(inputs, tuple):
        return inputs, {}
    raise TypeError(f"module inputs must be a tuple of arguments (got {type(inputs).__name__})")


def _meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    ):
        m = seen.get(id(t))
        if m is None:
            m = seen[id(t)] = torch.empty(t.shape, dtype=t.dtype, device="meta")
        state[name] = m
    return state


_MANAGED = ("_parameters", "_buffers", "_modules")
_MISSING = object()


class _PreserveAttributes:
    """Undo attribute assignments a forward makes on its modules (caches of meta or fake tensors)."""

    def __init__(self, module: nn.Module):
        self.saved = [(m, dict(vars(m))) for m in module.modules()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m, before in self.saved:
            now = vars(m)
            for k in [k for k in now if k not in before]:
                del now[k]
            for k, v in before.items():
                if k not in _MANAGED and now.get(k, _MISSING) is not v:
                    now[k] = v
        return False


def _run(
    module: nn.Module, args: tuple, kwargs: dict, params: Iterable[torch.Tensor], meta_state=None
) -> int:
    counter = _Counter(params=params, fast_meta=meta_state is not None)
    with torch.no_grad(), _PreserveAttributes(module), _AttentionPricer(counter), counter:
        if meta_state is not None:
            torch.func.functional_call(module, meta_state, args, kwargs, tie_weights=False, strict=False)
        else:
            module(*args, **kwargs)
    return counter.macs


def count_macs(module: nn.Module, inputs: Any, *, meta: bool = True, _meta_state_cache=None) -> int:
    """MACs of one call `module(*inputs)` under the ELUE convention (see module docstring).

    `inputs` is a tuple of positional arguments (a single tensor or a dict of keyword arguments is
    accepted too). The call is made on the `meta` device when possible (fast, no data); if that fails
    it is made for real on the given tensors. The module is not modified.
    """
    args, kwargs = _split_inputs(inputs)
    if meta:
        state = _meta_state_cache if _meta_state_cache is not None else _meta_state(module)
        try:
            seen: dict[int, torch.Tensor] = {}
            meta_args, meta_kwargs = _to_meta(args, seen), _to_meta(kwargs, seen)
            return _run(module, meta_args, meta_kwargs, state.values(), meta_state=state)
        except Exception:
            pass  # fall back to a real run on CPU tensors
    params = list(module.parameters()) + list(module.buffers())
    return _run(module, args, kwargs, params)


# ---------------------------------------------------------------------------------------------------
# default inputs and FLOPs at a shape


def _starts_with_embedding(module: nn.Module) -> bool:
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return True
    for sub in module.modules():
        if sub is module:
            continue
        if next(sub.parameters(recurse=False), None) is not None or not list(sub.children()):
            return isinstance(sub, (nn.Embedding, nn.EmbeddingBag))
    return False


def default_dummy_input(module: nn.Module, shape: Shape, dtype: torch.dtype | None = None) -> tuple:
    """Spec §2 default: int64 zeros (batch 1) when the module starts with an embedding lookup, else
    float32 zeros. "Starts with" = the first leaf submodule (registration order) is an nn.Embedding."""
    if dtype is None:
        dtype = torch.int64 if _starts_with_embedding(module) else torch.float32
    return (torch.zeros((1, *shape), dtype=dtype),)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


def module_flops(
    module: nn.Module,
    shape: Shape,
    dummy_input: tuple | Callable[[Shape], Any] | None = None,
    *,
    _meta_state_cache=None,
) -> int:
    """FLOPs (= 2 × MACs) of one call of `module` at batch 1, input shape `shape` (no batch dim).

    `dummy_input` is the call's inputs (a tuple) or a callable `shape -> inputs`; by default
    `default_dummy_input`: int64 zeros for a module starting with an embedding, float32 zeros
    otherwise; when the default float input fails, int64 is tried before giving up (and vice versa).
    Raises FlopCountError when the module cannot be run at that input.
    """
    shape = tuple(int(d) for d in shape)
    if dummy_input is not None:
        try:
            inputs = dummy_input(shape) if callable(dummy_input) else dummy_input
        except Exception as exc:
            raise FlopCountError(f"its dummy_input raised {_describe(exc)}") from exc
        try:
            return 2 * count_macs(module, inputs, _meta_state_cache=_meta_state_cache)
        except Exception as exc:
            raise FlopCountError(f"with its dummy_input: {_describe(exc)}") from exc
    first = default_dummy_input(module, shape)
    try:
        return 2 * count_macs(module, first, _meta_state_cache=_meta_state_cache)
    except Exception as exc:
        other = torch.float32 if first[0].dtype == torch.int64 else torch.int64
        try:
            return 2 * count_macs(
                module, default_dummy_input(module, shape, other), _meta_state_cache=_meta_state_cache
            )
        except Exception:
            pass
        raise FlopCountError(
            f"with {str(first[0].dtype).removeprefix('torch.')} zeros of shape {(1, *shape)}: {_describe(exc)}"
        ) from exc


class ModuleFlops:
    """FLOPs of named module calls with a cache: each distinct (name, shape) is counted once.

    `modules` maps names to modules (model.py's `module_list`); `dummy_input(name, shape) -> tuple`
    optionally builds a call's inputs (model.py may define it).

    Speed: once a module has been counted concretely at `symbolic_after` distinct shapes (and its input
    is one tensor of shape (1, *shape): the default, or what `dummy_input` returns), it is run once
    with symbolic sizes (see `_symbolic`); the resulting formula must reproduce every concrete count
    made so far, and is then used for each further shape at which all of its guards hold. Set `symbolic_after=None` to always count concretely.
    With `share_formulas`, a module with the same structure as one already run symbolically (same
    classes, parameter shapes and non-integer attributes; integer attributes such as a layer index may
    differ) reuses that formula if it reproduces all of its own concrete counts (>= 3 shapes) and none of its
    guards constrains a free size (such a guard may come from an integer attribute: `if n > self.k`).
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        dummy_input: Callable[[str, Shape], Any] | None = None,
        *,
        symbolic_after: int | None = 4,
        share_formulas: bool = True,
    ):
        self.modules = modules
        self.dummy_input = dummy_input
        self.symbolic_after = symbolic_after
        self._cache: dict[tuple[str, Shape], int] = {}
        self._states: dict[str, dict[str, torch.Tensor]] = {}
        self._concrete: dict[str, dict[Shape, int]] = {}
        self._formulas: dict[str, list] = {}
        self._expected: dict[str, int] | None = None
        self._by_signature: dict[Any, list] = {}
        self._sigs: dict[str, Any] = {}  # name -> signature (None: cannot be told, or sharing off)
        self.share_formulas = share_formulas
        self.stats = {"concrete": 0, "formula": 0, "symbolic_runs": 0, "symbolic_failed": 0, "shared": 0}

    def expect(self, calls: Iterable[tuple[str, Shape]], min_remaining: int = 64) -> None:
        """Announce the calls to come: a symbolic run (~0.3 s) is only tried for a module with at
        least `min_remaining` distinct shapes still to count, its own and those of the modules that can
        share its formula (a concrete count is ~1-3 ms)."""
        counts: dict[str, int] = {}
        for name, _shape in dict.fromkeys((n, tuple(int(d) for d in s)) for n, s in calls):
            counts[name] = counts.get(name, 0) + 1
        self._expected = counts
        self._min_remaining = min_remaining

    def __call__(self, name: str, shape: Shape) -> int:
        shape = tuple(int(d) for d in shape)
        key = (name, shape)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if name not in self.modules:
            raise KeyError(name)
        for formula in self._formulas.get(name, ()):
            macs = formula(shape)
            if macs is not None:
                self.stats["formula"] += 1
                self._cache[key] = 2 * macs
                return 2 * macs
        module = self.modules[name]
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = _meta_state(module)
        dummy = None
        if self.dummy_input is not None:
            fn = self.dummy_input

            def dummy(s, _name=name, _fn=fn):
                return _fn(_name, s)

        value = module_flops(module, shape, dummy, _meta_state_cache=state)
        self.stats["concrete"] += 1
        self._cache[key] = value
        done = self._concrete.setdefault(name, {})
        done[shape] = value
        if (
            self.symbolic_after is not None
            and len(done) >= self.symbolic_after
            and len(self._formulas.setdefault(name, [])) < 2
            and len(done) in (self.symbolic_after, 4 * self.symbolic_after)
            and self._worth_symbolic(name)
        ):
            self._try_symbolic(name, module, shape, done)
        return value

    def _signature(self, name: str):
        if name not in self._sigs:
            from elue.costs._symbolic import signature

            self._sigs[name] = signature(self.modules[name]) if self.share_formulas else None
        return self._sigs[name]

    def _worth_symbolic(self, name: str) -> bool:
        """Whether a symbolic run pays off for `name`: enough shapes still to count, for this module and for
        the modules of the same structure that can share its formula (the 12 layers of an encoder each have a
        few dozen lengths: too few alone, several hundred together), or a shared formula to try already."""
        if self._expected is None:
            return True
        sig = self._signature(name)
        if sig is None:
            group = [name]
        elif self._by_signature.get(sig):
            return True  # trying a formula that exists costs no symbolic run
        else:
            group = [n for n in self._expected if n in self.modules and self._signature(n) == sig]
        left = sum(self._expected.get(n, 0) - len(self._concrete.get(n, ())) for n in group)
        return left >= self._min_remaining

    def _single_input_dtype(self, name: str, module: nn.Module, shape: Shape) -> torch.dtype | None:
        """The dtype of the call's one input tensor of shape (1, *shape), or None if the inputs are
        anything else (then the module is always counted concretely)."""
        if self.dummy_input is None:
            return default_dummy_input(module, shape)[0].dtype
        try:
            inputs = self.dummy_input(name, shape)
        except Exception:  # noqa: BLE001
            return None
        if isinstance(inputs, (tuple, list)) and len(inputs) == 1:
            inputs = inputs[0]
        if isinstance(inputs, torch.Tensor) and tuple(inputs.shape) == (1, *shape):
            return inputs.dtype
        return None

    def _try_symbolic(self, name: str, module: nn.Module, shape: Shape, done: dict[Shape, int]) -> None:
        from elue.costs._symbolic import symbolic_macs

        sig = self._signature(name)
        if sig is not None and len(done) >= 3:
            for formula in self._by_signature.get(sig, ()):
                if all(formula(s) is not None and 2 * formula(s) == v for s, v in done.items()):
                    self._formulas[name].append(formula)
                    self.stats["shared"] += 1
                    return
        dtype = self._single_input_dtype(name, module, shape)
        if dtype is None:
            return
        self.stats["symbolic_runs"] += 1
        try:
            formula = symbolic_macs(module, shape, dtype)
        except Exception:  # noqa: BLE001 - any difficulty: keep counting concretely
            self.stats["symbolic_failed"] += 1
            return
        for s, value in done.items():  # the formula must agree with every concrete count it covers
            macs = formula(s)
            if macs is not None and 2 * macs != value:
                self.stats["symbolic_failed"] += 1
                return
        if formula(shape) is None:
            self.stats["symbolic_failed"] += 1
            return
        self._formulas[name].append(formula)
        if sig is not None and formula.shareable:
            self._by_signature.setdefault(sig, []).append(formula)
