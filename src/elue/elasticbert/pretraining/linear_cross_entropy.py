"""The MLM loss of several exits over a large vocabulary, computed without the (E, M, V) logits in memory.

Plain autograd keeps the logits of every exit for the backward pass (12 exits x 15 % of a 64 x 512 batch x
30,522 words = 1.8 G values) and passes over them again and again: the GEMM writes them, the log-softmax reads
them, the backward reads them and writes their gradient. On an H200 that element-wise traffic took about as
long as the decoder GEMMs themselves. Here each exit is done in turn and its gradients are computed in the
forward pass (as Liger-Kernel's fused linear cross-entropy does): the GEMM writes one exit's (M, V) logits, one
fused kernel turns them into the loss, the correct count and their own gradient softmax - onehot, and two GEMMs
turn that into the gradients of the exit's input and of the decoder weight. The backward pass only scales the
saved gradients by the incoming ones. Same numbers as plain autograd (tested).

Memory: when an exit predicts more tokens than the hidden size (M > H), what stays alive between forward and
backward is each exit's decoder-weight gradient, (E, V, H), instead of the (E, M, V) logits: at 64 x 512 tokens,
M = 4,915 against H = 768, 0.56 GB in bf16 instead of 3.6 GB (7.2 GB as fp32 logits). With fewer (small
batches) it keeps the logits' gradients instead and does the two GEMMs in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def softmax_cross_entropy_grad(
    logits: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, bias_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One exit: logits (M, V) without bias, bias (V,) float32 (None: already in the logits), targets (M,).

    Returns the gradient of the summed cross-entropy with respect to the logits (M, V) in the logits' dtype,
    the summed loss (), the number of correct argmax predictions () and the bias gradient (V,) float32 (None
    with `bias_grad=False`: the caller gets it elsewhere).
    Eager form: in-place where it can, about half the passes over the (M, V) values of the plain formula
    (`softmax_cross_entropy_grad_fusable`; 2.1x faster on a CPU)."""
    z = logits.float() if bias is None else logits.float().add_(bias)  # (M, V) float32
    logp = torch.log_softmax(z, dim=-1)
    loss = -logp.gather(1, targets[:, None]).sum()
    correct = (logp.argmax(-1) == targets).sum()
    grad = logp.exp_()  # softmax, in place
    grad.scatter_add_(1, targets[:, None], torch.full((len(targets), 1), -1.0, device=grad.device))
    return grad.to(logits.dtype), loss, correct, grad.sum(0) if bias_grad else None


def softmax_cross_entropy_grad_fusable(
    logits: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, bias_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`softmax_cross_entropy_grad` as plain out-of-place tensor code, for torch.compile to fuse into a few
    kernels (what `compile_regions` compiles; measured on an H200 in that form)."""
    z = logits.float() if bias is None else logits.float() + bias  # (M, V)
    lse = torch.logsumexp(z, dim=-1)  # (M,)
    loss = (lse - z.gather(1, targets[:, None]).squeeze(1)).sum()
    correct = (z.argmax(-1) == targets).sum()
    onehot = torch.arange(z.shape[1], device=z.device)[None, :] == targets[:, None]
    grad = torch.exp(z - lse[:, None]) - onehot.float()  # softmax - onehot
    return grad.to(logits.dtype), loss, correct, grad.sum(0) if bias_grad else None


class LinearCrossEntropy(torch.autograd.Function):
    """Per-exit summed cross-entropy of `x[e] @ weight.T + bias[e]` against `targets`, and correct counts.

    x (E, M, H) and weight (V, H) in the compute dtype (bf16 under autocast), bias (E, V) float32, targets (M,).
    Returns losses (E,) float32 and correct (E,) int64 (not differentiable).

    bias_in_gemm: add the bias in the logits GEMM's epilogue (in the compute dtype, as autocast's nn.Linear
    does) instead of in the loss step, which then reads only the logits. keep_logit_grads: keep the (E, M, V)
    logit gradients for the backward pass (its two GEMMs then run once over all exits) instead of computing the
    (E, M, H) + (E, V, H) input and weight gradients ahead; None: whichever is smaller (M < H keeps the former).
    bias_grad_in_gemm (with kept logit gradients): the per-exit bias gradients come out of the backward weight
    GEMM, from E indicator columns appended to its (E·M, H) operand, instead of a column sum over each exit's
    (M, V) gradient in the forward pass (a pass over 0.6 GB per exit at 128 x 512 tokens); they are then
    rounded once to the compute dtype, as autocast's nn.Linear bias gradients are.
    """

    @staticmethod
    def forward(
        ctx, x, weight, bias, targets, step: Callable = softmax_cross_entropy_grad, bias_in_gemm=False,
        keep_logit_grads=None, bias_grad_in_gemm=False,
    ):  # fmt: skip
        n_exits, m, h = x.shape
        losses = torch.empty(n_exits, dtype=torch.float32, device=x.device)
        correct = torch.empty(n_exits, dtype=torch.long, device=x.device)
        grads = any(ctx.needs_input_grad[:3])
        ctx.keep_logit_grads = grads and (m < h if keep_logit_grads is None else bool(keep_logit_grads))
        ctx.fold_bias_grad = ctx.keep_logit_grads and bool(bias_grad_in_gemm)
        if ctx.keep_logit_grads:
            grad_logits = x.new_empty((n_exits, m, weight.shape[0]))  # (E, M, V)
        elif grads:
            grad_x = torch.empty_like(x)  # (E, M, H)
            grad_w = weight.new_empty((n_exits, *weight.shape))  # (E, V, H), summed with the incoming scales
        grad_b = torch.empty_like(bias)  # (E, V)
        for e in range(n_exits):
            # (M, V): the only V-wide tensor alive (or the exit's slot of the kept gradients, written in place)
            out = grad_logits[e] if ctx.keep_logit_grads else None
            if bias_in_gemm:
                logits = torch.addmm(bias[e].to(x.dtype), x[e], weight.T, out=out)
            else:
                logits = torch.mm(x[e], weight.T, out=out)
            step_bias = None if bias_in_gemm else bias[e]
            g, losses[e], correct[e], gb = step(logits, step_bias, targets, bias_grad=not ctx.fold_bias_grad)
            if gb is not None:
                grad_b[e] = gb
            if ctx.keep_logit_grads:
                if g.data_ptr() != logits.data_ptr():  # the torch steps return a new tensor
                    grad_logits[e] = g
            elif grads:
                torch.mm(g, weight, out=grad_x[e])
                torch.mm(g.T, x[e], out=grad_w[e])
        ctx.mark_non_differentiable(correct)
        if ctx.keep_logit_grads:
            ctx.save_for_backward(x, weight, grad_logits, grad_b)
        elif grads:
            ctx.save_for_backward(grad_x, grad_w, grad_b)
        return losses, correct

    @staticmethod
    def backward(ctx, grad_losses, _grad_correct):
        g = grad_losses.float()  # (E,)
        if ctx.keep_logit_grads:
            x, weight, grad_logits, grad_b = ctx.saved_tensors
            e, m, h = x.shape
            x_scaled = (x.float() * g[:, None, None]).to(
                x.dtype
            )  # scale the small side, not the (E, M, V) one
            dx = (torch.matmul(grad_logits, weight).float() * g[:, None, None]).to(x.dtype)
            operand = x_scaled  # (E, M, H)
            if ctx.fold_bias_grad:
                # column h + j of the operand is 1 on exit j's rows: that output column is exit j's bias gradient
                cols = -(-e // 8) * 8  # keeps the operand's rows 16-byte aligned
                # made on the device: indexing a GPU tensor with host index tensors copies them over, and
                # that copy makes the host wait for the GPU (an idle gap in the step)
                indicator = torch.eye(e, cols, dtype=x.dtype, device=x.device)[:, None, :].expand(e, m, cols)
                operand = torch.cat([x_scaled, indicator], dim=2)
            dw = grad_logits.reshape(e * m, -1).T @ operand.reshape(e * m, -1)  # (V, H [+ cols]), one GEMM
            db = dw[:, h : h + e].T.float() if ctx.fold_bias_grad else grad_b
            return dx, dw[:, :h], db * g[:, None], None, None, None, None, None
        grad_x, grad_w, grad_b = ctx.saved_tensors
        dx = (grad_x.float() * g[:, None, None]).to(grad_x.dtype)
        dw = torch.zeros(grad_w.shape[1:], dtype=torch.float32, device=grad_w.device)
        for e in range(grad_w.shape[0]):
            dw.addcmul_(grad_w[e], g[e])  # fp32 sum over exits, no host sync
        return dx, dw.to(grad_w.dtype), grad_b * g[:, None], None, None, None, None, None


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: torch.Tensor,
    step: Callable = softmax_cross_entropy_grad,
    bias_in_gemm: bool = False,
    keep_logit_grads: bool | None = None,
    bias_grad_in_gemm: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E,) summed losses and (E,) correct counts; see `LinearCrossEntropy`. `step` may be a compiled
    `softmax_cross_entropy_grad_fusable` or the Triton kernel."""
    return LinearCrossEntropy.apply(
        x, weight, bias, targets, step, bias_in_gemm, keep_logit_grads, bias_grad_in_gemm
    )


__all__ = [
    "LinearCrossEntropy",
    "linear_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_grad_fusable",
]
