"""ElasticBERT under the parts of the transformers / torch API a Hugging Face user reaches for beyond training
and the classification pipeline: tracing, the masked LM's forward options and vocabulary resizing, the Auto
classes and pipelines on saved folders."""

from __future__ import annotations

import warnings

import elasticbert_fixtures as fixtures
import pytest
import torch

from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification

VOCAB, SIZES, tiny = fixtures.TINY_VOCAB, fixtures.TINY_SIZES, fixtures.tiny_classifier


def padded_batch(b: int = 4, s: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return fixtures.padded_batch(VOCAB, b, s, seed)


def test_jit_trace_on_an_unpadded_batch_still_reads_the_mask():
    """The forward drops an all-ones mask (no padding: SDPA's fast path), a branch on the mask's values:
    traced on an unpadded example, the traced model ignored the mask of every later batch."""
    model = tiny(num_labels=3, return_dict=False)
    with torch.no_grad():  # weights under which padding changes the logits clearly
        for name, param in model.named_parameters():
            if name.endswith("weight") and "LayerNorm" not in name:
                param.normal_(0, 0.5)
    ids, mask = padded_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation
        traced = torch.jit.trace(model, (ids, torch.ones_like(mask)), check_trace=False)
    with torch.no_grad():
        want = model(ids, attention_mask=mask)[1]  # exit_logits
        unmasked = model(ids)[1]
        got = traced(ids, mask)[1]
    assert not torch.allclose(want, unmasked, atol=1e-3)
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------------------------------------------
# the masked LM and the pre-training model


def _masked_lm(seed: int = 0, **kw):
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForMaskedLM

    torch.manual_seed(seed)
    return ElasticBertForMaskedLM(ElasticBertConfig(**{**SIZES, **kw})).eval()


def test_resize_token_embeddings_resizes_the_vocabulary_biases(tmp_path):
    """The decoder is the (tied) embedding matrix, resized with it; the heads' biases were left at the old
    vocabulary size, so every forward after `resize_token_embeddings` failed."""
    from elue.elasticbert.pretraining.modeling_pretraining import (
        ElasticBertForMaskedLM,
        ElasticBertForPreTraining,
    )

    model = _masked_lm()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    old_bias = model.cls.predictions.bias.detach().clone()
    model.resize_token_embeddings(VOCAB + 3, pad_to_multiple_of=8)  # mean_resizing: new biases the old mean
    size = model.config.vocab_size
    assert size == 104 and model.cls.predictions.bias.shape == (size,)
    torch.testing.assert_close(model.cls.predictions.bias[:VOCAB], old_bias)
    added = model.cls.predictions.bias[VOCAB:]
    torch.testing.assert_close(added, torch.full_like(added, old_bias.mean()))
    ids, mask = padded_batch()
    ids[0, 1] = VOCAB + 2  # a new token
    out = model(ids, attention_mask=mask, labels=ids)
    assert out.logits.shape == (*ids.shape, size) and torch.isfinite(out.loss)
    model.save_pretrained(tmp_path / "mlm")
    again = ElasticBertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    torch.testing.assert_close(again(ids, attention_mask=mask).logits, out.logits)

    torch.manual_seed(0)
    pretraining = ElasticBertForPreTraining(ElasticBertConfig(**SIZES)).eval()
    pretraining.resize_token_embeddings(VOCAB + 3, mean_resizing=False)  # new biases 0
    for head in pretraining.cls.predictions:
        assert head.bias.shape == (VOCAB + 3,) and not head.bias[VOCAB:].any()
    labels = ids.clone()
    labels[:, ::2] = -100
    out = pretraining(ids, attention_mask=mask, labels=labels, sop_labels=torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(out.loss)


def test_masked_lm_takes_berts_forward_options():
    """`BertForMaskedLM`'s position_ids, inputs_embeds, output_hidden_states, output_attentions and
    return_dict were swallowed by **kwargs: ignored without a word (shifted positions gave the unshifted
    logits, no hidden states, a dict for return_dict=False)."""
    # eager: under SDPA, output_attentions' fallback warning (once a process) is test_modeling's to see
    model = _masked_lm(attn_implementation="eager")
    ids, mask = padded_batch()
    ref = model(ids, attention_mask=mask, labels=ids)
    assert ref.hidden_states is None and ref.attentions is None
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    torch.testing.assert_close(model(ids, attention_mask=mask, position_ids=pos).logits, ref.logits)
    assert not torch.allclose(model(ids, attention_mask=mask, position_ids=pos + 3).logits, ref.logits)
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds, attention_mask=mask).logits, ref.logits)
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == SIZES["num_hidden_layers"] + 1
    assert out.hidden_states[-1].shape == (*ids.shape, SIZES["hidden_size"])
    assert len(out.attentions) == SIZES["num_hidden_layers"] and out.attentions[0].shape == (4, 2, 9, 9)
    loss, logits = model(ids, attention_mask=mask, labels=ids, return_dict=False)
    torch.testing.assert_close(loss, ref.loss)
    torch.testing.assert_close(logits, ref.logits)


def test_pretraining_forward_takes_berts_options_and_refuses_unknown_ones():
    """`ElasticBertForPreTraining.forward` swallowed every other keyword into **kwargs and ignored it:
    position_ids (the loss of unshifted positions), inputs_embeds (then failed for want of input_ids), BERT's
    `next_sentence_label` (no sentence-order loss, without a word)."""
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForPreTraining

    torch.manual_seed(0)
    model = ElasticBertForPreTraining(ElasticBertConfig(**SIZES, attn_implementation="eager")).eval()
    ids, mask = padded_batch()
    labels = torch.where(mask.bool(), ids, -100)
    labels[:, ::2] = -100
    sop = torch.tensor([0, 1, 0, 1])
    ref = model(ids, attention_mask=mask, labels=labels, sop_labels=sop)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    torch.testing.assert_close(
        model(ids, attention_mask=mask, labels=labels, position_ids=pos).mlm_loss_sums, ref.mlm_loss_sums
    )
    shifted = model(ids, attention_mask=mask, labels=labels, position_ids=pos + 3)
    assert not torch.allclose(shifted.mlm_loss_sums, ref.mlm_loss_sums)
    embeds = model.get_input_embeddings()(ids)
    got = model(inputs_embeds=embeds, attention_mask=mask, labels=labels, sop_labels=sop)
    torch.testing.assert_close(got.loss, ref.loss)
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == SIZES["num_hidden_layers"] + 1 and len(out.attentions) == 2
    loss, exit_layers, *_ = model(ids, attention_mask=mask, labels=labels, sop_labels=sop, return_dict=False)
    assert loss == ref.loss and exit_layers == (0, 1)
    with pytest.raises(TypeError, match=r"next_sentence_label \(the sentence-order labels are `sop_labels`"):
        model(ids, attention_mask=mask, labels=labels, next_sentence_label=sop)


# --------------------------------------------------------------------------------------------------------------
# Auto classes and pipelines on saved folders

WORDS = fixtures.TINY_WORDS


def test_auto_tokenizer_and_fill_mask_pipeline_on_the_released_layout(tmp_path):
    """The released `fnlp/elasticbert-*` folders hold a vocab.txt and no tokenizer config: AutoTokenizer (and so
    every pipeline) failed on `model_type: elasticbert` ("Couldn't instantiate the backend tokenizer")."""
    from transformers import AutoTokenizer, pipeline

    model = _masked_lm(vocab_size=len(WORDS))
    model.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("the movie was great")["input_ids"] == [2, 5, 6, 7, 8, 3]
    fill = pipeline("fill-mask", model=str(tmp_path), top_k=3)
    got = fill("the movie was [MASK]")
    with torch.no_grad():
        logits = model(torch.tensor([[2, 5, 6, 7, 4, 3]])).logits[0, 4]
    want = logits.softmax(-1).topk(3)
    assert [g["token"] for g in got] == want.indices.tolist()
    torch.testing.assert_close(torch.tensor([g["score"] for g in got]), want.values)


def test_auto_tokenizer_refuses_a_folder_without_a_vocabulary(tmp_path):
    """With BERT's tokenizer registered for ElasticBertConfig, a model folder without tokenizer files got BERT's
    tokenizer of the special tokens alone (transformers 5 builds one): every word [UNK], without a word said.
    It is refused as a folder without tokenizer files is; with a vocab.txt it loads a plain BertTokenizer."""
    from transformers import AutoTokenizer, BertTokenizer, pipeline

    _masked_lm(vocab_size=len(WORDS)).save_pretrained(tmp_path)
    with pytest.raises(OSError, match="no tokenizer files"):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="no tokenizer files"):
        pipeline("fill-mask", model=str(tmp_path))
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is BertTokenizer


def test_a_bert_checkpoint_that_would_load_nothing_is_refused(tmp_path):
    """A `BertFor*` checkpoint (weights `bert.*`) loaded straight into ElasticBERT loaded none of its weights: a
    random model, with only a load report to say so. A bare `BertModel` one still loads its encoder."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from elue.elasticbert import ElasticBertModel

    torch.manual_seed(0)
    config = BertConfig(**SIZES, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bert-cls")
    for cls in (ElasticBertForSequenceClassification, ElasticBertModel):
        with pytest.raises(ValueError, match=r"'bert' checkpoint .* convert a BERT checkpoint first"):
            cls.from_pretrained(tmp_path / "bert-cls")
    bare = BertModel(config).eval()
    bare.save_pretrained(tmp_path / "bert-bare")
    model = ElasticBertModel.from_pretrained(tmp_path / "bert-bare").eval()
    ids, mask = padded_batch()
    torch.testing.assert_close(
        model(ids, attention_mask=mask).last_hidden_state, bare(ids, attention_mask=mask).last_hidden_state
    )


def test_auto_masked_lm_of_an_exit(tmp_path):
    """`AutoModelForMaskedLM` passes the checkpoint's config with the size arguments set: `num_hidden_layers=k`
    kept the checkpoint's 3 exits (refused: more exits than layers), `exit_layer=k` kept its 3 layers and ran
    head k on the top layer's states. Both now give exit k's masked LM, as `ElasticBertForMaskedLM` does."""
    from transformers import AutoModelForMaskedLM

    from elue.elasticbert.pretraining.modeling_pretraining import (
        ElasticBertForMaskedLM,
        ElasticBertForPreTraining,
    )

    torch.manual_seed(0)
    pretraining = ElasticBertForPreTraining(ElasticBertConfig(**{**SIZES, "num_hidden_layers": 3})).eval()
    pretraining.save_pretrained(tmp_path)
    ids, mask = padded_batch()
    hidden = pretraining.elasticbert(ids, attention_mask=mask, exit_layers=[0]).exit_hidden_states[0]
    want = pretraining.cls.predictions[0](hidden, pretraining.get_input_embeddings().weight)
    for kwargs in ({"num_hidden_layers": 1}, {"exit_layer": 1}):
        model = AutoModelForMaskedLM.from_pretrained(tmp_path, **kwargs).eval()
        assert type(model) is ElasticBertForMaskedLM and model.config.num_hidden_layers == 1, kwargs
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, want)
    config = ElasticBertConfig.from_pretrained(tmp_path, num_hidden_layers=2)
    with pytest.raises(ValueError, match="exit_layer 1 is the head of layer 1, num_hidden_layers 2"):
        ElasticBertForMaskedLM.from_pretrained(tmp_path, config=config, exit_layer=1)


def test_masked_lm_reads_the_config_where_its_weights_are(tmp_path):
    """`ElasticBertForMaskedLM.from_pretrained` read the checkpoint's config (for its sizes, or to check
    `exit_layer`) without the hub arguments: with `subfolder=` (a hub repo holding several models) it read none
    or another one, and the load failed on mismatched shapes or refused a good exit_layer."""
    from transformers import AutoModelForMaskedLM

    from elue.elasticbert.pretraining.modeling_pretraining import (
        ElasticBertForMaskedLM,
        ElasticBertForPreTraining,
    )

    torch.manual_seed(0)
    pretraining = ElasticBertForPreTraining(ElasticBertConfig(**{**SIZES, "num_hidden_layers": 3})).eval()
    pretraining.save_pretrained(tmp_path / "sub")
    ids, mask = padded_batch()
    hidden = pretraining.elasticbert(ids, attention_mask=mask, exit_layers=[0]).exit_hidden_states[0]
    want = pretraining.cls.predictions[0](hidden, pretraining.get_input_embeddings().weight)
    assert ElasticBertForMaskedLM.from_pretrained(tmp_path, subfolder="sub").config.num_hidden_layers == 3
    for load in (ElasticBertForMaskedLM.from_pretrained, AutoModelForMaskedLM.from_pretrained):
        model = load(tmp_path, subfolder="sub", exit_layer=1).eval()
        assert model.config.num_hidden_layers == 1
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, want)
