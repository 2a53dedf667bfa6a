"""Hidden dropout with its keep-mask drawn by torch's own random kernel, for the compiled pre-training step.

Why: inside a compiled region inductor fuses BERT's hidden dropout into the residual + LayerNorm kernel and draws
each element's random number there with Triton's `tl.rand`, which runs a whole Philox-4x32-10 round and keeps one
of its four outputs. On an H200 those fused kernels ran at about 1 TB/s (24 a step at 128 x 512 tokens, 7.5 ms of a
140 ms step; docs/pretraining.md), far below the memory bandwidth: the random numbers, not the memory, set
their pace. torch's own `bernoulli_` kernel keeps all four outputs of each Philox call. Here the mask comes from
that kernel as a custom op (a bool tensor, one byte per element: what inductor saves for the backward pass
anyway), and the fused kernel only reads it: same work, a quarter of the random-number arithmetic.

Same distribution as `nn.Dropout` (each element kept with probability 1 - p, kept ones scaled by 1 / (1 - p)),
not the same draws. Checkpoints do not change: dropout modules hold no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling_elasticbert import ElasticBertEmbeddings, ElasticBertSelfOutput

# Defined by schema (not `torch.library.custom_op`, whose `tags=` older torch releases lack) and tagged as a random
# op, so that the partitioner saves its mask for the backward pass instead of drawing a new one there. It takes
# the tensor to be dropped (for its shape and device) rather than a shape: AOTAutograd's common-subexpression pass
# knows only aten's random ops and would merge two calls with equal arguments into one mask; calls on different
# tensors are never merged. test_dropout_masks.py checks, in compiled training graphs, that each call draws its
# own mask and that the backward pass reuses the forward pass's.
_LIB = torch.library.Library("elue", "FRAGMENT")
_LIB.define("keep_mask(Tensor like, float p) -> Tensor", tags=(torch.Tag.nondeterministic_seeded,))


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")


def _keep_mask_impl(like: torch.Tensor, p: float) -> torch.Tensor:
    _check_p(p)
    return torch.empty(like.shape, dtype=torch.bool, device=like.device).bernoulli_(1.0 - p)


_LIB.impl("keep_mask", _keep_mask_impl, "CompositeExplicitAutograd")


@torch.library.register_fake("elue::keep_mask")
def _keep_mask_fake(like: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty(like.shape, dtype=torch.bool, device=like.device)


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A bool tensor of `like`'s shape on its device, each element True (kept) with probability 1 - p,
    independently. Drawn from torch's default generator of that device (`torch.manual_seed` makes it
    reproducible); `like`'s values are not read."""
    return torch.ops.elue.keep_mask(like, float(p))


class KeepMaskDropout(nn.Module):
    """`nn.Dropout(p)` whose mask comes from `keep_mask`: x · mask / (1 - p) in training, x in eval. Within one
    compiled graph, two calls on the very same tensor share a mask (see above); BERT's hidden dropouts never do."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        _check_p(p)
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        mask = keep_mask(x, self.p)  # (*x.shape) bool
        return x * mask * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def hidden_dropouts(model: nn.Module) -> list[nn.Module]:
    """The modules holding the ElasticBERT encoder's hidden dropouts (as `.dropout`): the embeddings and each
    layer's attention and FFN outputs. Attention dropout is SDPA's own and stays there."""
    return [
        m
        for m in model.modules()
        if isinstance(m, ElasticBertEmbeddings | ElasticBertSelfOutput) and isinstance(m.dropout, nn.Dropout)
    ]


def use_keep_mask_dropout(model: nn.Module) -> int:
    """Swap the encoder's hidden `nn.Dropout`s for `KeepMaskDropout`s of the same p, in place (before compiling
    it), each in the training mode of the one it replaces. Returns how many were swapped."""
    found = hidden_dropouts(model)
    for holder in found:
        holder.dropout = KeepMaskDropout(holder.dropout.p).train(holder.dropout.training)
    return len(found)


__all__ = ["KeepMaskDropout", "hidden_dropouts", "keep_mask", "use_keep_mask_dropout"]
