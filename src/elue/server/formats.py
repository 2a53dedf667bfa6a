"""How the site writes numbers that the pages and the chart's script both show (one rule for both)."""

from __future__ import annotations


def params_text(v: float | None) -> str:
    """Millions of parameters: 109.0M, 18.0M, 0.0054M (with one decimal, a 0.0054M model read "0.0M")."""
    if v is None:
        return "—"
    return f"{v:,.1f}M" if v >= 1 else f"{v:.2g}M"
