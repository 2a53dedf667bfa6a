"""Checks of the Triton MLM loss kernel, run by test_triton_cross_entropy.py in a child process under Triton's
interpreter (TRITON_INTERPRET=1 must be set before Triton is imported). Exits non-zero on the first failure."""

from __future__ import annotations

import os
import sys

import torch

from elue.elasticbert.pretraining import triton_cross_entropy
from elue.elasticbert.pretraining.linear_cross_entropy import linear_cross_entropy, softmax_cross_entropy_grad
from elue.elasticbert.pretraining.triton_cross_entropy import softmax_cross_entropy_grad_triton

sys.path.insert(0, os.path.dirname(__file__))
from test_linear_cross_entropy import H, inputs, reference  # noqa: E402


def step_matches_torch(dtype, block):
    os.environ["ELUE_XENT_BLOCK"] = str(block)
    g = torch.Generator().manual_seed(1)
    m, v, pad = 9, 50, 6  # V + pad = 56: several blocks of 16, the last one partly outside the row
    logits = (3 * torch.randn(m, v + pad, generator=g)).to(dtype)
    bias = torch.randn(v + pad, generator=g)
    bias[v:] = float("-inf")  # padded vocabulary
    targets = torch.randint(0, v, (m,), generator=g)
    logits[0, 5] = logits[0, 40] = 50.0  # a tie in two blocks: the first maximum counts, as in torch.argmax
    bias[5] = bias[40] = 0.0
    targets[0], targets[1] = 5, int((logits[1].float() + bias).argmax())  # hits; the rest mostly misses
    want = softmax_cross_entropy_grad(logits.clone(), bias, targets)
    got = softmax_cross_entropy_grad_triton(logits.clone(), bias, targets)
    tol = {} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}  # bf16: one rounding of the gradient
    for name, a, b in zip(("grad", "loss", "correct", "bias grad"), want, got, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(b, a, msg=f"{name} ({dtype}, block {block})", **tol)
    assert int(got[2]) >= 2 and torch.all(got[0][:, v:] == 0) and torch.all(got[3][v:] == 0)
    # the bias already in the logits (LinearCrossEntropy's bias_in_gemm): the kernel reads no bias
    with_bias = (logits.float() + bias).to(dtype)
    want = softmax_cross_entropy_grad(with_bias.clone(), None, targets)
    got = softmax_cross_entropy_grad_triton(with_bias.clone(), None, targets)
    for name, a, b in zip(("grad", "loss", "correct", "bias grad"), want, got, strict=True):
        torch.testing.assert_close(b, a, msg=f"{name} ({dtype}, block {block}, no bias)", **tol)


def linear_cross_entropy_matches_autograd(m, **options):
    x, w, b, t = inputs(m=m)
    scales = torch.tensor([0.5, 2.0, -1.0])
    ref_losses, ref_correct = reference(x, w, b, t)
    (ref_losses * scales).sum().backward()
    want = [p.grad.clone() for p in (x, w, b)]
    for p in (x, w, b):
        p.grad = None
    losses, correct = linear_cross_entropy(x, w, b, t, softmax_cross_entropy_grad_triton, **options)
    (losses * scales).sum().backward()
    torch.testing.assert_close(losses, ref_losses)
    assert torch.equal(correct, ref_correct)
    for name, p, ref in zip("xwb", (x, w, b), want, strict=True):
        torch.testing.assert_close(p.grad, ref, msg=f"d{name} (m={m}, {options})")


def model_uses_it_and_matches():
    """ElasticBertForPreTraining's default step takes the kernel where it runs (here: the interpreter)."""
    from elue.elasticbert.pretraining.modeling_pretraining import load_pretraining_model, xent_step

    cfg = dict(
        vocab_size=61, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model, _ = load_pretraining_model(None, cfg)
    ids = torch.randint(5, 61, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 3:6] = ids[:, 3:6]
    batch = dict(input_ids=ids, labels=labels, sop_labels=torch.tensor([0, 1]))
    calls = []
    kernel = triton_cross_entropy.softmax_cross_entropy_grad_triton
    triton_cross_entropy.softmax_cross_entropy_grad_triton = lambda *a, **kw: (
        calls.append(1) or kernel(*a, **kw)
    )
    try:
        out = model(**batch)
        out.loss.backward()
    finally:
        triton_cross_entropy.softmax_cross_entropy_grad_triton = kernel
    assert calls, "the default step did not take the Triton kernel under the interpreter"
    got = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model._xent_step = xent_step("eager")
    want_loss = model(**batch).loss
    want_loss.backward()
    torch.testing.assert_close(out.loss, want_loss)
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[k], p.grad, msg=k)


if __name__ == "__main__":
    assert triton_cross_entropy.available("cpu"), "run with TRITON_INTERPRET=1"
    for dtype in (torch.float32, torch.bfloat16):
        for block in (16, 64):  # several blocks per row; the whole row in one
            step_matches_torch(dtype, block)
    os.environ.pop("ELUE_XENT_BLOCK")
    for m in (7, 2 * H):  # both modes of LinearCrossEntropy (logit gradients kept / GEMMs done ahead)
        linear_cross_entropy_matches_autograd(m)
        linear_cross_entropy_matches_autograd(m, bias_in_gemm=True, keep_logit_grads=m > H)  # and forced
    linear_cross_entropy_matches_autograd(
        2 * H, bias_in_gemm=True, keep_logit_grads=True, bias_grad_in_gemm=True
    )
    model_uses_it_and_matches()
    print("triton checks ok")
