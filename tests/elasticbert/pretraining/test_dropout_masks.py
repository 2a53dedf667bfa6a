"""KeepMaskDropout: nn.Dropout's distribution with the mask from torch's bernoulli kernel (a custom op)."""

import pytest
import torch
from torch import nn

from elue.elasticbert.pretraining.config import PretrainConfig
from elue.elasticbert.pretraining.dropout_masks import (
    KeepMaskDropout,
    hidden_dropouts,
    keep_mask,
    use_keep_mask_dropout,
)
from elue.elasticbert.pretraining.modeling_pretraining import (
    ElasticBertForPreTraining,
    compile_regions,
    load_pretraining_model,
    resolve_dropout_masks,
)


def tiny_model(**kw) -> ElasticBertForPreTraining:
    """2 layers, an exit on each: 5 hidden dropouts (embeddings; attention and FFN output of each layer)."""
    sizes = dict(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return load_pretraining_model(None, {**sizes, **kw})[0]


def test_keep_mask_is_bool_of_the_shape_and_keeps_one_minus_p():
    torch.manual_seed(0)
    like = torch.randn(400, 500)
    mask = keep_mask(like, 0.1)
    assert mask.dtype == torch.bool and mask.shape == (400, 500)
    # 200,000 Bernoulli(0.9) draws: standard error 0.00067
    assert abs(mask.float().mean().item() - 0.9) < 0.004
    assert keep_mask(like, 0.0).all()
    assert not keep_mask(like, 1.0).any()


def test_keep_mask_follows_the_seed_and_rejects_bad_p():
    like = torch.zeros(64, 64)
    torch.manual_seed(3)
    a = keep_mask(like, 0.5)
    torch.manual_seed(3)
    b = keep_mask(like, 0.5)
    c = keep_mask(like, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="between 0 and 1"):
        keep_mask(like, 1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        KeepMaskDropout(-0.1)


def test_dropout_scales_kept_values_and_gradients_and_is_identity_in_eval():
    torch.manual_seed(0)
    drop = KeepMaskDropout(0.25)
    x = torch.randn(50, 40, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert 0.7 < kept.float().mean().item() < 0.8
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)  # d y / d x = mask / (1 - p)
    drop.eval()
    assert drop(x) is x
    assert torch.equal(KeepMaskDropout(1.0)(x), torch.zeros_like(x))
    assert KeepMaskDropout(0.0)(x) is x


@pytest.mark.parametrize("training_graph", [False, True], ids=["inference", "training"])
def test_compiled_calls_draw_their_own_masks_and_the_backward_reuses_them(training_graph):
    """A random op inside a compiled graph: two dropouts draw two masks (no merging), each call draws anew (no
    replay), and the backward pass scales by the forward pass's mask (not a new draw)."""
    drop = KeepMaskDropout(0.5)

    @torch.compile(backend="inductor")
    def two_dropouts(a, b):  # like a layer: two dropouts on two different tensors
        return drop(a * 1.0) + 3 * drop(b * 1.0)

    a = torch.ones(64, 64, requires_grad=training_graph)
    b = torch.ones(64, 64, requires_grad=training_graph)
    out = two_dropouts(a, b)
    kept_a, kept_b = torch.isin(out, torch.tensor([2.0, 8.0])), out >= 6.0  # 2 · mask_a + 6 · mask_b
    assert 0.4 < kept_a.float().mean() < 0.6 and 0.4 < kept_b.float().mean() < 0.6
    assert not torch.equal(kept_a, kept_b)  # two masks
    again = two_dropouts(a, b)
    assert not torch.equal(out, again)  # drawn again
    if training_graph:
        out.sum().backward()
        torch.testing.assert_close(a.grad, 2.0 * kept_a.float())
        torch.testing.assert_close(b.grad, 6.0 * kept_b.float())


def test_swap_covers_the_hidden_dropouts_keeps_the_state_dict_and_eval_outputs():
    torch.manual_seed(0)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(5, 64, (2, 16))
    model.eval()
    ref = model(ids, labels=ids).loss
    # embeddings + 2 layers x (attention output, FFN output)
    assert len(hidden_dropouts(model)) == 5
    assert use_keep_mask_dropout(model) == 5
    assert use_keep_mask_dropout(model) == 0  # already swapped
    assert sum(isinstance(m, KeepMaskDropout) for m in model.modules()) == 5
    # the only nn.Dropouts left are attention's (its p goes to SDPA)
    left = [name for name, m in model.elasticbert.named_modules() if type(m) is nn.Dropout]
    assert left and all(name.endswith("attention.self.dropout") for name in left), left
    assert model.state_dict().keys() == before.keys()
    torch.testing.assert_close(model(ids, labels=ids).loss, ref)


def test_compiled_pretraining_step_with_keep_masks_matches_eager_without_dropout_and_trains():
    """dropout 0: the swapped, compiled model gives the eager losses and gradients; dropout 0.1: it trains."""
    torch.manual_seed(0)
    eager = tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    fast = tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    fast.load_state_dict(eager.state_dict())
    compile_regions(fast, dropout_masks="aten")
    assert sum(isinstance(m, KeepMaskDropout) for m in fast.modules()) == 5
    ids = torch.randint(5, 64, (2, 16))
    sop = torch.tensor([0, 1])
    for m in (eager, fast):
        m(ids, labels=ids, sop_labels=sop).loss.backward()
    for (name, a), b in zip(eager.named_parameters(), fast.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)

    torch.manual_seed(1)
    model = compile_regions(tiny_model(), dropout_masks="aten")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=ids, sop_labels=sop).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="dropout_masks"):
        compile_regions(tiny_model(), dropout_masks="curand")


def test_auto_draws_the_masks_with_aten_on_a_gpu_only():
    """`dropout_masks: auto` (the default): aten's masks where the step runs on CUDA (faster on an H200), inductor's
    elsewhere; the device named, not the one the parameters are on before `prepare` moves them."""
    assert resolve_dropout_masks("auto", "cuda") == "aten"
    assert resolve_dropout_masks("auto", torch.device("cuda", 0)) == "aten"
    assert resolve_dropout_masks("auto", "cpu") == "inductor"
    assert resolve_dropout_masks("inductor", "cuda") == "inductor"
    assert resolve_dropout_masks("aten", "cpu") == "aten"
    with pytest.raises(ValueError, match="one of auto, inductor, aten"):
        resolve_dropout_masks("curand", "cpu")

    def swapped(**kwargs) -> int:
        model = compile_regions(tiny_model(), backend="eager", **kwargs)
        return sum(isinstance(m, KeepMaskDropout) for m in model.modules())

    assert swapped() == 0  # a CPU model
    assert swapped(device="cuda") == 5  # bound for the GPU: swapped before it moves there
    assert swapped(dropout_masks="inductor", device="cuda") == 0
    assert PretrainConfig.from_dict({}, []).dropout_masks == "auto"
    assert PretrainConfig.from_dict({}, ["dropout_masks=auto"]).dropout_masks == "auto"  # no compile needed
