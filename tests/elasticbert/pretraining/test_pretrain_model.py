"""ElasticBertForPreTraining: per-exit losses, heads per exit, gradient equilibrium over the active exits,
ElasticBertForMaskedLM loading, BERT conversion, LAMB."""

from __future__ import annotations

import pytest
import torch

from elue.elasticbert.pretraining.modeling_pretraining import (
    ElasticBertForMaskedLM,
    ElasticBertForPreTraining,
    load_pretraining_model,
)
from elue.elasticbert.pretraining.optim import Lamb, fill_lazy_state, parameter_groups

TINY = dict(
    vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, 50, (3, 12), generator=g)
    labels = torch.full_like(x, -100)
    labels[:, 2] = x[:, 2]
    labels[:, 7] = x[:, 7]
    return {"input_ids": x, "labels": labels, "sop_labels": torch.tensor([0, 1, 1])}


def test_losses_per_exit_and_sum():
    torch.manual_seed(0)
    model, _ = load_pretraining_model(None, TINY)
    out = model(**_batch())
    assert out.exit_layers == (0, 1, 2, 3) and out.mlm_loss_sums.shape == (4,) and int(out.num_masked) == 6
    expected = out.mlm_loss_sums.sum() / 6 + out.sop_loss_sums.sum() / 3
    assert torch.allclose(out.loss, expected)
    positions = (_batch()["labels"].reshape(-1) != -100).nonzero().squeeze(1)  # as the collator gives them
    given = model(**_batch(), mlm_positions=positions)
    torch.testing.assert_close(given.mlm_loss_sums, out.mlm_loss_sums)
    assert int(given.num_masked) == 6
    sub = model(**_batch(), exit_layers=[3, 1])
    assert sub.exit_layers == (1, 3)
    assert torch.allclose(sub.mlm_loss_sums, out.mlm_loss_sums[[1, 3]], atol=1e-5)  # same forward values


def _per_exit_reference(model, batch, layers):
    """The loss of the module docstring computed exit by exit with each head's own modules (no batching)."""
    import torch.nn.functional as F

    out = model.elasticbert(batch["input_ids"], exit_layers=layers, return_dict=True)
    decoder = model.elasticbert.embeddings.word_embeddings.weight
    where = batch["labels"] != -100
    targets = batch["labels"][where]
    mlm, sop = [], []
    for layer, hidden, pooled in zip(layers, out.exit_hidden_states, out.exit_pooled_outputs, strict=True):
        mlm.append(
            F.cross_entropy(model.cls.predictions[layer](hidden[where], decoder), targets, reduction="sum")
        )
        sop_logits = model.cls.seq_relationship[layer](pooled)
        sop.append(F.cross_entropy(sop_logits, batch["sop_labels"], reduction="sum"))
    mlm, sop = torch.stack(mlm), torch.stack(sop)
    return mlm.sum() / targets.numel() + sop.sum() / batch["sop_labels"].numel(), mlm, sop


@pytest.mark.parametrize("layers", [[0, 1, 2, 3], [1, 3]])
def test_batched_heads_equal_exit_by_exit(layers):
    torch.manual_seed(0)
    model, _ = load_pretraining_model(None, TINY)
    batch = _batch(1)
    out = model(**batch, exit_layers=layers)
    out.loss.backward()
    got = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    loss, mlm, sop = _per_exit_reference(model, batch, layers)
    loss.backward()
    torch.testing.assert_close(out.mlm_loss_sums, mlm)
    torch.testing.assert_close(out.sop_loss_sums, sop)
    torch.testing.assert_close(out.loss, loss)
    want = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5, msg=k)


def test_compile_regions_keeps_numbers_and_names():
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from elue.elasticbert.pretraining.modeling_pretraining import compile_regions

    torch.manual_seed(0)
    model, _ = load_pretraining_model(None, TINY)
    batch = _batch(2)
    want = model(**batch).loss
    names = set(model.state_dict())
    dynamo.reset()
    counters.clear()
    compile_regions(model, backend="eager")  # dynamo capture only: no C compiler needed
    got = model(**batch).loss
    torch.testing.assert_close(got, want)
    assert counters["frames"]["ok"] >= 2  # a layer and the MLM heads were captured
    assert set(model.state_dict()) == names  # no `_orig_mod.` prefixes: checkpoints unchanged
    dynamo.reset()


def test_heads_are_per_exit_and_decoder_is_tied():
    model, _ = load_pretraining_model(None, TINY)
    p = model.cls.predictions
    assert p[0].transform.dense.weight.data_ptr() != p[1].transform.dense.weight.data_ptr()
    assert len(model.head_parameters(2)) == 2 + 4 + 1 + 2  # pooler, transform (dense+LN), bias, SOP
    x = _batch()
    loss = model(**x).loss
    loss.backward()
    assert model.elasticbert.embeddings.word_embeddings.weight.grad is not None


def test_gradient_equilibrium_over_active_exits():
    """With exits {1, 3} active, layer 0's gradient is the mean of the two exits' loss gradients."""
    torch.manual_seed(0)
    model, _ = load_pretraining_model(None, TINY)
    x = _batch()
    w = model.elasticbert.encoder.layer[0].output.dense.weight

    def grad_of(layers, ge=True):
        model.zero_grad(set_to_none=True)
        model.config.gradient_equilibrium = ge
        model(**x, exit_layers=layers).loss.backward()
        return w.grad.clone()

    g1, g3 = grad_of([1]), grad_of([3])
    assert torch.allclose(grad_of([1, 3]), (g1 + g3) / 2, atol=1e-6)
    assert torch.allclose(grad_of([1, 3], ge=False), g1 + g3, atol=1e-6)


def _saved_tiny_model(path):
    torch.manual_seed(0)
    model, _ = load_pretraining_model(None, TINY)
    model.save_pretrained(path)
    return model.eval()


def _check_masked_lm_of_exit(model, path, k: int, **load_kwargs) -> None:
    """The masked LM loaded from `path` with `load_kwargs` has k layers and predicts as exit k's head does."""
    x = _batch()["input_ids"]
    mlm = ElasticBertForMaskedLM.from_pretrained(path, **load_kwargs).eval()
    assert mlm.config.num_hidden_layers == k
    hidden = model.elasticbert(x, exit_layers=[k - 1]).exit_hidden_states[0]
    ref = model.cls.predictions[k - 1](hidden, model.elasticbert.embeddings.word_embeddings.weight)
    assert torch.allclose(mlm(x).logits, ref, atol=1e-5)


def test_masked_lm_loads_a_pretraining_head(tmp_path):
    model = _saved_tiny_model(tmp_path)
    for k in (4, 2):
        _check_masked_lm_of_exit(model, tmp_path, k, num_hidden_layers=k)
    again = ElasticBertForPreTraining.from_pretrained(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bert_checkpoint_converts(tokenizer_path):
    from transformers import AutoModel

    model, notes = load_pretraining_model(tokenizer_path)
    assert model.config.num_hidden_layers == 6 and model.config.layer_norm_eps == pytest.approx(1e-12)
    bert = AutoModel.from_pretrained(tokenizer_path).eval()
    model.eval()
    x = torch.randint(1000, 3000, (2, 9))
    assert torch.allclose(bert(x).last_hidden_state, model.elasticbert(x).last_hidden_state, atol=1e-5)
    assert torch.allclose(bert(x).pooler_output, model.elasticbert(x).exit_pooled_outputs[-1], atol=1e-5)
    assert "converted BERT checkpoint" in notes[0]


def test_lamb_trust_ratio_and_skips_gradless():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10, 10))
    idle = torch.nn.Parameter(torch.randn(3))
    before = idle.detach().clone()
    opt = Lamb([w, idle], lr=0.1, weight_decay=0.0)
    start = (w**2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        (w**2).sum().backward()
        w0 = w.detach().clone()
        opt.step()
        # a LAMB step moves each tensor by lr * ||w|| (trust ratio x unit-ish Adam update direction)
        step = (w.detach() - w0).norm() / w0.norm()
        assert step <= 0.1 + 1e-4
    assert (w**2).sum().item() < 0.2 * start
    assert torch.equal(idle.detach(), before)


def test_lamb_leaves_biases_and_layer_norms_out_of_layer_adaptation():
    """As in the paper's LAMB (ALBERT's, TF-Addons', NVIDIA's default): the parameters without weight decay take
    Adam's step itself, no trust ratio. With the ratio, a bias starting at 0 moved by lr * ||b|| a step: after 100
    steps towards 1 it stood at 0.03 where Adam's stands at 0.78."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 8))
    reference = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 8))
    reference.load_state_dict(model.state_dict())
    lamb = Lamb(parameter_groups(model, 0.01), lr=0.01, eps=1e-6)
    adam = torch.optim.Adam([reference[0].weight, reference[0].bias, reference[1].bias], lr=0.01, eps=1e-6)
    matrix = Lamb([reference[1].weight], lr=0.01, eps=1e-6, weight_decay=0.01)
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    for _ in range(5):
        for net, opts in ((model, [lamb]), (reference, [adam, matrix])):
            net.zero_grad()
            ((net(x) - y) ** 2).sum().backward()
            for opt in opts:
                opt.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)

    bias = torch.nn.Parameter(torch.zeros(64))
    opt = Lamb([{"params": [bias], "weight_decay": 0.0, "layer_adaptation": False}], lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        ((bias - 1) ** 2).sum().backward()
        opt.step()
    assert bias.mean() > 0.7

    # a state saved before the setting existed resumes under this optimiser's groups
    state = lamb.state_dict()
    for group in state["param_groups"]:
        del group["layer_adaptation"]
    again = Lamb(parameter_groups(model, 0.01), lr=0.01)
    again.load_state_dict(state)
    assert [g["layer_adaptation"] for g in again.param_groups] == [True, False]


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_filled_first_states_change_no_update(kind):
    """A parameter that no step has reached yet (an idle exit) given its first state ahead (zeros, step 0, as the
    FSDP trainer does before a checkpoint) takes the same updates as one whose state the optimiser makes itself."""

    def run(fill: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        groups = parameter_groups(net, 0.01)
        opt = (
            torch.optim.AdamW(groups, lr=0.01)
            if kind == "adamw"
            else Lamb(groups, lr=0.01, weight_decay=0.01)
        )
        x = torch.randn(8, 4)
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            out = net(x) if step >= 2 else net[0](x)  # the second layer idle for two steps
            out.pow(2).sum().backward()
            opt.step()
            if fill and step == 0:
                assert fill_lazy_state(opt) == 2 and all(opt.state[p] for p in net.parameters())
        return [p.detach().clone() for p in net.parameters()]

    for a, b in zip(run(False), run(True), strict=True):
        assert torch.equal(a, b)
    assert fill_lazy_state(torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))])) == 0  # no form to copy


def test_masked_lm_of_an_exit_runs_the_layers_below_it(tmp_path):
    """exit_layer=k is the masked LM of exit k: k layers under head k (head k was put on the top layer's
    states, which it was never trained on, and predicted nonsense without a word)."""
    model = _saved_tiny_model(tmp_path)
    for k in (2, 1):
        _check_masked_lm_of_exit(model, tmp_path, k, exit_layer=k)
    assert ElasticBertForMaskedLM.from_pretrained(tmp_path, exit_layer=3, num_hidden_layers=3) is not None
    with pytest.raises(ValueError, match="exit_layer 2 is the head of layer 2, num_hidden_layers 3"):
        ElasticBertForMaskedLM.from_pretrained(tmp_path, exit_layer=2, num_hidden_layers=3)
