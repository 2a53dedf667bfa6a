"""Parameter count (spec §3): all parameters of `entire_model`, each shared tensor once, no buffers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _storage_key(p: torch.Tensor) -> int | None:
    """An identity of the memory `p` lives in (meta tensors included: their data pointers are all 0,
    their storages are still distinct objects); None when torch does not expose one."""
    try:
        return int(p.untyped_storage()._cdata)
    except Exception:  # noqa: BLE001  (a tensor subclass without a storage)
        return None


def _extent(p: torch.Tensor) -> int:
    """Storage elements spanned by `p` from its offset (its numel when it is dense)."""
    if p.numel() == 0:
        return 0
    return 1 + sum((s - 1) * abs(st) for s, st in zip(p.shape, p.stride(), strict=True))


def _shared_elements(params: list[torch.Tensor]) -> int:
    """Distinct storage elements covered by parameters that live in one storage (views of each other:
    `nn.Parameter(other.weight)`, a transposed or sliced tie)."""
    if all(_extent(p) == p.numel() for p in params):  # dense views: a union of intervals is exact
        spans = sorted((p.storage_offset(), p.storage_offset() + p.numel()) for p in params if p.numel())
        total, end = 0, -1
        for lo, hi in spans:
            if hi > end:
                total += hi - max(lo, end)
                end = hi
        return total
    covered: set[int] = set()  # a strided view with gaps: the exact elements (rare, small)
    for p in params:
        idx = np.zeros(1, dtype=np.int64) + p.storage_offset()
        for s, st in zip(p.shape, p.stride(), strict=True):
            idx = (idx[:, None] + np.arange(s, dtype=np.int64) * st).ravel()
        covered.update(idx.tolist())
    return len(covered)


def count_params(*models: nn.Module) -> int:
    """Number of parameter elements of `models` together; a tensor shared by several modules (tied
    weights) is counted once, buffers (running stats, position ids) are not counted.

    "Shared" is by memory, not by Python object: the same `nn.Parameter` registered twice, and also
    distinct `nn.Parameter` objects that are views of one tensor (`b.weight = nn.Parameter(a.weight)`,
    a decoder tied to `nn.Parameter(encoder.weight.t())`), whose elements are counted once."""
    seen: set[int] = set()
    groups: dict[int, list[torch.Tensor]] = {}
    total = 0
    for model in models:
        for _, p in model.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            key = _storage_key(p)
            if key is None:
                total += p.numel()
            else:
                groups.setdefault(key, []).append(p)
    for params in groups.values():
        if len(params) == 1 or len({p.dtype for p in params}) > 1:
            total += sum(p.numel() for p in params)
        else:
            total += _shared_elements(params)
    return total
