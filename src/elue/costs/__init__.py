"""Cost accounting (spec §3): FLOPs of module calls, parameter counts, and the sandbox for model.py.

    from elue.costs import price_model        # untrusted model.py -> CostTable (names, params, FLOPs)
    from elue.costs import count_macs, module_flops, ModuleFlops, count_params   # in-process

Names are loaded lazily so that importing the package (the sandbox worker does) stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "price_model": "sandbox",
    "CostTable": "sandbox",
    "SandboxLimits": "sandbox",
    "SandboxError": "sandbox",
    "SandboxUnavailable": "sandbox",
    "bwrap_available": "sandbox",
    "count_macs": "flops",
    "module_flops": "flops",
    "ModuleFlops": "flops",
    "FlopCountError": "flops",
    "default_dummy_input": "flops",
    "count_params": "params",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'elue.costs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"elue.costs.{module}"), name)
