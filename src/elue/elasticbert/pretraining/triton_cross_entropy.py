"""One exit's MLM loss step (`softmax_cross_entropy_grad`) as a hand-written Triton kernel, for CUDA.

What the step does to each row of one exit's (M, V) logits: the log-sum-exp, the loss at the target, whether the
argmax hits the target, and the row's gradient softmax - onehot. The generated (torch.compile) kernel of
`softmax_cross_entropy_grad_fusable` took 1.2 ms per exit at 128 x 512 tokens on an H200 (M = 9,830, V = 30,528:
0.6 GB of bf16 logits), plus 0.3 ms for the bias gradient: about five passes over the logits, 15 ms of a
153 ms step. This kernel makes two passes over a row (Liger-Kernel's cross-entropy layout): one program per row,
an online max / sum-exp / argmax over the row in blocks, then the gradient written block by block. The row
(61 KB) is still in L2 for the second pass, so from memory the logits are read about once and the gradient
written once. The bias gradient, a column sum over the rows, is one `sum(0)` over the gradient in torch.

Correctness is tested on the CPU with Triton's interpreter (`TRITON_INTERPRET=1`) against the torch step.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU-only install has no Triton; `available` says so
    triton = None


def available(device: torch.device | str) -> bool:
    """True where this kernel can run on tensors of `device`: Triton installed and a CUDA device, or any device
    under Triton's interpreter (TRITON_INTERPRET=1, how the CPU tests run it)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _softmax_xent_grad_kernel(
        logits_ptr,  # (M, V), compute dtype; without the bias when HAS_BIAS
        bias_ptr,  # (V,) float32; -inf on vocabulary padding (unused without HAS_BIAS)
        targets_ptr,  # (M,) int64
        grad_ptr,  # (M, V) out: softmax - onehot, in the logits' dtype
        loss_ptr,  # (M,) float32 out: lse - z[target]
        hit_ptr,  # (M,) int32 out: argmax == target
        stride_logits,
        stride_grad,
        n_cols,
        HAS_BIAS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        logits_row = logits_ptr + row * stride_logits
        grad_row = grad_ptr + row * stride_grad
        target = tl.load(targets_ptr + row)
        # pass 1: running max m, sum of exp(z - m) d, and the first index of the maximum
        m = float("-inf")
        d = 0.0
        best = float("-inf")
        best_idx = 0
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            inside = cols < n_cols
            z = tl.load(logits_row + cols, mask=inside, other=float("-inf")).to(tl.float32)  # (BLOCK,)
            if HAS_BIAS:
                z = z + tl.load(bias_ptr + cols, mask=inside, other=float("-inf"))
            block_max, block_arg = tl.max(z, 0, return_indices=True)
            m_new = tl.maximum(m, block_max)
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
            m = m_new
            best_idx = tl.where(block_max > best, start + block_arg, best_idx)  # strict: first maximum wins
            best = tl.maximum(best, block_max)
        lse = m + tl.log(d)
        z_target = tl.load(logits_row + target).to(tl.float32)
        if HAS_BIAS:
            z_target += tl.load(bias_ptr + target)
        tl.store(loss_ptr + row, lse - z_target)
        tl.store(hit_ptr + row, (best_idx == target).to(tl.int32))
        # pass 2: the gradient softmax - onehot, block by block (the row is still in L2)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            inside = cols < n_cols
            z = tl.load(logits_row + cols, mask=inside, other=float("-inf")).to(tl.float32)
            if HAS_BIAS:
                z = z + tl.load(bias_ptr + cols, mask=inside, other=float("-inf"))
            g = tl.exp(z - lse) - tl.where(cols == target, 1.0, 0.0)
            tl.store(grad_row + cols, g.to(grad_ptr.dtype.element_ty), mask=inside)


#: Block and warps per row: measured on an H200 (bench/mfu_probe.py's kernel sweep, M = 9,830, V = 30,528,
#: bf16): 8,192 / 8 warps 661 us a call without the bias, Liger-Kernel's 32,768 / 32 (the whole row in one
#: block) 789 us; with the bias read by the kernel 4,096 / 4 was best (730 us). Override with `ELUE_XENT_BLOCK`,
#: `ELUE_XENT_WARPS`.
MAX_BLOCK = 8192
NUM_WARPS = 8


def softmax_cross_entropy_grad_triton(
    logits: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, bias_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Same contract as `linear_cross_entropy.softmax_cross_entropy_grad`: logits (M, V) without bias, bias (V,)
    float32 or None (already in the logits), targets (M,) -> (grad (M, V) in the logits' dtype, summed loss (),
    correct count (), bias grad (V,) float32 or None with `bias_grad=False`). The gradient is written into the logits' own memory (they are not
    needed afterwards)."""
    if triton is None:
        raise RuntimeError("the Triton cross-entropy kernel needs the `triton` package")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    m, v = logits.shape
    has_bias = bias is not None
    bias = bias.contiguous().float() if has_bias else logits  # a placeholder pointer, never read
    targets = targets.contiguous()
    loss = torch.empty(m, dtype=torch.float32, device=logits.device)
    hit = torch.empty(m, dtype=torch.int32, device=logits.device)
    block = min(int(os.environ.get("ELUE_XENT_BLOCK", MAX_BLOCK)), triton.next_power_of_2(v))
    warps = int(os.environ.get("ELUE_XENT_WARPS", NUM_WARPS))
    if m:
        _softmax_xent_grad_kernel[(m,)](
            logits, bias, targets, logits, loss, hit, logits.stride(0), logits.stride(0), v,
            HAS_BIAS=has_bias, BLOCK=block, num_warps=warps,
        )  # fmt: skip
    grad = logits  # overwritten in place, row by row, after the row's statistics were taken
    bias_grad_sum = grad.sum(0, dtype=torch.float32) if bias_grad else None
    return grad, loss.sum(), hit.sum(dtype=torch.int64), bias_grad_sum


__all__ = ["available", "softmax_cross_entropy_grad_triton"]
