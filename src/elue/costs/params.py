"""Parameter count (spec §3): all parameters of `entire_model`, each shared tensor once, no buffers."""

from __future__ import annotations

from torch import nn


def count_params(*models: nn.Module) -> int:
    """Number of parameter elements of `models` together; a tensor shared by several modules (tied
    weights) is counted once, buffers (running stats, position ids) are not counted."""
    seen: set[int] = set()
    total = 0
    for model in models:
        for _, p in model.named_parameters(remove_duplicate=False):
            key = id(p)
            if key in seen:
                continue
            seen.add(key)
            total += p.numel()
    return total
