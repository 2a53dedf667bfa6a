"""ElasticBERT configuration and models: shapes, heads, save/load, Auto classes, original checkpoint layout."""

from __future__ import annotations

import json

import pytest
import torch
from elasticbert_fixtures import padded_batch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from elue.elasticbert import (
    ElasticBertConfig,
    ElasticBertForSequenceClassification,
    ElasticBertModel,
)

VOCAB, HIDDEN, HEADS, FFN = 99, 32, 2, 37


def tiny_config(**kw) -> ElasticBertConfig:
    args = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    args.update(kw)
    return ElasticBertConfig(**args)


def batch(b=3, s=9, seed=0):
    return padded_batch(VOCAB, b, s, seed)


def test_config_defaults_and_checks():
    c = ElasticBertConfig()
    assert c.model_type == "elasticbert"
    assert c.layer_norm_eps == 1e-8
    assert (c.num_hidden_layers, c.num_output_layers, c.max_output_layers) == (12, 12, 12)
    assert c.exit_layers == list(range(12))
    s = ElasticBertConfig(num_hidden_layers=3, num_output_layers=1, max_output_layers=12)
    assert s.exit_layers == [2]
    with pytest.raises(ValueError):
        ElasticBertModel(tiny_config(num_output_layers=5))
    with pytest.raises(ValueError):
        ElasticBertModel(tiny_config(max_output_layers=2))
    # a count written as text (or a float) in a hand-edited config.json: named, not a TypeError about '<='
    for field, bad in (("num_output_layers", "2"), ("num_hidden_layers", 2.0), ("max_output_layers", True)):
        with pytest.raises(ValueError, match=rf"{field} must be a whole number, got {bad!r}"):
            ElasticBertModel(tiny_config(**{field: bad}))


def test_model_shapes_dynamic():
    torch.manual_seed(0)
    model = ElasticBertModel(tiny_config()).eval()
    ids, mask = batch()
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 9, HIDDEN)
    assert out.pooler_output.shape == (3, HIDDEN)
    assert len(out.exit_hidden_states) == 4 and len(out.exit_pooled_outputs) == 4
    assert len(out.hidden_states) == 5
    torch.testing.assert_close(out.exit_hidden_states[-1], out.last_hidden_state)
    torch.testing.assert_close(out.pooler_output, out.exit_pooled_outputs[-1])
    # subset of exits (grouped training)
    sub = model(ids, attention_mask=mask, exit_layers=[0, 2])
    assert len(sub.exit_pooled_outputs) == 2
    torch.testing.assert_close(sub.exit_pooled_outputs[1], out.exit_pooled_outputs[2])
    with pytest.raises(ValueError):
        ElasticBertModel(tiny_config(num_output_layers=2))(ids, exit_layers=[0])
    with pytest.raises(ValueError, match=r"exit_layers is empty: name at least one of \[0, 1, 2, 3\]"):
        model(ids, exit_layers=[])


def test_classifier_static_and_dynamic_heads():
    torch.manual_seed(0)
    ids, mask = batch()
    labels = torch.tensor([0, 1, 2])
    static = ElasticBertForSequenceClassification(tiny_config(num_output_layers=1, num_labels=3)).eval()
    names = set(static.state_dict())
    assert "classifier.weight" in names and not any(n.startswith("classifiers.") for n in names)
    assert {n for n in names if ".pooler." in n} == {
        "elasticbert.encoder.pooler.3.dense.weight",
        "elasticbert.encoder.pooler.3.dense.bias",
    }
    out = static(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, 3) and out.exit_logits.shape == (1, 3, 3)
    assert out.loss.shape == ()

    dyn = ElasticBertForSequenceClassification(tiny_config(num_labels=3)).eval()
    names = set(dyn.state_dict())
    assert {f"classifiers.{j}.weight" for j in range(4)} <= names and "classifier.weight" not in names
    out = dyn(ids, attention_mask=mask, labels=labels)
    assert out.exit_logits.shape == (4, 3, 3)
    torch.testing.assert_close(out.logits, out.exit_logits[-1])
    ce = torch.nn.functional.cross_entropy
    expect = [ce(out.exit_logits[j], labels) for j in range(4)]
    torch.testing.assert_close(out.exit_losses, torch.stack(expect))
    torch.testing.assert_close(out.loss, sum(expect))
    # exit_logits() helper reproduces the forward per layer
    h = dyn.elasticbert(ids, attention_mask=mask).exit_hidden_states
    torch.testing.assert_close(dyn.exit_logits(1, h[1]), out.exit_logits[1])


def test_regression_loss_is_summed_mse():
    torch.manual_seed(0)
    model = ElasticBertForSequenceClassification(tiny_config(num_labels=1, num_hidden_layers=2)).eval()
    ids, mask = batch()
    y = torch.tensor([0.5, 3.0, 4.5])
    out = model(ids, attention_mask=mask, labels=y)
    assert out.exit_logits.shape == (2, 3, 1)
    expect = sum(torch.nn.functional.mse_loss(out.exit_logits[j].view(-1), y) for j in range(2))
    torch.testing.assert_close(out.loss, expect)


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = ElasticBertForSequenceClassification(tiny_config()).eval()
    ids, mask = batch()
    full = model(ids, attention_mask=mask).exit_logits[:, 2]
    n = int(mask[2].sum())
    alone = model(ids[2:3, :n]).exit_logits[:, 0]
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_agree(tmp_path):
    torch.manual_seed(0)
    ElasticBertForSequenceClassification(tiny_config()).save_pretrained(tmp_path)
    eager = ElasticBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = ElasticBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    ids, mask = batch()
    a = eager(ids, attention_mask=mask, output_attentions=True)
    b = sdpa(ids, attention_mask=mask)
    torch.testing.assert_close(a.exit_logits, b.exit_logits, atol=1e-5, rtol=1e-5)
    assert len(a.attentions) == 4 and a.attentions[0].shape == (3, HEADS, 9, 9)
    # from a config too
    c = tiny_config(attn_implementation="eager")
    assert ElasticBertModel(c).config._attn_implementation == "eager"


def test_attentions_asked_of_sdpa_fall_back_to_eager(tmp_path, caplog):
    """SDPA computes no attention weights: `output_attentions=True` gave a tuple of None (with a warning), where
    a user expects the weights. The layers now run eager attention for that forward (same outputs), with a
    warning naming the default to change, as transformers 4's BERT did."""
    torch.manual_seed(0)
    ElasticBertForSequenceClassification(tiny_config()).save_pretrained(tmp_path)
    sdpa = ElasticBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    eager = ElasticBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask = batch()
    with caplog.at_level("WARNING", logger="elue.elasticbert.modeling_elasticbert"):
        out = sdpa(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    want = eager(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 4
    for a, b in zip(out.attentions, want.attentions, strict=True):
        assert a.shape == (3, HEADS, 9, 9)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a.sum(-1), torch.ones(3, HEADS, 9))
    torch.testing.assert_close(
        out.exit_logits, sdpa(ids, attention_mask=mask).exit_logits, atol=1e-5, rtol=1e-5
    )
    assert len(out.hidden_states) == 5
    assert sdpa.config._attn_implementation == "sdpa"  # the fallback is for that forward only
    assert any("falls back to eager" in r.getMessage() for r in caplog.records), caplog.text


def test_residual_stream_dtype_under_autocast():
    ids, mask = batch()
    dtypes = {}
    for fp32 in (True, False):
        torch.manual_seed(0)
        model = ElasticBertModel(tiny_config(residual_in_fp32=fp32))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, attention_mask=mask, output_hidden_states=True)
        dtypes[fp32] = {h.dtype for h in out.hidden_states}
        if fp32:
            reference = out.last_hidden_state.float()
        else:  # the same computation up to bf16 rounding of the stream
            torch.testing.assert_close(out.last_hidden_state.float(), reference, atol=0.1, rtol=0.05)
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}
    # without autocast the setting changes nothing
    plain = ElasticBertModel(tiny_config(residual_in_fp32=False))(ids, attention_mask=mask)
    assert plain.last_hidden_state.dtype == torch.float32


def test_save_load_round_trip_and_auto(tmp_path):
    torch.manual_seed(0)
    model = ElasticBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "elasticbert"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ElasticBertConfig)
    loaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, ElasticBertForSequenceClassification)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask = batch()
    torch.testing.assert_close(
        loaded.eval()(ids, attention_mask=mask).exit_logits, model(ids, attention_mask=mask).exit_logits
    )
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, ElasticBertModel)


# ---- the original checkpoint layout -------------------------------------------------------------------------


def original_state_dict(layers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named and shaped like fnlp/elasticbert-base's (an ElasticBertForMaskedLM), built by hand."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    sd = {
        "elasticbert.embeddings.position_ids": torch.arange(64).expand(1, -1).clone(),
        "elasticbert.embeddings.word_embeddings.weight": r(VOCAB, HIDDEN),
        "elasticbert.embeddings.position_embeddings.weight": r(64, HIDDEN),
        "elasticbert.embeddings.token_type_embeddings.weight": r(2, HIDDEN),
        "elasticbert.embeddings.LayerNorm.weight": 1 + r(HIDDEN),
        "elasticbert.embeddings.LayerNorm.bias": r(HIDDEN),
    }
    for i in range(layers):
        p = f"elasticbert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            sd[p + f"attention.self.{name}.weight"] = r(HIDDEN, HIDDEN)
            sd[p + f"attention.self.{name}.bias"] = r(HIDDEN)
        sd[p + "attention.output.dense.weight"] = r(HIDDEN, HIDDEN)
        sd[p + "attention.output.dense.bias"] = r(HIDDEN)
        sd[p + "attention.output.LayerNorm.weight"] = 1 + r(HIDDEN)
        sd[p + "attention.output.LayerNorm.bias"] = r(HIDDEN)
        sd[p + "intermediate.dense.weight"] = r(FFN, HIDDEN)
        sd[p + "intermediate.dense.bias"] = r(FFN)
        sd[p + "output.dense.weight"] = r(HIDDEN, FFN)
        sd[p + "output.dense.bias"] = r(HIDDEN)
        sd[p + "output.LayerNorm.weight"] = 1 + r(HIDDEN)
        sd[p + "output.LayerNorm.bias"] = r(HIDDEN)
        sd[f"elasticbert.encoder.pooler.{i}.dense.weight"] = r(HIDDEN, HIDDEN)
        sd[f"elasticbert.encoder.pooler.{i}.dense.bias"] = r(HIDDEN)
    # the masked-LM head of the released checkpoint
    sd["cls.predictions.bias"] = r(VOCAB)
    sd["cls.predictions.transform.dense.weight"] = r(HIDDEN, HIDDEN)
    sd["cls.predictions.transform.dense.bias"] = r(HIDDEN)
    sd["cls.predictions.transform.LayerNorm.weight"] = 1 + r(HIDDEN)
    sd["cls.predictions.transform.LayerNorm.bias"] = r(HIDDEN)
    sd["cls.predictions.decoder.weight"] = sd["elasticbert.embeddings.word_embeddings.weight"]
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    return sd


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("elasticbert-original")
    config = {  # the original config.json layout (transformers 4.x era)
        "architectures": ["ElasticBertForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": FFN,
        "layer_norm_eps": 1e-08,
        "max_output_layers": 4,
        "max_position_embeddings": 64,
        "model_type": "elasticbert",
        "num_attention_heads": HEADS,
        "num_hidden_layers": 4,
        "num_output_layers": 4,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "transformers_version": "4.9.2",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": VOCAB,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    sd = original_state_dict(4)
    torch.save(sd, path / "pytorch_model.bin")
    return path, sd


def test_original_layout_loads_without_missing_or_unexpected_keys(original_checkpoint):
    path, sd = original_checkpoint
    model, info = ElasticBertModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, sd["elasticbert." + name])

    config = ElasticBertConfig.from_pretrained(path, num_labels=3)
    dyn, info = ElasticBertForSequenceClassification.from_pretrained(
        path, config=config, output_loading_info=True
    )
    # only the new classifiers are missing; the MLM head is ignored
    assert info["missing_keys"] == {f"classifiers.{j}.{w}" for j in range(4) for w in ("weight", "bias")}
    assert not info["unexpected_keys"]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_static_k_layers_take_layer_k_pooler(original_checkpoint, k):
    path, sd = original_checkpoint
    # the original documented usage, plus a layer count
    config = ElasticBertConfig.from_pretrained(path, num_output_layers=1, num_hidden_layers=k)
    model, info = ElasticBertForSequenceClassification.from_pretrained(
        path, config=config, output_loading_info=True
    )
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert len(model.elasticbert.encoder.layer) == k
    pooler = model.elasticbert.encoder.pooler[k - 1]
    torch.testing.assert_close(pooler.dense.weight, sd[f"elasticbert.encoder.pooler.{k - 1}.dense.weight"])
    assert all(model.elasticbert.encoder.pooler[i] is None for i in range(4) if i != k - 1)
    # the k-layer static model equals the first k layers of the full model
    full = ElasticBertModel.from_pretrained(path).eval()
    ids, mask = batch()
    ref = full(ids, attention_mask=mask).exit_pooled_outputs[k - 1]
    got = model.eval().elasticbert(ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("k", [1, 3])
def test_static_k_layers_take_layer_k_classifier_of_a_joint_checkpoint(tmp_path, k):
    torch.manual_seed(0)
    joint = ElasticBertForSequenceClassification(tiny_config(num_labels=3)).eval()  # an exit per layer
    joint.save_pretrained(tmp_path / "joint")
    static, info = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path / "joint", num_output_layers=1, num_hidden_layers=k, output_loading_info=True
    )
    # layer k's pooler and classifier, the other exits left out quietly
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask = batch()
    torch.testing.assert_close(
        static(ids, attention_mask=mask).logits, joint(ids, attention_mask=mask).exit_logits[k - 1]
    )
    # saved under its own name, and loads back as it is
    static.save_pretrained(tmp_path / "static")
    again, info = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path / "static", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    torch.testing.assert_close(again.classifier.weight, joint.classifiers[k - 1].weight)


def test_static_model_from_top_exit_checkpoint_takes_the_right_classifier(tmp_path):
    """Exits on layers 3 and 4 only: `classifiers.0` is layer 3's, so static k=3 takes it and k=2 (no exit
    there) reports its exit missing rather than take another layer's classifier."""
    torch.manual_seed(0)
    joint = ElasticBertForSequenceClassification(tiny_config(num_labels=3, num_output_layers=2)).eval()
    joint.save_pretrained(tmp_path)
    static = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path, num_output_layers=1, num_hidden_layers=3
    )
    torch.testing.assert_close(static.classifier.weight, joint.classifiers[0].weight)
    _, info = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path, num_output_layers=1, num_hidden_layers=2, output_loading_info=True
    )
    exit_2 = ("classifier", "elasticbert.encoder.pooler.1.dense")
    assert info["missing_keys"] == {f"{name}.{w}" for name in exit_2 for w in ("weight", "bias")}


@pytest.mark.parametrize(
    "sizes, exits_of_joint",
    [
        ({"num_output_layers": 2}, [2, 3]),  # the top 2 of 4 exits: classifiers renumbered down
        ({"num_hidden_layers": 3, "num_output_layers": 2}, [1, 2]),  # 3 layers, exits on layers 2 and 3
    ],
)
def test_fewer_exits_take_the_classifiers_of_their_own_layers(tmp_path, sizes, exits_of_joint):
    """Classifiers are numbered from the first exit layer: loaded with other exits, each exit must get its own
    layer's classifier, not the one at the same position."""
    torch.manual_seed(0)
    joint = ElasticBertForSequenceClassification(tiny_config(num_labels=3)).eval()  # 4 layers, 4 exits
    joint.save_pretrained(tmp_path / "joint")
    fewer, info = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path / "joint", output_loading_info=True, **sizes
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask = batch()
    want = joint(ids, attention_mask=mask).exit_logits
    got = fewer.eval()(ids, attention_mask=mask).exit_logits
    assert len(got) == len(exits_of_joint)
    for g, j in zip(got, exits_of_joint, strict=True):
        torch.testing.assert_close(g, want[j])
    # saved under its own numbering, and loads back as it is
    fewer.save_pretrained(tmp_path / "fewer")
    again, info = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path / "fewer", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    torch.testing.assert_close(again.classifiers[0].weight, joint.classifiers[exits_of_joint[0]].weight)
    # and back up to every exit: the exits it kept get their classifiers, the others are reported missing
    more, info = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path / "fewer", num_hidden_layers=4, num_output_layers=4, output_loading_info=True
    )
    kept = [j + (4 - sizes.get("num_hidden_layers", 4)) for j in exits_of_joint]  # their layers in 4
    if sizes.get("num_hidden_layers"):
        return  # a 3-layer checkpoint: its layer 4 comes fresh, its exits are not the joint model's layers
    assert {k.split(".")[1] for k in info["missing_keys"] if k.startswith("classifiers.")} == {
        str(j) for j in range(4) if j not in kept
    }, info
    for j in range(4):
        same = torch.equal(more.classifiers[j].weight, joint.classifiers[j].weight)
        assert same == (j in kept), j  # the others fresh, not another layer's classifier
        if (
            j not in kept
        ):  # before: the load put the checkpoint's exit of the same position there, and it stayed
            assert not any(torch.equal(more.classifiers[j].weight, c.weight) for c in fewer.classifiers), j


def test_elue_modules_names_and_calls():
    torch.manual_seed(0)
    model = ElasticBertForSequenceClassification(tiny_config(num_hidden_layers=2)).eval()
    mods = model.elue_modules()
    assert list(mods) == ["emb", "layer_1", "layer_2", "exit_1", "exit_2"]
    ids = torch.randint(1, VOCAB, (1, 5))
    with torch.no_grad():
        h = mods["emb"](ids)
        h = mods["layer_2"](mods["layer_1"](h))
        logits = mods["exit_2"](h[:, 0])
        torch.testing.assert_close(logits, model(ids).exit_logits[1])
    static = ElasticBertForSequenceClassification(tiny_config(num_hidden_layers=3, num_output_layers=1))
    assert list(static.elue_modules()) == ["emb", "layer_1", "layer_2", "layer_3", "exit_3"]


def test_base_size_costs_match_spec_reference():
    """Spec §3 reference: ElasticBERT-base layer 7,080,960·n + 1,560·n² MACs, emb 1,536·n, exit 589,824 + 1,536;
    parameters ≈ 116.0M with 12 exits, ≈ 109.5M static 12 layers (built on the meta device: no weights)."""
    flops = pytest.importorskip("elue.costs.flops")
    with torch.device("meta"):
        dynamic = ElasticBertForSequenceClassification(ElasticBertConfig())
        static = ElasticBertForSequenceClassification(ElasticBertConfig(num_output_layers=1))
    mods = dynamic.elue_modules()
    for n in (10, 128):
        assert flops.module_flops(mods["layer_5"], (n, 768)) == 2 * (7_080_960 * n + 1_560 * n * n)
        assert flops.module_flops(mods["emb"], (n,)) == 2 * 1_536 * n
    assert flops.module_flops(mods["exit_12"], (768,)) == 2 * (589_824 + 1_536)
    assert round(sum(p.numel() for p in dynamic.parameters()) / 1e6, 1) == 116.0
    assert round(sum(p.numel() for p in static.parameters()) / 1e6, 1) == 109.5


def test_auto_masked_lm_and_pretraining_registered(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    from elue.elasticbert.pretraining.modeling_pretraining import (
        ElasticBertForMaskedLM,
        ElasticBertForPreTraining,
    )

    config = ElasticBertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    ElasticBertForPreTraining(config).save_pretrained(tmp_path)
    assert isinstance(AutoModelForPreTraining.from_pretrained(tmp_path), ElasticBertForPreTraining)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(tmp_path), ElasticBertForMaskedLM)


def test_load_report_does_not_contradict_the_renumbered_exits(tmp_path, caplog):
    """A model with other exits than its checkpoint takes each exit's classifier by layer; transformers' load
    report counted them by position. Before: a top-2-exit checkpoint loaded with 4 exits was reported as
    'classifiers.{2, 3} MISSING' (they were loaded) while exits 1, 2 were the fresh ones."""
    from transformers.utils import logging as hf_logging

    from elue.elasticbert import ElasticBertForSequenceClassification

    torch.manual_seed(0)
    ElasticBertForSequenceClassification(tiny_config(num_output_layers=2)).save_pretrained(tmp_path / "top2")
    ElasticBertForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "all4")
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_propagation()  # to caplog
    try:
        more, info = ElasticBertForSequenceClassification.from_pretrained(
            tmp_path / "top2", num_output_layers=4, output_loading_info=True
        )
        err, _ = caplog.text, caplog.clear()
        assert "classifiers." not in err, err
        assert "no classifier for the exit(s) on layer(s) 1, 2" in err
        assert {k for k in info["missing_keys"] if k.startswith("classifiers.")} == {
            f"classifiers.{j}.{w}" for j in (0, 1) for w in ("weight", "bias")
        }
        # fewer exits than the checkpoint: the ones used are not reported as unexpected either
        fewer, info = ElasticBertForSequenceClassification.from_pretrained(
            tmp_path / "all4", num_output_layers=2, output_loading_info=True
        )
        assert "classifiers." not in caplog.text, caplog.text
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(old)


# ---- static <-> multi-exit checkpoints: each exit keeps the classifier of its own layer ------------------------


def _load_quietly_reporting(path, caplog, **kwargs):
    """(model, loading info, the warnings logged) of `from_pretrained(path, **kwargs)`."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_propagation()  # to caplog
    caplog.clear()
    try:
        model, info = ElasticBertForSequenceClassification.from_pretrained(
            path, output_loading_info=True, **kwargs
        )
        return model.eval(), info, caplog.text
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(old)


@pytest.mark.parametrize("k", [1, 2])
def test_static_and_multi_exit_checkpoints_keep_each_layers_classifier(tmp_path, caplog, k):
    """2 layers, hidden 32. Multi-exit -> static k takes exit k's classifier; static k -> multi-exit puts that
    classifier back on the exit of layer k (before: every exit started fresh, the trained one too) and the
    other exit starts fresh, reported missing. Exit k's logits are the same at every step."""
    torch.manual_seed(0)
    joint = ElasticBertForSequenceClassification(tiny_config(num_hidden_layers=2, num_labels=3)).eval()
    joint.save_pretrained(tmp_path / "joint")
    ids, mask = batch()
    want = joint(ids, attention_mask=mask).exit_logits[k - 1]

    static, info, _ = _load_quietly_reporting(
        tmp_path / "joint", caplog, num_output_layers=1, num_hidden_layers=k
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(static(ids, attention_mask=mask).logits, want)
    static.save_pretrained(tmp_path / "static")
    assert json.loads((tmp_path / "static" / "config.json").read_text())["num_hidden_layers"] == k

    multi, info, log = _load_quietly_reporting(
        tmp_path / "static", caplog, num_hidden_layers=2, num_output_layers=2
    )
    assert torch.equal(multi(ids, attention_mask=mask).exit_logits[k - 1], want)
    other = 2 - k  # 0-based index of the exit the static model had no classifier for
    fresh = {f"classifiers.{other}.weight", f"classifiers.{other}.bias"}
    assert {key for key in info["missing_keys"] if key.startswith("classifier")} == fresh, info
    assert not info["unexpected_keys"], info  # the static `classifier` is used, not left over
    assert f"no classifier for the exit(s) on layer(s) {other + 1}" in log, log
    assert "classifier.weight" not in log and "classifiers." not in log, log
    # fresh: neither the static head nor the joint model's head of that layer
    assert not torch.equal(multi.classifiers[other].weight, static.classifier.weight)
    assert not torch.equal(multi.classifiers[other].weight, joint.classifiers[other].weight)
    # saved under its own names, and loads back as it is
    multi.save_pretrained(tmp_path / "multi")
    again, info, _ = _load_quietly_reporting(tmp_path / "multi", caplog)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(again(ids, attention_mask=mask).exit_logits[k - 1], want)


def test_static_checkpoint_into_static_model_of_another_depth_starts_a_fresh_head(tmp_path, caplog):
    """A static 2-layer model's `classifier` was trained on layer 2: a static 1-layer model does not take it
    for its layer 1 (reported missing, like its layer-1 pooler); the same depth loads it as before."""
    torch.manual_seed(0)
    static = ElasticBertForSequenceClassification(
        tiny_config(num_hidden_layers=2, num_output_layers=1, num_labels=3)
    ).eval()
    static.save_pretrained(tmp_path)
    same, info, _ = _load_quietly_reporting(tmp_path, caplog)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(same.classifier.weight, static.classifier.weight)
    shallow, info, log = _load_quietly_reporting(tmp_path, caplog, num_hidden_layers=1)
    assert {key for key in info["missing_keys"] if key.startswith("classifier")} == {
        "classifier.weight",
        "classifier.bias",
    }, info
    assert not info["unexpected_keys"], info
    assert "no classifier for the exit(s) on layer(s) 1" in log, log
    assert not torch.equal(shallow.classifier.weight, static.classifier.weight)


def test_static_checkpoint_with_another_label_count_reports_the_head_mismatched(tmp_path, caplog):
    """Static 2-label -> 3 exits of 3 labels: the head of layer k cannot be used; it starts fresh and is
    reported mismatched (what `elue finetune` reads to say the heads start from random weights)."""
    torch.manual_seed(0)
    ElasticBertForSequenceClassification(
        tiny_config(num_hidden_layers=2, num_output_layers=1, num_labels=2)
    ).save_pretrained(tmp_path)
    config = ElasticBertConfig.from_pretrained(tmp_path, num_output_layers=2, num_labels=3)
    _, info, log = _load_quietly_reporting(tmp_path, caplog, config=config, ignore_mismatched_sizes=True)
    assert {key[0] for key in info["mismatched_keys"]} == {"classifiers.1.weight"}, info
    assert {key for key in info["missing_keys"] if key.startswith("classifier")} == {
        "classifiers.0.weight",
        "classifiers.0.bias",
    }, info
    assert "another shape" in log, log


def test_an_input_longer_than_the_position_table_is_named():
    model = ElasticBertForSequenceClassification(tiny_config()).eval()  # 64 positions
    with pytest.raises(ValueError, match=r"70 positions, more than the model's 64 .*max_length=64"):
        model(torch.ones(1, 70, dtype=torch.long))
    assert model(torch.ones(1, 64, dtype=torch.long)).logits.shape[0] == 1  # the limit itself is fine
