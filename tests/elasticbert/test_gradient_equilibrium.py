"""Gradient equilibrium: each layer receives the mean of the gradients of the exit losses at or above it."""

from __future__ import annotations

import pytest
import torch

from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification
from elue.elasticbert.gradient_equilibrium import GradientEquilibrium, exits_at_or_above, gradient_rescale


def tiny(num_layers=4, ge=True, **kw):
    return ElasticBertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
        gradient_equilibrium=ge,
        **kw,
    )


def test_rescale_is_identity_forward_and_scales_backward():
    x = torch.randn(3, requires_grad=True)
    y = gradient_rescale(x, 0.25)
    torch.testing.assert_close(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.25))
    with torch.no_grad():
        assert gradient_rescale(x, 0.5) is x


def test_scales_match_spec_formula():
    L = 12
    ge = GradientEquilibrium(range(L))
    for i in range(L - 1):
        branch, cont = ge.scales(i)
        assert branch == pytest.approx(1 / (L - i))
        # spec: 1/(L-i) before the branch, then (L-i-1) on the path into layer i+1
        assert cont == pytest.approx((1 / (L - i)) * (L - i - 1))
    assert exits_at_or_above([1, 3, 5, 7, 9, 11]) == {1: 6, 3: 5, 5: 4, 7: 3, 9: 2, 11: 1}


def _param_layer(name: str, num_layers: int) -> tuple[str, int]:
    """(kind, layer) of a parameter: trunk params belong to a layer (embeddings: -1); exit params to their exit."""
    if name.startswith("elasticbert.embeddings."):
        return "trunk", -1
    if name.startswith("elasticbert.encoder.layer."):
        return "trunk", int(name.split(".")[3])
    if name.startswith("elasticbert.encoder.pooler."):
        return "exit", int(name.split(".")[3])
    if name.startswith("classifiers."):
        return "exit", int(name.split(".")[1])  # all layers carry exits here: classifier j is on layer j
    raise AssertionError(name)


@pytest.mark.parametrize("exit_layers", [None, [1, 3]])
def test_ge_gradients_are_mean_of_losses_above(exit_layers):
    L = 4
    torch.manual_seed(0)
    plain = ElasticBertForSequenceClassification(tiny(L, ge=False)).train()
    ge_model = ElasticBertForSequenceClassification(tiny(L, ge=True)).train()
    ge_model.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 50, (5, 7))
    mask = torch.ones_like(ids)
    mask[3:, 5:] = 0
    labels = torch.tensor([0, 1, 2, 1, 0])
    params = dict(plain.named_parameters())
    names = list(params)

    # reference: per-exit gradients of the plain model, combined by the mean-of-losses-above rule
    out = plain(ids, attention_mask=mask, labels=labels, exit_layers=exit_layers)
    active = list(range(L)) if exit_layers is None else exit_layers
    per_exit = {}
    for j, layer in enumerate(active):
        grads = torch.autograd.grad(
            out.exit_losses[j], list(params.values()), retain_graph=True, allow_unused=True
        )
        per_exit[layer] = {
            n: (g if g is not None else torch.zeros_like(params[n]))
            for n, g in zip(names, grads, strict=True)
        }
    expected = {}
    for n in names:
        kind, layer = _param_layer(n, L)
        if kind == "exit":
            expected[n] = per_exit[layer][n] if layer in per_exit else torch.zeros_like(params[n])
        else:
            above = [per_exit[j][n] for j in active if j >= layer]
            expected[n] = torch.stack(above).mean(0) if above else torch.zeros_like(params[n])

    # GE model: one backward of the summed loss
    out_ge = ge_model(ids, attention_mask=mask, labels=labels, exit_layers=exit_layers)
    torch.testing.assert_close(out_ge.loss, out.loss)
    out_ge.loss.backward()
    checked = 0
    for n, p in ge_model.named_parameters():
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(got, expected[n], atol=1e-6, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")
        checked += 1
    assert checked == len(names)
    # and it differs from the plain summed-loss gradient on the low layers
    plain_sum = torch.autograd.grad(out.loss, [params["elasticbert.encoder.layer.0.output.dense.weight"]])[0]
    assert not torch.allclose(plain_sum, expected["elasticbert.encoder.layer.0.output.dense.weight"])


@pytest.mark.parametrize("scales", [(0.25, 0.75), (1.0, 1.0)])
@pytest.mark.parametrize("use_continue", [True, False])
def test_exit_rows_function_matches_rescale_then_index_select(scales, use_continue):
    """The fused split + gather gives plain autograd's gradients (repeated rows included; a top exit whose
    continuation is unused)."""
    from elue.elasticbert.gradient_equilibrium import ExitRowsFunction

    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4, requires_grad=True)
    rows = torch.tensor([0, 5, 10, 7, 7, 14])
    w_rows, w_cont = torch.randn(6, 4), torch.randn(3, 5, 4)

    def loss(picked, cont):
        return (picked * w_rows).sum() + ((cont * w_cont).sum() if use_continue else 0)

    branch, cont = gradient_rescale(hidden, scales[0]), gradient_rescale(hidden, scales[1])
    loss(branch.reshape(-1, 4).index_select(0, rows), cont).backward()
    want, hidden.grad = hidden.grad, None
    cont, picked = ExitRowsFunction.apply(hidden, rows, *scales)
    torch.testing.assert_close(picked, hidden.reshape(-1, 4)[rows])
    loss(picked, cont).backward()
    torch.testing.assert_close(hidden.grad, want)


@pytest.mark.parametrize("ge", [True, False])
def test_model_exit_rows_give_the_same_outputs_and_gradients(ge):
    """ElasticBertModel(exit_rows=...) against the full exit hidden states gathered afterwards."""
    from elue.elasticbert import ElasticBertModel

    torch.manual_seed(0)
    model = ElasticBertModel(tiny(4, ge=ge)).train()
    ids = torch.randint(1, 50, (3, 6))
    rows = torch.tensor([1, 4, 8, 13, 17])
    weights = [torch.randn(5, 16) for _ in range(4)]

    def loss(out, picked):
        return sum(
            (p * w).sum() + q.sum() for p, w, q in zip(picked, weights, out.exit_pooled_outputs, strict=True)
        )

    full = model(ids)
    loss(full, [h.reshape(-1, 16)[rows] for h in full.exit_hidden_states]).backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    out = model(ids, exit_rows=rows)
    assert [tuple(h.shape) for h in out.exit_hidden_states] == [(5, 16)] * 4
    for a, b in zip(out.exit_pooled_outputs, full.exit_pooled_outputs, strict=True):
        torch.testing.assert_close(a, b)
    loss(out, out.exit_hidden_states).backward()
    got = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
