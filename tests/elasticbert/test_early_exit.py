"""Batched early exit: rules, regression, refusal of entropy on 1-output heads, batched == example by example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification
from elue.elasticbert.early_exit import (
    build_trace,
    early_exit,
    early_exit_reference,
    entropy_from_logits,
    pad_batch,
    run_early_exit,
)
from elue.trace import parse_trace

VOCAB, HIDDEN, LAYERS = 60, 32, 4


def make_model(num_labels=3, layers=LAYERS, seed=0, **kw) -> ElasticBertForSequenceClassification:
    torch.manual_seed(seed)
    config = ElasticBertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
        num_labels=num_labels,
        **kw,
    )
    model = ElasticBertForSequenceClassification(config).eval()
    with torch.no_grad():  # confident, diverse exits: big classifier weights
        heads = [model.classifier] if config.num_output_layers == 1 else list(model.classifiers)
        for head in heads:
            head.weight.normal_(0, 2.0)
            head.bias.normal_(0, 1.0)
    return model


def make_batch(n=24, max_len=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_len + 1, (n,), generator=g)
    ids = torch.zeros(n, max_len, dtype=torch.long)
    mask = torch.zeros(n, max_len, dtype=torch.long)
    tts = torch.zeros(n, max_len, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, :length] = torch.randint(1, VOCAB, (length,), generator=g)
        mask[i, :length] = 1
        tts[i, length // 2 : length] = 1
    return ids, mask, tts


def all_exit_logits(model, ids, mask, tts):
    with torch.no_grad():
        return model(ids, attention_mask=mask, token_type_ids=tts).exit_logits  # (E, B, C)


def mid_thresholds(values: torch.Tensor, quantiles=(0.3, 0.6)) -> list[float]:
    """Thresholds halfway between neighbouring observed values (no example sits on a threshold)."""
    v = torch.unique(values.flatten()).sort().values
    out = []
    for q in quantiles:
        k = min(max(int(q * (len(v) - 1)), 0), len(v) - 2)
        out.append(float((v[k] + v[k + 1]) / 2))
    return out


def test_entropy_is_stable_and_correct():
    logits = torch.tensor([[1000.0, 0.0], [0.0, 0.0], [-1e4, 1e4]])
    ent = entropy_from_logits(logits)
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(ent, torch.tensor([0.0, 0.6931472, 0.0]), atol=1e-6, rtol=0)


def test_entropy_rule_matches_definition():
    model = make_model()
    ids, mask, tts = make_batch()
    logits = all_exit_logits(model, ids, mask, tts)
    ent = entropy_from_logits(logits)  # (E, B)
    for tau in mid_thresholds(ent):
        res = early_exit(model, ids, mask, tts, rule="entropy", threshold=tau)
        for b in range(ids.shape[0]):
            below = (ent[:, b] < tau).nonzero()
            e = int(below[0]) if len(below) else LAYERS - 1
            assert int(res.exit_layers[b]) == e + 1
            assert int(res.predictions[b]) == int(logits[e, b].argmax())
            torch.testing.assert_close(res.logits[b], logits[e, b], atol=1e-5, rtol=1e-5)
        assert res.token_counts.tolist() == mask.sum(1).tolist()


@pytest.mark.parametrize("t", [0, 1, 2])
def test_patience_rule_matches_definition(t):
    model = make_model()
    ids, mask, tts = make_batch()
    preds = all_exit_logits(model, ids, mask, tts).argmax(-1)  # (E, B)
    res = early_exit(model, ids, mask, tts, rule="patience", threshold=t)
    for b in range(ids.shape[0]):
        count, exit_at = 0, LAYERS - 1
        for e in range(LAYERS):
            if e > 0:
                count = count + 1 if preds[e, b] == preds[e - 1, b] else 0
            if count >= t:
                exit_at = e
                break
        assert int(res.exit_layers[b]) == exit_at + 1
        assert int(res.predictions[b]) == int(preds[exit_at, b])


def _patience_exit(preds: torch.Tensor, b: int, t: int, reset: bool = True) -> int:
    """0-based exit of example b under patience t, from its per-exit predictions (E, B); `reset=False` is the
    rule with the reset left out (the counter kept when the prediction changes)."""
    count = 0
    for e in range(preds.shape[0]):
        if e > 0:
            count = count + 1 if preds[e, b] == preds[e - 1, b] else (0 if reset else count)
        if count >= t:
            return e
    return preds.shape[0] - 1


@pytest.mark.parametrize("t", [2, 3])
def test_patience_counter_resets_when_the_prediction_changes(t):
    """With 4 layers a counter that is not reset cannot reach t later than the reset one within the model (the
    other patience tests pass without the reset); with 8 layers, A A B B ... exits at the 4th exit (t = 2)
    without it and later with it. Engine and reference both follow the rule with the reset."""
    layers = 8
    model = make_model(layers=layers)
    ids, mask, tts = make_batch(n=40)
    preds = all_exit_logits(model, ids, mask, tts).argmax(-1)  # (E, B)
    want = [_patience_exit(preds, b, t) + 1 for b in range(ids.shape[0])]
    no_reset = [_patience_exit(preds, b, t, reset=False) + 1 for b in range(ids.shape[0])]
    assert want != no_reset, "test needs examples whose exit depends on the reset"
    batched = early_exit(model, ids, mask, tts, rule="patience", threshold=t)
    single = early_exit_reference(model, ids, mask, tts, rule="patience", threshold=t)
    assert batched.exit_layers.tolist() == want
    assert single.exit_layers.tolist() == want
    assert batched.predictions.tolist() == [int(preds[e - 1, b]) for b, e in enumerate(want)]


def test_fixed_depth_and_static_alias():
    model = make_model()
    ids, mask, tts = make_batch()
    logits = all_exit_logits(model, ids, mask, tts)
    for k in (1, 3):
        res = early_exit(model, ids, mask, tts, rule="fixed", threshold=k)
        assert res.exit_layers.tolist() == [k] * ids.shape[0]
        assert res.predictions.tolist() == logits[k - 1].argmax(-1).tolist()
    same = early_exit(model, ids, mask, tts, rule="static", threshold=3)
    assert same.predictions.tolist() == logits[2].argmax(-1).tolist()
    with pytest.raises(ValueError):
        early_exit(model, ids, mask, tts, rule="fixed", threshold=LAYERS + 1)


def test_regression_patience_uses_change_threshold():
    model = make_model(num_labels=1)
    ids, mask, tts = make_batch()
    values = all_exit_logits(model, ids, mask, tts)[..., 0]  # (E, B)
    deltas = (values[1:] - values[:-1]).abs()
    (delta,) = mid_thresholds(deltas, quantiles=(0.5,))
    res = early_exit(model, ids, mask, tts, rule="patience", threshold=1, regression_threshold=delta)
    assert res.predictions.dtype == torch.float32
    for b in range(ids.shape[0]):
        e = next((j for j in range(1, LAYERS) if deltas[j - 1, b] < delta), LAYERS - 1)
        assert int(res.exit_layers[b]) == e + 1
        torch.testing.assert_close(res.predictions[b], values[e, b], atol=1e-5, rtol=1e-5)
    assert len(set(res.exit_layers.tolist())) > 1


def test_entropy_refused_for_regression_head():
    model = make_model(num_labels=1)
    ids, mask, tts = make_batch(n=2)
    with pytest.raises(ValueError, match="regression"):
        early_exit(model, ids, mask, tts, rule="entropy", threshold=0.5)
    with pytest.raises(ValueError, match="regression"):
        early_exit_reference(model, ids, mask, tts, rule="entropy", threshold=0.5)


@pytest.mark.parametrize(
    ("num_labels", "rule", "threshold"),
    [(3, "entropy", None), (3, "patience", 1), (3, "patience", 2), (1, "patience", 1), (3, "fixed", 2)],
)
def test_batched_equals_example_by_example(num_labels, rule, threshold):
    model = make_model(num_labels=num_labels)
    ids, mask, tts = make_batch(n=40)
    if threshold is None:
        (threshold,) = mid_thresholds(entropy_from_logits(all_exit_logits(model, ids, mask, tts)), (0.5,))
    kw = dict(rule=rule, threshold=threshold, regression_threshold=0.05)
    batched = early_exit(model, ids, mask, tts, **kw)
    single = early_exit_reference(model, ids, mask, tts, **kw)
    assert batched.exit_layers.tolist() == single.exit_layers.tolist()
    if num_labels == 1:
        torch.testing.assert_close(batched.predictions, single.predictions, atol=1e-5, rtol=1e-5)
    else:
        assert batched.predictions.tolist() == single.predictions.tolist()
    assert batched.token_counts.tolist() == single.token_counts.tolist()
    torch.testing.assert_close(batched.logits, single.logits, atol=1e-4, rtol=1e-4)
    assert not single.logits.requires_grad  # the reference runs without autograd, as the engine does
    if rule != "fixed":
        assert len(set(batched.exit_layers.tolist())) > 1, "test needs examples leaving at different layers"


def test_entropy_equal_to_threshold_decided_alike():
    """An entropy equal to τ (τ the median, or any quantile, of observed entropies) stays in the engine and in
    the reference alike: both decide with `entropy_from_logits` (float32) and `<` (the reference used to
    recompute it in float64 and let about half such examples out). One example per call, so both paths see
    bit-identical logits: a batched and a single-example forward differ in the last bits, no rule hides that."""
    model = make_model()
    ids, mask, tts = make_batch(n=16)
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        row = ids[b : b + 1, :n], mask[b : b + 1, :n], tts[b : b + 1, :n]
        ent = entropy_from_logits(all_exit_logits(model, *row)[:, 0])  # (E,)
        tau = ent[:-1].median().item()  # an entropy of this very example, at one of its exits
        batched = early_exit(model, *row, rule="entropy", threshold=tau)
        single = early_exit_reference(model, *row, rule="entropy", threshold=tau)
        below = (ent[:-1] < tau).nonzero()  # the exit at τ itself is not below it
        want = (int(below[0]) if len(below) else LAYERS - 1) + 1
        assert batched.exit_layers.tolist() == single.exit_layers.tolist() == [want]


def to_features(ids, mask, tts):
    out = []
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        out.append({"input_ids": ids[i, :n].tolist(), "token_type_ids": tts[i, :n].tolist()})
    return out


@pytest.mark.parametrize(
    ("num_labels", "rule", "threshold", "pool_size"),
    [
        (3, "entropy", None, None),
        (3, "entropy", None, 7),
        (3, "patience", 1, None),
        (3, "patience", 2, 14),
        (1, "patience", 1, None),
        (3, "fixed", 3, None),
    ],
)
def test_pooled_run_equals_example_by_example(num_labels, rule, threshold, pool_size):
    model = make_model(num_labels=num_labels)
    ids, mask, tts = make_batch(n=45, seed=5)
    features = to_features(ids, mask, tts)
    if threshold is None:
        (threshold,) = mid_thresholds(entropy_from_logits(all_exit_logits(model, ids, mask, tts)), (0.5,))
    kw = dict(rule=rule, threshold=threshold, regression_threshold=0.05)
    pooled = run_early_exit(model, features, batch_size=7, pool_size=pool_size, **kw)
    single = run_early_exit(model, features, reference=True, **kw)
    whole = early_exit(model, ids, mask, tts, **kw)
    assert pooled.exit_layers.tolist() == single.exit_layers.tolist() == whole.exit_layers.tolist()
    if num_labels == 1:
        torch.testing.assert_close(pooled.predictions, single.predictions, atol=1e-5, rtol=1e-5)
    else:
        assert pooled.predictions.tolist() == single.predictions.tolist()
    assert pooled.token_counts.tolist() == [len(f["input_ids"]) for f in features]
    torch.testing.assert_close(pooled.logits, single.logits, atol=1e-4, rtol=1e-4)


def test_model_with_exits_on_top_layers_only_and_training_flag_restored():
    model = make_model(num_output_layers=2)  # exits on layers 3 and 4
    ids, mask, tts = make_batch()
    model.train()
    res = early_exit(model, ids, mask, tts, rule="patience", threshold=0)
    assert model.training
    assert res.exit_layers.tolist() == [3] * ids.shape[0]
    trace = res.traces(HIDDEN, exit_layers=[3, 4])[0]
    names = [name for name, _ in parse_trace(trace)]
    assert names == ["emb", "layer_1", "layer_2", "layer_3", "exit_3"]


@pytest.mark.parametrize(("rule", "threshold"), [("entropy", None), ("patience", 1)])
def test_a_model_in_training_mode_exits_as_in_eval_mode(rule, threshold):
    """Early exit runs the model in eval mode whatever its flag (dropout off), and restores the flag: a model
    left in training mode by fine-tuning exits and predicts as the same model in eval mode."""
    model = make_model(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    ids, mask, tts = make_batch(n=30)
    if threshold is None:
        (threshold,) = mid_thresholds(entropy_from_logits(all_exit_logits(model, ids, mask, tts)), (0.5,))
    kw = dict(rule=rule, threshold=threshold)
    features = to_features(ids, mask, tts)
    want_whole = early_exit(model.eval(), ids, mask, tts, **kw)
    want_pooled = run_early_exit(model, features, batch_size=7, **kw)
    model.train()
    whole = early_exit(model, ids, mask, tts, **kw)
    pooled = run_early_exit(model, features, batch_size=7, **kw)
    single = early_exit_reference(model, ids, mask, tts, **kw)
    assert model.training
    for got, want in ((whole, want_whole), (pooled, want_pooled), (single, want_whole)):
        assert got.exit_layers.tolist() == want.exit_layers.tolist()
        assert got.predictions.tolist() == want.predictions.tolist()
        torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)


def test_build_trace():
    assert (
        build_trace(2, 10, 768) == "(10),emb; (10,768),layer_1; (768),exit_1; (10,768),layer_2; (768),exit_2"
    )
    assert (
        build_trace(3, 5, 8, mode="static")
        == "(5),emb; (5,8),layer_1; (5,8),layer_2; (5,8),layer_3; (8),exit_3"
    )
    with pytest.raises(ValueError):
        build_trace(0, 5, 8)
    with pytest.raises(ValueError):
        build_trace(2, 5, 8, exit_layers=[3, 4])


def test_pad_batch_lists_and_arrays():
    feats = [
        {"input_ids": [101, 7, 102], "token_type_ids": [0, 0, 0]},
        {"input_ids": [101, 102], "token_type_ids": [0, 1]},
        {"input_ids": [101, 5, 6, 102], "token_type_ids": [0, 0, 1, 1]},
    ]
    want_ids = [[101, 7, 102, 9], [101, 102, 9, 9], [101, 5, 6, 102]]
    want_mask = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    want_tts = [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]
    as_arrays = [{k: np.asarray(v) for k, v in f.items()} for f in feats]
    for given in (feats, as_arrays):
        out = pad_batch(given, pad_token_id=9)
        assert out["input_ids"].tolist() == want_ids
        assert out["attention_mask"].tolist() == want_mask
        assert out["token_type_ids"].tolist() == want_tts
        assert all(t.dtype == torch.long for t in out.values())
    assert set(pad_batch([{"input_ids": [1, 2]}])) == {"input_ids", "attention_mask"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(rule="entropy", threshold=-1.0), "entropy threshold must be"),
        (dict(rule="entropy", threshold=float("nan")), "entropy threshold must be"),
        (dict(rule="entropy", threshold=float("inf")), "entropy threshold must be"),
        (dict(rule="entropy", threshold="0.3"), "entropy threshold must be"),
        (dict(rule="patience", threshold=float("inf")), "patience must be"),
        (dict(rule="patience", threshold=float("nan")), "patience must be"),
        (dict(rule="patience", threshold="1"), "patience must be"),
        (dict(rule="patience", threshold=True), "patience must be"),
        (dict(rule="patience", threshold=1.5), "patience must be"),
        (dict(rule="fixed", threshold=float("inf")), "fixed depth"),
        (dict(rule="fixed", threshold=float("nan")), "fixed depth"),
        (dict(rule="fixed", threshold="2"), "fixed depth"),
        (dict(rule="patience", threshold=1, regression_threshold=-0.5), "regression_threshold must be"),
        (
            dict(rule="patience", threshold=1, regression_threshold=float("nan")),
            "regression_threshold must be",
        ),
        (dict(rule="patience", threshold=1, regression_threshold="0.1"), "regression_threshold must be"),
    ],
)
def test_invalid_thresholds_refused(kw, message):
    """Each path refuses with a ValueError naming the threshold (not OverflowError / TypeError from int())."""
    model = make_model(num_labels=2)
    ids, mask, tts = make_batch(n=2)
    with pytest.raises(ValueError, match=message):
        early_exit(model, ids, attention_mask=mask, token_type_ids=tts, **kw)
    with pytest.raises(ValueError, match=message):
        early_exit_reference(model, ids, attention_mask=mask, token_type_ids=tts, **kw)
    with pytest.raises(ValueError, match=message):
        run_early_exit(model, to_features(ids, mask, tts), reference=True, **kw)


def test_one_unbatched_example_is_refused_by_both_engines():
    model = make_model()
    ids, _, _ = make_batch(n=1)
    for run in (early_exit, early_exit_reference):
        with pytest.raises(
            ValueError, match=r"input_ids must be a padded batch \(B, S\), got shape \(\d+,\)"
        ):
            run(model, ids[0], rule="entropy", threshold=0.5)


def test_rows_without_tokens_refused():
    """A row with no tokens has no [CLS]: refused by index, not given a prediction with token count 0."""
    model = make_model()
    ids, mask, tts = make_batch(n=4)
    mask[2] = 0
    kw = dict(rule="entropy", threshold=0.5)
    with pytest.raises(ValueError, match=r"rows \[2\] have no tokens \(attention_mask all 0\)"):
        early_exit(model, ids, mask, tts, **kw)
    with pytest.raises(ValueError, match=r"rows \[2\] have no tokens \(attention_mask all 0\)"):
        early_exit_reference(model, ids, mask, tts, **kw)
    features = to_features(ids, mask, tts)
    for reference in (False, True):
        with pytest.raises(ValueError, match=r"examples \[2\] have no tokens"):
            run_early_exit(model, features, reference=reference, **kw)


def test_multi_label_head_refused():
    """A multi-label head (BCE, several classes on at once) gives no single prediction to exit on."""
    model = make_model(problem_type="multi_label_classification")
    ids, mask, tts = make_batch(n=2)
    for run in (early_exit, early_exit_reference):
        for rule, threshold in (("entropy", 0.5), ("patience", 1), ("fixed", 2)):
            with pytest.raises(ValueError, match="multi-label"):
                run(model, ids, mask, tts, rule=rule, threshold=threshold)
    with pytest.raises(ValueError, match="multi-label"):
        run_early_exit(model, to_features(ids, mask, tts), rule="patience", threshold=1)


def test_regression_head_with_several_outputs_refused():
    """`problem_type="regression"` with num_labels=3 (BERT's multi-output regression): the result has one value per
    example, so the first output was returned as the prediction and patience compared it alone, silently."""
    model = make_model(num_labels=3, problem_type="regression")
    ids, mask, tts = make_batch(n=2)
    for run in (early_exit, early_exit_reference):
        for rule, threshold in (("patience", 1), ("fixed", 2)):
            with pytest.raises(ValueError, match="3 outputs"):
                run(model, ids, mask, tts, rule=rule, threshold=threshold)
    with pytest.raises(ValueError, match="3 outputs"):
        run_early_exit(model, to_features(ids, mask, tts), rule="patience", threshold=1)


@pytest.mark.parametrize(("rule", "threshold"), [("patience", 1), ("fixed", 3), ("entropy", None)])
def test_left_padding_gives_the_right_padded_results_in_both_engines(rule, threshold):
    """Tokens are where the mask is 1: left-padded rows (a tokenizer with padding_side="left") exit and predict
    as right-padded ones. The reference read the first n positions, i.e. padding, of a left-padded row."""
    model = make_model()
    ids, mask, tts = make_batch(n=12)
    if threshold is None:
        (threshold,) = mid_thresholds(entropy_from_logits(all_exit_logits(model, ids, mask, tts)), (0.5,))
    width = ids.shape[1]
    left = [torch.zeros_like(t) for t in (ids, mask, tts)]
    for row, n in enumerate(mask.sum(1).tolist()):
        for src, dst in zip((ids, mask, tts), left, strict=True):
            dst[row, width - n :] = src[row, :n]
    kw = dict(rule=rule, threshold=threshold)
    want = early_exit_reference(model, ids, mask, tts, **kw)
    assert len(set(want.exit_layers.tolist())) > 1 or rule == "fixed"
    for run in (early_exit, early_exit_reference):
        got = run(model, *left, **kw)
        assert got.exit_layers.tolist() == want.exit_layers.tolist()
        assert got.predictions.tolist() == want.predictions.tolist()
        assert got.token_counts.tolist() == want.token_counts.tolist()
        torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)


def test_a_tokenizers_output_of_columns_is_refused_by_name():
    """`run_early_exit(model, tokenizer(texts))` (one mapping of columns, not a list of examples) failed with
    "string indices must be integers": iterating it gave the column names."""
    model = make_model()
    ids, mask, tts = make_batch(n=2)
    columns = {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}
    with pytest.raises(TypeError, match="one mapping of columns"):
        run_early_exit(model, columns, rule="patience", threshold=1)


def test_inputs_longer_than_the_position_table_get_a_clear_error():
    model = make_model()  # max_position_embeddings 64
    ids = torch.randint(1, VOCAB, (2, 70))
    with pytest.raises(
        ValueError, match=r"70 positions, more than the model's 64 \(max_position_embeddings\)"
    ):
        early_exit(model, ids, rule="patience", threshold=1)
    with pytest.raises(ValueError, match="70 positions"):
        run_early_exit(model, [{"input_ids": [1] * 70}], rule="patience", threshold=1)


@pytest.mark.parametrize("field", ["attention_mask", "token_type_ids"])
def test_a_mask_or_token_types_of_another_shape_are_named(field):
    model = make_model()
    ids, mask, tts = make_batch(n=3)
    kw = {"attention_mask": mask, "token_type_ids": tts, field: torch.ones(3, 5, dtype=torch.long)}
    for fn in (early_exit, early_exit_reference):
        with pytest.raises(ValueError, match=rf"{field} has shape \(3, 5\), input_ids \(3, 20\)"):
            fn(model, ids, **kw, rule="patience", threshold=1)


def test_reference_results_are_ordinary_tensors_like_the_engines():
    model = make_model()
    ids, mask, tts = make_batch(n=3)
    res = early_exit_reference(model, ids, mask, tts, rule="patience", threshold=1)
    for t in (res.predictions, res.exit_layers, res.token_counts, res.logits):
        assert not t.is_inference()
    res.logits /= 2.0  # an inference tensor refuses this outside inference mode


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            [{"input_ids": [2, 5, 6]}, {"input_ids": [2, 5, 6, 7], "token_type_ids": [0, 0, 1, 1]}],
            r"\[0\] have no",
        ),
        (
            [{"input_ids": [2, 5, 6], "token_type_ids": [0, 0, 1]}, {"input_ids": [2, 5, 6, 7]}],
            r"\[1\] have no",
        ),
        ([{"input_ids": [2, 5, 6], "token_type_ids": [0, 1]}], r"example 0: 2 and 3"),
    ],
)
def test_token_types_on_some_examples_only_or_of_another_length_are_refused(features, message):
    with pytest.raises(ValueError, match=message):
        run_early_exit(make_model(), features, rule="patience", threshold=1)


def test_early_exit_runs_on_the_models_device_whatever_the_inputs(monkeypatch):
    import elue.elasticbert.early_exit as ee

    seen = {}
    real = ee.run_early_exit

    def spy(*args, **kwargs):
        seen["device"] = kwargs.get("device")
        return real(*args, **kwargs)

    monkeypatch.setattr(ee, "run_early_exit", spy)
    ids, mask, _ = make_batch(n=3)
    ee.early_exit(make_model(), ids, mask, rule="patience", threshold=1)
    assert seen["device"] is None  # run_early_exit's default: the model's parameters' device
