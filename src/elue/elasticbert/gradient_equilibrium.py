"""Gradient equilibrium (GE) for multi-exit training (spec §7).

A multi-exit encoder is trained on the unweighted sum of its exit losses, L = Σ_j L_j. Without care, the low
layers receive the sum of the gradients of every loss above them, so they get far larger updates than the top
layers. Gradient equilibrium rescales gradients (forward values are untouched) so that **each layer receives
the mean of the gradients of the exit losses at or above it**:

    at an exit on layer i, with n_i = number of (active) exits on layers >= i
        branch into the exit of layer i:   gradient × 1/n_i
        path on into layer i+1:            gradient × (n_i − 1)/n_i

With an exit on every layer of an L-layer model (0-based i), n_i = L − i: the exit branch is scaled by
1/(L−i) and the upward path by (L−i−1)/(L−i). This is the original ElasticBERT arrangement (which scales
by 1/(L−i) before the branch and by (L−i−1) after it; the products are the same).

Why it gives the mean (induction from the top): the gradient reaching layer i's output is
    (1/n_i)·∂L_i/∂h_i + ((n_i−1)/n_i)·mean_{j>i, active} ∂L_j/∂h_i = mean_{j≥i, active} ∂L_j/∂h_i,
and gradients flow linearly through layer i's parameters and below. Exit heads (pooler, classifier) are
above the rescale and receive their own loss's gradient unscaled.

Use `GradientEquilibrium(exit_layers)` inside a model's layer loop (see `ElasticBertModel.forward`), or
`gradient_rescale(x, scale)` directly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class GradientRescaleFunction(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by `scale` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * ctx.scale, None


def gradient_rescale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` unchanged, with its gradient multiplied by `scale` on the way back. No-op when not recording."""
    if scale == 1.0 or not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return GradientRescaleFunction.apply(x, float(scale))


class ExitRowsFunction(torch.autograd.Function):
    """The GE split of an exit layer fused with the gather of the rows its heads read.

    forward: hidden (B, S, H), rows (R,) flat indices into B·S -> (hidden unchanged, the (R, H) rows).
    backward: grad_hidden = continue_scale · grad_continue + branch_scale · (grad_rows scattered to `rows`),
    written into one (B, S, H) buffer. Plain autograd on `gradient_rescale` + `index_select` makes a dense zero
    tensor for the scatter, scales two dense tensors and adds them (about five (B, S, H) passes more per exit;
    with 12 exits of a 128 x 512 batch, ~11 GB of memory traffic a step on a GPU)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, rows: torch.Tensor, branch_scale: float, continue_scale: float):
        ctx.save_for_backward(rows)
        ctx.scales = (branch_scale, continue_scale)
        ctx.shape, ctx.dtype = hidden.shape, hidden.dtype
        return hidden.view_as(hidden), hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)

    @staticmethod
    def backward(ctx, grad_continue: torch.Tensor | None, grad_rows: torch.Tensor | None):
        (rows,) = ctx.saved_tensors
        branch_scale, continue_scale = ctx.scales
        if grad_continue is None:
            grad = torch.zeros(ctx.shape, dtype=ctx.dtype, device=rows.device)
        else:
            grad = grad_continue * continue_scale  # a new buffer, so the scatter below may write into it
        if grad_rows is not None:
            flat = grad.view(-1, ctx.shape[-1])
            flat.index_add_(0, rows, grad_rows.to(flat.dtype), alpha=branch_scale)
        return grad, None, None, None


def exits_at_or_above(exit_layers: Iterable[int]) -> dict[int, int]:
    """For each exit layer i (0-based): n_i, the number of exits on layers >= i."""
    layers = sorted(set(int(i) for i in exit_layers))
    return {layer: len(layers) - pos for pos, layer in enumerate(layers)}


class GradientEquilibrium:
    """The GE rule for one forward pass over a fixed set of active exit layers (0-based indices).

    In a layer loop, after computing layer i's output `h`:

        if ge.is_exit(i):
            branch, h = ge.split(i, h)   # `branch` feeds exit i, `h` continues to layer i+1

    `enabled=False` makes `split` return `(h, h)`: plain summed-loss gradients.
    """

    def __init__(self, exit_layers: Iterable[int], enabled: bool = True):
        self.counts = exits_at_or_above(exit_layers)
        self.enabled = enabled

    def is_exit(self, layer: int) -> bool:
        return layer in self.counts

    def scales(self, layer: int) -> tuple[float, float]:
        """(branch scale, continuation scale) at exit layer `layer`: (1/n, (n−1)/n)."""
        n = self.counts[layer]
        return 1.0 / n, (n - 1) / n

    def _split_scales(self, layer: int) -> tuple[float, float]:
        """`scales`, or (1, 1) where nothing is rescaled: GE off, no exit here, or the top exit (branch scale 1;
        the upward path carries no exit loss, so a loss on `last_hidden_state` keeps its plain gradient)."""
        if not self.enabled or not self.is_exit(layer) or self.counts[layer] == 1:
            return 1.0, 1.0
        return self.scales(layer)

    def split(self, layer: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tensor for the exit branch, tensor for the path into the next layer)."""
        branch_scale, continue_scale = self._split_scales(layer)
        return gradient_rescale(hidden, branch_scale), gradient_rescale(hidden, continue_scale)

    def split_rows(
        self, layer: int, hidden: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`split` for an exit whose heads read only some rows: ((R, H) rows of the branch at the flat indices
        `rows` into B·S, tensor for the path into the next layer). Same gradients as `split` followed by
        `branch.reshape(-1, H).index_select(0, rows)`, computed in one buffer (`ExitRowsFunction`)."""
        if not (torch.is_grad_enabled() and hidden.requires_grad):
            return hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows), hidden
        hidden, picked = ExitRowsFunction.apply(hidden, rows, *self._split_scales(layer))
        return picked, hidden


__all__ = [
    "ExitRowsFunction",
    "GradientEquilibrium",
    "GradientRescaleFunction",
    "exits_at_or_above",
    "gradient_rescale",
]
