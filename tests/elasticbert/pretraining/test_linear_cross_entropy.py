"""The fused per-exit linear + cross-entropy against plain autograd on the full (E, M, V) logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from elue.elasticbert.pretraining.linear_cross_entropy import (
    linear_cross_entropy,
    softmax_cross_entropy_grad,
    softmax_cross_entropy_grad_fusable,
)

E, M, H, V = 3, 7, 8, 13


def inputs(seed=0, pad=3, m=M, h=H):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(E, m, h, generator=g, requires_grad=True)
    w = torch.randn(V + pad, h, generator=g)
    w[V:] = 0  # padded vocabulary rows, as the model pads them
    w.requires_grad_(True)
    b = torch.randn(E, V + pad, generator=g)
    b[:, V:] = float("-inf")
    b.requires_grad_(True)
    t = torch.randint(0, V, (m,), generator=g)
    return x, w, b, t


def reference(x, w, b, t):
    logits = F.linear(x, w) + b[:, None, :]  # (E, M, V)
    m = x.shape[1]
    losses = F.cross_entropy(logits.reshape(E * m, -1), t.repeat(E), reduction="none").view(E, m).sum(1)
    return losses, (logits.argmax(-1) == t).sum(1)


@pytest.mark.parametrize("step", [softmax_cross_entropy_grad, softmax_cross_entropy_grad_fusable])
@pytest.mark.parametrize("m", [M, 2 * H])  # fewer tokens than H: logit gradients kept; more: GEMMs done ahead
@pytest.mark.parametrize("bias_in_gemm", [False, True])
def test_losses_counts_and_gradients_match_plain_autograd(step, m, bias_in_gemm):
    x, w, b, t = inputs(m=m)
    scales = torch.tensor(
        [0.5, 2.0, -1.0]
    )  # unequal per-exit weights: each exit's gradient scaled on its own
    ref_losses, ref_correct = reference(x, w, b, t)
    (ref_losses * scales).sum().backward()
    ref_grads = [p.grad.clone() for p in (x, w, b)]
    for p in (x, w, b):
        p.grad = None
    losses, correct = linear_cross_entropy(x, w, b, t, step, bias_in_gemm=bias_in_gemm)
    assert losses.grad_fn.keep_logit_grads == (m < H)  # the mode this case is for
    (losses * scales).sum().backward()
    torch.testing.assert_close(losses, ref_losses)
    assert torch.equal(correct, ref_correct) and not correct.requires_grad
    for name, p, ref in zip("xwb", (x, w, b), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, ref, msg=name)
    assert torch.all(w.grad[V:] == 0) and torch.all(b.grad[:, V:] == 0)  # the padding learns nothing


def test_without_gradients_only_the_losses():
    x, w, b, t = inputs(seed=1)
    with torch.no_grad():
        losses, correct = linear_cross_entropy(x, w, b, t)
    ref_losses, ref_correct = reference(x.detach(), w.detach(), b.detach(), t)
    torch.testing.assert_close(losses, ref_losses)
    assert torch.equal(correct, ref_correct) and not losses.requires_grad


@pytest.mark.parametrize("step", [softmax_cross_entropy_grad, softmax_cross_entropy_grad_fusable])
def test_step_in_bf16_returns_bf16_gradient(step):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(M, V, generator=g).bfloat16()
    t = torch.randint(0, V, (M,), generator=g)
    grad, loss, correct, grad_b = step(logits, torch.zeros(V), t)
    z = logits.float()
    assert grad.dtype == torch.bfloat16 and grad_b.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(z, t, reduction="sum"))
    torch.testing.assert_close(grad.float(), torch.softmax(z, -1) - F.one_hot(t, V), atol=4e-3, rtol=0)
    assert int(correct) == int((z.argmax(-1) == t).sum())
    torch.testing.assert_close(grad_b, (torch.softmax(z, -1) - F.one_hot(t, V)).sum(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("keep", "fold"), [(True, False), (False, False), (True, True)])
def test_keep_logit_grads_forced_either_way_gives_the_same_gradients(keep, fold):
    """The engine choices (kept (E, M, V) logit gradients, or GEMMs ahead; bias gradients from the weight GEMM)
    against the size rule's default."""
    x, w, b, t = inputs(m=2 * H if keep else M)  # the opposite of what the size rule picks
    scales = torch.tensor([0.5, 2.0, -1.0])
    (linear_cross_entropy(x, w, b, t)[0] * scales).sum().backward()
    want = [p.grad.clone() for p in (x, w, b)]
    for p in (x, w, b):
        p.grad = None
    losses, _ = linear_cross_entropy(x, w, b, t, keep_logit_grads=keep, bias_grad_in_gemm=fold)
    assert losses.grad_fn.keep_logit_grads == keep and losses.grad_fn.fold_bias_grad == fold
    (losses * scales).sum().backward()
    for name, p, ref in zip("xwb", (x, w, b), want, strict=True):
        torch.testing.assert_close(p.grad, ref, msg=name)
