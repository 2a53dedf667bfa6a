"""ElasticBERT as a Hugging Face user meets it: losses by problem type, Trainer, pipeline, attention outputs,
edge-case inputs — compared with `BertForSequenceClassification` where BERT defines the behaviour."""

from __future__ import annotations

import elasticbert_fixtures as fixtures
import pytest
import torch
from torch.nn import functional as F
from transformers import BertConfig, BertForSequenceClassification

from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification

VOCAB, SIZES, tiny = fixtures.TINY_VOCAB, fixtures.TINY_SIZES, fixtures.tiny_classifier


def padded_batch(b: int = 4, s: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return fixtures.padded_batch(VOCAB, b, s, seed)


# --------------------------------------------------------------------------------------------------------------
# losses by problem type (BertForSequenceClassification's rules)


@pytest.mark.parametrize("exits", [1, 2])
def test_float_labels_with_several_classes_are_multi_label_as_in_bert(exits):
    model = tiny(num_labels=3, num_output_layers=exits)
    ids, mask = padded_batch()
    y = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = model(ids, attention_mask=mask, labels=y)
    assert model.config.problem_type == "multi_label_classification"
    expect = [F.binary_cross_entropy_with_logits(out.exit_logits[j], y) for j in range(exits)]
    torch.testing.assert_close(out.exit_losses, torch.stack(expect))
    torch.testing.assert_close(out.loss, sum(expect))
    # BERT (same rule) sets the same problem type from the same labels
    bert = BertForSequenceClassification(BertConfig(**{**SIZES, "num_labels": 3}))
    bert(ids, attention_mask=mask, labels=y)
    assert bert.config.problem_type == model.config.problem_type


def test_problem_type_multi_label_from_the_config():
    model = tiny(num_labels=3, problem_type="multi_label_classification")
    ids, mask = padded_batch()
    y = torch.randint(0, 2, (4, 3))  # integer 0/1 targets: still multi-label, as configured
    out = model(ids, attention_mask=mask, labels=y)
    expect = sum(F.binary_cross_entropy_with_logits(out.exit_logits[j], y.float()) for j in range(2))
    torch.testing.assert_close(out.loss, expect)


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.int16])
def test_class_ids_of_any_integer_dtype_are_single_label(dtype):
    model = tiny(num_labels=3)
    ids, mask = padded_batch()
    y = torch.tensor([0, 2, 1, 2])
    out = model(ids, attention_mask=mask, labels=y.to(dtype))
    assert model.config.problem_type == "single_label_classification"
    torch.testing.assert_close(out.loss, sum(F.cross_entropy(out.exit_logits[j], y) for j in range(2)))


@pytest.mark.parametrize(
    "labels", [torch.tensor([0.5, 2.0, 1.0, 4.0]), torch.tensor([[0.5], [2.0], [1.0], [4.0]])]
)
def test_one_label_is_regression_with_labels_of_either_shape(labels):
    model = tiny(num_labels=1)
    ids, mask = padded_batch()
    out = model(ids, attention_mask=mask, labels=labels)
    assert model.config.problem_type == "regression"
    flat = labels.view(-1)
    torch.testing.assert_close(out.loss, sum(F.mse_loss(out.exit_logits[j].view(-1), flat) for j in range(2)))
    # integer targets of a regression head are taken as values
    out_int = model(ids, attention_mask=mask, labels=torch.tensor([0, 2, 1, 4]))
    assert out_int.loss.dtype == torch.float32


def test_regression_with_several_outputs():
    model = tiny(num_labels=3, problem_type="regression")
    ids, mask = padded_batch()
    y = torch.rand(4, 3)
    out = model(ids, attention_mask=mask, labels=y)
    torch.testing.assert_close(out.loss, sum(F.mse_loss(out.exit_logits[j], y) for j in range(2)))


# --------------------------------------------------------------------------------------------------------------
# Trainer


def _trainer(model, tmp_path, labels, **args):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    ids, mask = padded_batch(b=16, s=8, seed=1)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels})
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        num_train_epochs=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        lr_scheduler_type="constant",
        seed=0,
        disable_tqdm=True,
    )
    return Trainer(
        model=model, args=TrainingArguments(**{**defaults, **args}), train_dataset=data, eval_dataset=data
    )


@pytest.mark.parametrize(("exits", "num_labels"), [(1, 3), (2, 3), (2, 1)])
def test_trainer_trains_and_evaluates_on_the_deepest_exits_logits(tmp_path, exits, num_labels):
    """Trainer's predictions are `logits` (B, C), as for BERT: compute_metrics gets one array, not a tuple
    with (E, B, C) `exit_logits` wrongly concatenated along the exit dim."""
    import numpy as np

    model = tiny(num_labels=num_labels, num_output_layers=exits)
    g = torch.Generator().manual_seed(2)
    labels = (
        torch.rand(16, generator=g).tolist()
        if num_labels == 1
        else torch.randint(0, 3, (16,), generator=g).tolist()
    )
    seen = {}

    def metrics(ev):
        seen["predictions"] = ev.predictions
        return {"mean": float(np.mean(ev.predictions))}

    trainer = _trainer(model, tmp_path, labels)
    trainer.compute_metrics = metrics
    assert trainer.train().training_loss > 0
    result = trainer.evaluate()
    assert isinstance(seen["predictions"], np.ndarray) and seen["predictions"].shape == (16, num_labels)
    ids, mask = padded_batch(b=16, s=8, seed=1)
    with torch.no_grad():
        expect = model.eval()(ids, attention_mask=mask).logits
    np.testing.assert_allclose(seen["predictions"], expect.numpy(), atol=1e-5, rtol=1e-5)
    assert np.isfinite(result["eval_loss"])


def test_trainer_gradient_accumulation_matches_the_full_batch(tmp_path):
    """2 accumulated batches of 8 take the step of one batch of 16 (Trainer divides the loss by the
    accumulation steps; with SGD a missing division doubles the step)."""
    labels = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(3)).tolist()
    common = dict(optim="sgd", learning_rate=0.5, max_grad_norm=0.0)
    start = tiny(num_labels=3)
    full = tiny(num_labels=3)
    _trainer(full, tmp_path / "full", labels, per_device_train_batch_size=16, **common).train()
    accumulated = tiny(num_labels=3)
    _trainer(accumulated, tmp_path / "ga", labels, gradient_accumulation_steps=2, **common).train()
    moved = sum((p - q).norm() for p, q in zip(full.parameters(), start.parameters(), strict=True))
    assert moved > 0.1
    for (name, p), q in zip(full.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_trainer_multi_label(tmp_path):
    model = tiny(num_labels=3, problem_type="multi_label_classification")
    labels = torch.randint(0, 2, (16, 3), generator=torch.Generator().manual_seed(4)).float().tolist()
    trainer = _trainer(model, tmp_path, labels)
    assert trainer.train().training_loss > 0
    assert "eval_loss" in trainer.evaluate()


# --------------------------------------------------------------------------------------------------------------
# inputs


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_empty_batch_gives_empty_outputs(impl):
    """A batch of 0 rows (BERT: a reshape error inside attention) gives 0-row outputs."""
    model = tiny(num_labels=3, attn_implementation=impl)
    ids = torch.zeros(0, 5, dtype=torch.long)
    out = model(ids, attention_mask=torch.zeros(0, 5, dtype=torch.long), output_hidden_states=True)
    assert out.logits.shape == (0, 3) and out.exit_logits.shape == (2, 0, 3)
    assert out.hidden_states[-1].shape == (0, 5, 32)


def test_attention_mask_of_another_shape_is_refused_by_name():
    model = tiny(num_labels=3)
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(4, 8\), the input \(4, 9\)"):
        model(ids, attention_mask=mask[:, :-1])


def test_head_mask_is_refused_not_ignored():
    model = tiny(num_labels=3)
    ids, mask = padded_batch()
    for forward in (model, model.elasticbert):
        with pytest.raises(ValueError, match="head_mask is not supported"):
            forward(ids, attention_mask=mask, head_mask=torch.zeros(2, 2))
    model(ids, attention_mask=mask, head_mask=None)  # None is fine


def test_optional_inputs_default_as_in_bert():
    """No attention_mask = all ones, no token_type_ids = all zeros, default position_ids = 0..S-1,
    inputs_embeds = the word embeddings of input_ids."""
    model = tiny(num_labels=3)
    ids, _ = padded_batch()
    ref = model(ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids)).exit_logits
    torch.testing.assert_close(model(ids).exit_logits, ref)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    torch.testing.assert_close(model(ids, position_ids=pos).exit_logits, ref)
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).exit_logits, ref)
    shifted = model(ids, position_ids=pos + 3).exit_logits
    assert not torch.allclose(shifted, ref)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=embeds)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_padded_batch_equals_one_example_at_a_time(impl):
    model = tiny(num_labels=3, attn_implementation=impl)
    ids, mask = padded_batch()
    out = model(ids, attention_mask=mask).exit_logits
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        alone = model(ids[row : row + 1, :n]).exit_logits
        torch.testing.assert_close(out[:, row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_tuple_outputs_start_as_berts():
    """return_dict=False: (loss, logits, exit_logits, exit_losses) with labels, (logits, exit_logits) without
    — loss first and logits next, as BERT's (loss, logits)."""
    model = tiny(num_labels=3)
    ids, mask = padded_batch()
    y = torch.tensor([0, 1, 2, 0])
    out = model(ids, attention_mask=mask, labels=y)
    loss, logits, exit_logits, exit_losses = model(ids, attention_mask=mask, labels=y, return_dict=False)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(exit_logits, out.exit_logits)
    torch.testing.assert_close(exit_losses, out.exit_losses)
    no_labels = model(ids, attention_mask=mask, return_dict=False, output_hidden_states=True)
    assert len(no_labels) == 3 and len(no_labels[2]) == 3  # logits, exit_logits, hidden_states
    base = model.elasticbert(ids, attention_mask=mask, return_dict=False)
    torch.testing.assert_close(base[0], model.elasticbert(ids, attention_mask=mask).last_hidden_state)


# --------------------------------------------------------------------------------------------------------------
# pipeline, loading, training utilities

WORDS = fixtures.TINY_WORDS


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A static and a 2-exit classifier saved with a tiny WordPiece tokenizer."""
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("elasticbert_hf")
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"))
    dirs = {}
    for name, exits in (("static", 1), ("multi", 2)):
        model = tiny(num_labels=3, num_output_layers=exits, vocab_size=len(WORDS))
        with torch.no_grad():  # distinct exits, so the pipeline's exit is identifiable
            for head in [model.classifier] if exits == 1 else list(model.classifiers):
                head.weight.normal_(0, 1.0)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


@pytest.mark.parametrize("name", ["static", "multi"])
def test_text_classification_pipeline_uses_the_deepest_exit(saved, name):
    from transformers import AutoTokenizer, pipeline

    classify = pipeline("text-classification", model=str(saved[name]), top_k=None)
    texts = ["the movie was great", "not a film"]
    got = classify(texts)
    tokenizer = AutoTokenizer.from_pretrained(saved[name])
    model = ElasticBertForSequenceClassification.from_pretrained(saved[name]).eval()
    with torch.no_grad():
        out = model(**tokenizer(texts, padding=True, return_tensors="pt"))
    if name == "multi":
        assert not torch.allclose(out.exit_logits[0], out.exit_logits[1], atol=1e-3)
    for scores, want in zip(got, out.exit_logits[-1].softmax(-1), strict=True):
        by_label = {s["label"]: s["score"] for s in scores}
        torch.testing.assert_close(
            torch.tensor([by_label[f"LABEL_{i}"] for i in range(3)]), want, atol=1e-5, rtol=1e-5
        )


def test_auto_classes_round_trip(saved, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    import elue.elasticbert  # noqa: F401  (registers the Auto classes)

    config = AutoConfig.from_pretrained(saved["multi"])
    assert type(config) is ElasticBertConfig and config.num_output_layers == 2
    model = AutoModelForSequenceClassification.from_pretrained(saved["multi"]).eval()
    assert type(model) is ElasticBertForSequenceClassification
    ids, mask = padded_batch(seed=5)
    ids = ids % len(WORDS)
    base = AutoModel.from_pretrained(saved["multi"]).eval()
    torch.testing.assert_close(
        base(ids, attention_mask=mask).last_hidden_state,
        model.elasticbert(ids, attention_mask=mask).last_hidden_state,
    )
    mlm = AutoModelForMaskedLM.from_pretrained(saved["multi"])
    mlm.save_pretrained(tmp_path / "mlm")
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm")
    for (name, p), q in zip(mlm.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_loading_in_bfloat16(saved, key):
    model = ElasticBertForSequenceClassification.from_pretrained(
        saved["multi"], **{key: torch.bfloat16}
    ).eval()
    assert model.dtype == torch.bfloat16
    full = ElasticBertForSequenceClassification.from_pretrained(saved["multi"]).eval()
    ids, mask = padded_batch(seed=5)
    ids = ids % len(WORDS)
    y = torch.tensor([0, 1, 2, 0])
    out = model(ids, attention_mask=mask, labels=y)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    torch.testing.assert_close(
        out.exit_logits.float(), full(ids, attention_mask=mask).exit_logits, atol=0.05, rtol=0.05
    )


@pytest.mark.parametrize("name", ["static", "multi"])
def test_new_label_count_with_ignore_mismatched_sizes(saved, name):
    model = ElasticBertForSequenceClassification.from_pretrained(
        saved[name], num_labels=5, ignore_mismatched_sizes=True
    )
    ids, mask = padded_batch(seed=5)
    out = model(ids % len(WORDS), attention_mask=mask)
    assert out.logits.shape == (4, 5) and model.config.num_labels == 5
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        ElasticBertForSequenceClassification.from_pretrained(saved[name], num_labels=5)


def test_resize_token_embeddings_saves_and_loads(tmp_path):
    model = tiny(num_labels=3)
    model.resize_token_embeddings(VOCAB + 7)
    assert model.config.vocab_size == VOCAB + 7
    ids, mask = padded_batch()
    ids[0, 1] = VOCAB + 5  # a new token
    model.save_pretrained(tmp_path)
    again = ElasticBertForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        again(ids, attention_mask=mask).exit_logits, model(ids, attention_mask=mask).exit_logits
    )


@pytest.mark.parametrize(("exits", "reentrant"), [(1, False), (2, False), (2, True)])
def test_gradient_checkpointing_gives_the_same_gradients(exits, reentrant):
    """Checkpointed layers recompute in backward; gradient equilibrium's rescaling (multi-exit) is unchanged."""
    torch.manual_seed(0)
    plain = ElasticBertForSequenceClassification(
        ElasticBertConfig(
            **{**SIZES, "num_labels": 3, "num_output_layers": exits, "hidden_dropout_prob": 0.1}
        )
    ).train()
    ckpt = ElasticBertForSequenceClassification(plain.config)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.train().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert ckpt.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    ids, mask = padded_batch()
    y = torch.tensor([0, 1, 2, 0])
    for model in (plain, ckpt):
        torch.manual_seed(1)  # same dropout masks (checkpointing replays the RNG state)
        model(ids, attention_mask=mask, labels=y).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("exits", [1, 2])
def test_torch_compile_full_graph_with_padding(exits):
    """One graph (fullgraph=True) with a padded batch: the "no padding, no mask" shortcut reads the mask's
    values, a data-dependent branch, so it is skipped under compile. Forward and gradients as eager."""
    model = tiny(num_labels=3, num_output_layers=exits).train()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ids, mask = padded_batch()
    y = torch.tensor([0, 1, 2, 0])
    got = compiled(ids, attention_mask=mask, labels=y)
    got.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want = model(ids, attention_mask=mask, labels=y)
    want.loss.backward()
    torch.testing.assert_close(got.exit_logits, want.exit_logits)
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(g, p.grad, msg=name)


# --------------------------------------------------------------------------------------------------------------
# the pre-training models under the same rules


def _masked_lm(seed: int = 0):
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForMaskedLM

    torch.manual_seed(seed)
    return ElasticBertForMaskedLM(ElasticBertConfig(**SIZES)).train()


def test_masked_lm_under_trainer_gradient_accumulation_matches_the_full_batch(tmp_path):
    """As for the classifier: 2 accumulated batches of 8 take the step of one batch of 16 (every token is a
    target, so the two batches' token means average to the full batch's)."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    ids = torch.randint(1, VOCAB, (16, 8), generator=torch.Generator().manual_seed(5))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})

    def train(model, out, **args):  # noqa: ANN001, ANN003
        args = dict(
            output_dir=str(out),
            num_train_epochs=1,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            seed=0,
            lr_scheduler_type="constant",
            disable_tqdm=True,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
            **args,
        )
        Trainer(model=model, args=TrainingArguments(**args), train_dataset=data).train()
        return model

    start = _masked_lm()
    full = train(_masked_lm(), tmp_path / "full", per_device_train_batch_size=16)
    accumulated = train(
        _masked_lm(), tmp_path / "ga", per_device_train_batch_size=8, gradient_accumulation_steps=2
    )
    assert sum((p - q).norm() for p, q in zip(full.parameters(), start.parameters(), strict=True)) > 0.1
    for (name, p), q in zip(full.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_pretraining_models_refuse_a_head_mask():
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForPreTraining

    ids, mask = padded_batch()
    torch.manual_seed(0)
    pretraining = ElasticBertForPreTraining(ElasticBertConfig(**SIZES)).eval()
    for model in (_masked_lm().eval(), pretraining):
        with pytest.raises(ValueError, match="head_mask is not supported"):
            model(ids, attention_mask=mask, head_mask=torch.zeros(2, 2))
        model(ids, attention_mask=mask, head_mask=None)


# --------------------------------------------------------------------------------------------------------------
# the layout is the model's, not the config's after construction


@pytest.mark.parametrize(
    ("field", "value"), [("num_output_layers", 2), ("num_output_layers", 1), ("num_hidden_layers", 2)]
)
def test_a_layout_changed_in_the_config_after_construction_is_refused(tmp_path, field, value):
    """Layer and exit counts are read when a model is built (as BERT's). Changed on `model.config` afterwards, a
    3-exit model took classifiers 0 and 1 (trained for layers 1 and 2) for its exits on layers 2 and 3 without a
    word, and a static layout an AttributeError; early exit and `save_pretrained` (config.json then describing
    another model) too. Now each says how to get another layout."""
    from elue.elasticbert.early_exit import early_exit

    model = tiny(num_hidden_layers=3, num_labels=2)
    ids, mask = padded_batch()
    setattr(model.config, field, value)
    with pytest.raises(ValueError, match=rf"{field}.*from_pretrained"):
        model(ids, attention_mask=mask)
    with pytest.raises(ValueError, match=rf"{field}.*from_pretrained"):
        early_exit(model, ids, mask, rule="entropy", threshold=0.1)
    with pytest.raises(ValueError, match=rf"{field}.*from_pretrained"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
    setattr(model.config, field, 3)  # set back: works again
    assert model(ids, attention_mask=mask).exit_logits.shape == (3, 4, 2)


def test_from_pretrained_with_fewer_layers_keeps_the_exits_below_the_cut(tmp_path):
    """`from_pretrained(path, num_hidden_layers=k)` of a checkpoint with an exit on every layer kept its exit count
    and was refused ("num_output_layers (3) must be between 1 and num_hidden_layers (2)"), through every class
    and `AutoModel*`. The depth alone now keeps the checkpoint's exits below the cut, each with its own pooler
    and classifier, as `elue finetune --num-layers` does; an explicit `num_output_layers` still decides."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    from elue.elasticbert import ElasticBertModel

    model = tiny(num_hidden_layers=3, num_labels=2)
    model.save_pretrained(tmp_path)
    ids, mask = padded_batch()
    full = model(ids, attention_mask=mask).exit_logits
    loads = (
        lambda **kw: ElasticBertForSequenceClassification.from_pretrained(tmp_path, **kw),
        lambda **kw: AutoModelForSequenceClassification.from_pretrained(tmp_path, **kw),
        lambda **kw: ElasticBertForSequenceClassification.from_pretrained(
            tmp_path, config=ElasticBertConfig.from_pretrained(tmp_path, **kw)
        ),
    )
    for load in loads:
        for k in (2, 1):
            small = load(num_hidden_layers=k).eval()
            assert small.exit_layers == list(range(k))
            torch.testing.assert_close(small(ids, attention_mask=mask).exit_logits, full[:k])
    for load in (ElasticBertModel.from_pretrained, AutoModel.from_pretrained):
        assert load(tmp_path, num_hidden_layers=2).exit_layers == [0, 1]
    static = ElasticBertForSequenceClassification.from_pretrained(
        tmp_path, num_hidden_layers=2, num_output_layers=1
    )
    torch.testing.assert_close(static.eval()(ids, attention_mask=mask).logits, full[1])
