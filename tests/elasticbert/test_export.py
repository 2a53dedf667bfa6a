"""The submission writer: exit rules, traces, the generated model.py and its price, `elue predict`."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from elasticbert_fixtures import invoke_cli, write_sst2, write_tiny_checkpoint
from subprocesses import child_env

from elue.elasticbert.export import predict_submission
from elue.elasticbert.export_cost import dynamic_trace, formula_macs, model_py_source, static_trace
from elue.elasticbert.export_points import Point, check_points, entropy, make_points, replay_exits

POS = ["good", "great", "fine", "lovely"]  # words of the tiny checkpoint's vocabulary
NEG = ["bad", "awful", "dull", "boring"]
FILL = ["the", "film", "movie", "was", "is", "a", "plot", "very"]


def _write_data(root: Path, n_test: int = 10) -> Path:
    rng = random.Random(1)
    d = root / "sst-2"
    d.mkdir(parents=True, exist_ok=True)

    def sentence(label: int) -> str:
        return " ".join(rng.sample(FILL, rng.randint(1, 6)) + [rng.choice(POS if label else NEG)])

    rows = [(sentence(i % 2), i % 2) for i in range(8)]
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    test = [(7 + 3 * i, sentence(i % 2), i % 2) for i in range(n_test)]
    (d / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s, _ in test))
    (d / "test_labels.tsv").write_text("index\tlabel\n" + "".join(f"{i}\t{y}\n" for i, _, y in test))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return _write_data(root / "data"), write_tiny_checkpoint(root / "ckpt", seed=1)


# --- pure logic ----------------------------------------------------------------------------------


def test_traces_and_formula_for_bert_base():
    class Base:  # ElasticBERT-base shape, spec §3
        hidden_size, intermediate_size, num_attention_heads, num_labels = 768, 3072, 12, 2

    assert static_trace(5, 2, 768) == [
        ("emb", (5,)),
        ("layer_1", (5, 768)),
        ("layer_2", (5, 768)),
        ("exit_2", (768,)),
    ]
    assert dynamic_trace(5, 2, 768, [1, 2, 3]) == [
        ("emb", (5,)),
        ("layer_1", (5, 768)),
        ("exit_1", (768,)),
        ("layer_2", (5, 768)),
        ("exit_2", (768,)),
    ]
    # exits on the top layers only: no exit call after layer 1
    assert [c[0] for c in dynamic_trace(5, 2, 768, [2, 3])] == ["emb", "layer_1", "layer_2", "exit_2"]
    n = 128
    twelve = static_trace(n, 12, 768)
    expected = 12 * (7_080_960 * n + 1_560 * n * n) + 1_536 * n + 589_824 + 1_536
    assert formula_macs(Base, twelve) == expected
    assert 2 * formula_macs(Base, twelve) / 1e6 == pytest.approx(22_368, abs=1)  # spec §3


def test_replay_rules():
    # 3 exits, 4 examples, 2 classes
    logits = np.array(
        [
            [[5.0, 0.0], [0.1, 0.0], [0.0, 0.2], [0.0, 3.0]],  # exit 1
            [[4.0, 0.0], [0.0, 0.2], [0.0, 0.1], [3.0, 0.0]],  # exit 2
            [[0.0, 4.0], [0.0, 6.0], [0.0, 5.0], [0.0, 3.0]],  # exit 3
        ]
    )
    exits = [1, 2, 3]
    pred, layer = replay_exits(logits, Point("static", 2), exits)
    assert pred.tolist() == [0, 1, 1, 0] and layer.tolist() == [2, 2, 2, 2]
    ent = entropy(logits)
    assert ent.shape == (3, 4) and ent[0, 1] > ent[0, 0]
    pred, layer = replay_exits(logits, Point("entropy", 0.1), exits)
    assert layer.tolist() == [1, 3, 3, 3] and pred.tolist() == [0, 1, 1, 1]
    pred, layer = replay_exits(logits, Point("entropy", 0.0), exits)  # never confident: full depth
    assert layer.tolist() == [3, 3, 3, 3]
    # patience 1: stop when the prediction repeats once
    pred, layer = replay_exits(logits, Point("patience", 1), exits)
    assert layer.tolist() == [2, 3, 2, 3] and pred.tolist() == [0, 1, 1, 1]
    pred, layer = replay_exits(logits, Point("patience", 0), exits)
    assert layer.tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="regression"):
        replay_exits(logits[..., :1], Point("entropy", 0.1), exits, regression=True)
    reg = np.array([[[1.0], [2.0]], [[1.05], [3.0]], [[1.5], [3.02]]])
    pred, layer = replay_exits(reg, Point("patience", 1), exits, regression=True, regression_threshold=0.1)
    assert layer.tolist() == [2, 3] and pred.tolist() == pytest.approx([1.05, 3.02])


def test_make_points_names():
    pts = make_points([1, 6], [0.2], [2])
    assert [p.name for p in pts] == ["static_k1", "static_k6", "entropy_0.2", "patience_t2"]
    with pytest.raises(ValueError):
        make_points()
    with pytest.raises(ValueError):
        make_points([1, 1])


def test_model_py_is_priced_as_the_formula(tmp_path):
    from elue.costs.flops import ModuleFlops
    from elue.elasticbert import ElasticBertConfig

    config = ElasticBertConfig(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        vocab_size=50,
        num_labels=3,
    )
    ns: dict = {}
    exec(compile(model_py_source(config), "model.py", "exec"), ns)
    assert sorted(ns["module_list"]) == sorted(
        ["emb", "layer_1", "layer_2", "layer_3", "exit_1", "exit_2", "exit_3"]
    )
    mf = ModuleFlops(ns["module_list"], ns["dummy_input"])
    for calls in (static_trace(9, 3, 48), dynamic_trace(17, 2, 48, [1, 2, 3])):
        assert sum(mf(name, shape) for name, shape in calls) == 2 * formula_macs(config, calls)
    # params: every exit counted (3 poolers + 3 classifiers)
    params = sum(p.numel() for p in ns["entire_model"].parameters())
    one_exit = 48 * 48 + 48 + 48 * 3 + 3
    ns2: dict = {}
    config.num_output_layers = 1
    exec(compile(model_py_source(config), "model.py", "exec"), ns2)
    assert params - sum(p.numel() for p in ns2["entire_model"].parameters()) == 2 * one_exit
    assert sorted(ns2["module_list"]) == ["emb", "exit_3", "layer_1", "layer_2", "layer_3"]


# --- running a model ----------------------------------------------------------------------------


def test_predict_writes_valid_files_with_matching_traces(tiny, tmp_path):
    from elue.costs.flops import ModuleFlops
    from elue.data import read_test_indices
    from elue.testfile import read_test_file

    data, ckpt = tiny
    out = tmp_path / "sub"
    points = make_points([1, 3], [0.6], [1])
    res = predict_submission(
        ckpt, "sst-2", out, points, data_dir=data, max_length=32, progress=False, log=lambda m: None
    )
    task_dir = out / "sst-2"
    assert sorted(p.name for p in task_dir.glob("*.tsv")) == [
        "entropy_0.6.tsv",
        "patience_t1.tsv",
        "static_k1.tsv",
        "static_k3.tsv",
    ]
    ns: dict = {}
    exec(compile((task_dir / "model.py").read_text(), "model.py", "exec"), ns)
    names = set(ns["module_list"])
    mf = ModuleFlops(ns["module_list"], ns["dummy_input"])
    indices = read_test_indices(data, "sst-2")

    from elue.elasticbert import ElasticBertConfig

    config = ElasticBertConfig.from_pretrained(str(ckpt))
    for summary in res.points:
        tf = read_test_file(summary.file, "sst-2", test_indices=indices, module_names=names)
        layers = []
        total = 0.0
        for row in range(len(tf)):
            trace = tf.trace(row)
            n = trace[0][1][0]
            assert trace[0] == ("emb", (n,))
            exit_layer = int(trace[-1][0].split("_")[1])
            assert trace[-1][0].startswith("exit_")
            assert [c[0] for c in trace if c[0].startswith("layer_")] == [
                f"layer_{i}" for i in range(1, exit_layer + 1)
            ]
            exits_seen = [c[0] for c in trace if c[0].startswith("exit_")]
            if summary.kind == "static":
                assert exits_seen == [f"exit_{exit_layer}"] and exit_layer == summary.value
            else:
                assert exits_seen == [f"exit_{i}" for i in range(1, exit_layer + 1)]
            layers.append(exit_layer)
            total += sum(mf(name, shape) for name, shape in trace) / 1e6
        assert summary.mean_exit_layer == pytest.approx(np.mean(layers))
        assert summary.formula_mflops == pytest.approx(total / len(tf))
        assert summary.exit_histogram == {k: layers.count(k) for k in set(layers)}
    # static k3 equals the deepest exit's prediction of a plain forward
    assert (task_dir / "points.json").is_file()
    del config


def test_early_exit_engine_agrees_with_replay(tiny, tmp_path):
    pytest.importorskip("elue.elasticbert.early_exit")
    data, ckpt = tiny
    points = make_points([], [0.3, 0.6], [1, 2])
    kw = dict(data_dir=data, max_length=32, progress=False, log=lambda m: None)
    a = predict_submission(ckpt, "sst-2", tmp_path / "a", points, engine="replay", **kw)
    b = predict_submission(ckpt, "sst-2", tmp_path / "b", points, engine="early-exit", batch_size=3, **kw)
    for pa, pb in zip(a.points, b.points, strict=True):
        assert Path(pa.file).read_text() == Path(pb.file).read_text(), pa.name


def test_cli_predict_then_evaluate(tiny, tmp_path):
    from typer.testing import CliRunner

    from elue.cli import app

    data, ckpt = tiny
    out = tmp_path / "sub"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["predict", "sst-2", "--model", str(ckpt), "--output", str(out), "--data", str(data),
         "--static", "1-3", "--entropy", "0.5", "--patience", "1", "--max-length", "32", "--no-progress", "--dev"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "static_k2" in result.stdout and "dev" in result.stdout

    from elue.submission import evaluate_submission

    res = evaluate_submission(out, data, trust_model_code=True)
    task = res.tasks["sst-2"]
    import json

    summary = {p["name"]: p for p in json.loads((out / "sst-2" / "points.json").read_text())["points"]}
    assert len(task.points) == 5
    for p in task.points:
        name = Path(p.file).stem
        assert p.mflops == pytest.approx(summary[name]["formula_mflops"], rel=1e-9)
        assert 0.0 <= p.performance <= 100.0


def test_regression_task_patience_and_static(tmp_path):
    """STS-B: one output, float predictions; patience compares values; entropy is refused."""
    from elue.data import read_test_indices
    from elue.testfile import read_test_file

    d = tmp_path / "data" / "sts-b"
    d.mkdir(parents=True)
    rows = [(f"the film {w}", f"a movie {w}") for w in POS + NEG]
    (d / "test.tsv").write_text(
        "index\tsentence1\tsentence2\n" + "".join(f"{i}\t{a}\t{b}\n" for i, (a, b) in enumerate(rows))
    )
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt", layers=2, num_labels=1, seed=1)
    kw = dict(data_dir=tmp_path / "data", max_length=32, progress=False, log=lambda m: None)
    res = predict_submission(
        ckpt, "sts-b", tmp_path / "sub", make_points([2], [], [1]), regression_threshold=0.25, **kw
    )
    indices = read_test_indices(tmp_path / "data", "sts-b")
    for p in res.points:
        tf = read_test_file(p.file, "sts-b", test_indices=indices)
        assert tf.pred.dtype == np.float64 and len(tf) == len(rows)
    # patience_t1 on STS-B means "changed by less than 0.25": points.json says so (it said nothing of it)
    settings = json.loads((tmp_path / "sub" / "sts-b" / "points.json").read_text())["settings"]
    assert settings == {
        "model": str(ckpt), "split": "test", "max_length": 32, "engine": "replay", "regression_threshold": 0.25
    }  # fmt: skip
    with pytest.raises(ValueError, match="regression|entropy"):
        predict_submission(ckpt, "sts-b", tmp_path / "sub2", make_points([], [0.2], []), **kw)


# --- refusals: a filled task folder, points the model cannot serve, another task's checkpoint ---------


def _kw(data):
    return dict(data_dir=data, max_length=32, progress=False, log=lambda m: None)


def test_filled_task_folder_refused_then_overwritten(tiny, tmp_path):
    data, ckpt = tiny
    out = tmp_path / "sub"
    predict_submission(ckpt, "sst-2", out, make_points([1, 2, 3], [0.3], [1]), **_kw(data))
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict_submission(ckpt, "sst-2", out, make_points([3]), **_kw(data))
    assert (out / "sst-2" / "entropy_0.3.tsv").is_file()  # refused: nothing removed
    (out / "sst-2" / "notes.txt").write_text("mine")
    predict_submission(ckpt, "sst-2", out, make_points([3]), overwrite=True, **_kw(data))
    assert sorted(p.name for p in (out / "sst-2").iterdir()) == [
        "model.py",
        "notes.txt",
        "points.json",
        "static_k3.tsv",
    ]


@pytest.fixture
def no_model_pass(monkeypatch):
    """Any model pass fails the test: the option checks must come first."""

    def boom(*a, **k):
        raise AssertionError("the model ran before the options were checked")

    monkeypatch.setattr("elue.elasticbert.finetune.predict_all_exits", boom)
    monkeypatch.setattr("elue.elasticbert.export._engine_run", boom)


@pytest.mark.parametrize(
    ("points", "kw", "message"),
    [
        (([4], [], []), {}, "static k=4: the model has 3 layers"),
        (([], [], [3]), {}, "the model has 3 exits, so patience can be at most 2"),
        (([], [], [1]), dict(regression_threshold=-1.0), "regression threshold -1.0"),
        (([3], [], []), dict(max_length=1000), "--max-length 1000: the model has 64 positions"),
        (([3], [], []), dict(batch_size=0), "batch size must be >= 1"),
    ],
)
def test_point_checks_before_the_model_runs(tiny, tmp_path, no_model_pass, points, kw, message):
    data, ckpt = tiny
    args = {**_kw(data), **kw}
    with pytest.raises(ValueError, match=re.escape(message)):
        predict_submission(ckpt, "sst-2", tmp_path / "sub", make_points(*points), **args)


def test_dynamic_points_on_a_single_exit_model_and_entropy_on_regression(tmp_path, no_model_pass):
    data = _write_data(tmp_path / "data")
    static = write_tiny_checkpoint(tmp_path / "static", layers=2, exits=1)
    for pts in (([], [0.3], []), ([], [], [1])):
        with pytest.raises(ValueError, match="single exit .*use --static 2"):
            predict_submission(static, "sst-2", tmp_path / "sub", make_points(*pts), **_kw(data))
    d = data / "sts-b"
    d.mkdir()
    (d / "test.tsv").write_text("index\tsentence1\tsentence2\n0\tthe film\ta movie\n")
    reg = write_tiny_checkpoint(tmp_path / "reg", layers=2, num_labels=1)
    with pytest.raises(ValueError, match="entropy exit needs a classifier"):
        predict_submission(reg, "sts-b", tmp_path / "sub", make_points([], [0.3], []), **_kw(data))


@pytest.mark.parametrize(
    ("regression", "patience", "threshold", "note"),
    [
        (False, [1], 0.2, "this task has 2 classes, so it is ignored"),
        (True, [], 0.2, "there are none, so it is ignored"),
        (True, [1], 0.2, None),  # used
        (False, [1], None, None),  # not given: nothing to say
    ],
)
def test_a_regression_threshold_no_point_uses_is_named(regression, patience, threshold, note):
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig

    config = ElasticBertConfig(num_hidden_layers=3, num_output_layers=3, num_labels=1 if regression else 2)
    said: list[str] = []
    points = make_points([2], [], patience)
    check_points(points, config, regression=regression, regression_threshold=threshold, log=said.append)
    assert [m for m in said if note in m] if note else said == []


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (([0], [], []), "static k=0"),
        (([], [-0.5], []), "entropy threshold -0.5"),
        (([], [float("nan")], []), "entropy threshold nan"),
        (([], [], [0]), "patience 0"),
        # a repeat is named alone (the whole list was printed, with no word of which point came twice)
        (([1, 2, 3, 4, 5, 6, 6], [], []), "operating points given more than once: static_k6 (2 times)"),
        (
            ([], [0.1, 0.2, 0.10], [1, 1]),
            "given more than once: entropy_0.1 (2 times), patience_t1 (2 times)",
        ),
    ],
)
def test_make_points_refuses_invalid_values(points, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_points(*points)


def test_checkpoint_of_another_task_refused(tiny, tmp_path):
    import json
    import shutil

    data, ckpt = tiny
    other = tmp_path / "mrpc-ckpt"
    shutil.copytree(ckpt, other)
    (other / "finetune.json").write_text(json.dumps({"task": "mrpc", "max_length": 32}))
    with pytest.raises(ValueError, match="fine-tuned on mrpc, not sst-2"):
        predict_submission(other, "sst-2", tmp_path / "a", make_points([3]), **_kw(data))
    res = predict_submission(other, "sst-2", tmp_path / "b", make_points([3]), any_task=True, **_kw(data))
    assert len(res.points) == 1
    (other / "finetune.json").write_text(json.dumps({"task": "sst2", "family": "glue"}))  # GLUE spelling
    predict_submission(other, "sst-2", tmp_path / "c", make_points([3]), **_kw(data))


def test_a_runs_last_checkpoint_keeps_the_runs_task_and_max_length(tiny, tmp_path):
    """RUN/last holds no finetune.json: the run's options (RUN/config.json) say what it was fine-tuned on and at
    which max length (an MRPC run's last/ predicted SST-2 without a word, at 512 tokens where it trained at 64)."""
    import json
    import shutil
    from dataclasses import asdict

    from elue.elasticbert.finetune_config import FinetuneConfig

    data, ckpt = tiny
    run = tmp_path / "run"
    shutil.copytree(ckpt, run / "last")
    options = FinetuneConfig(task="MRPC", model=str(ckpt), output_dir=str(run), max_length=6)
    (run / "config.json").write_text(json.dumps(asdict(options)))
    kw = dict(data_dir=data, progress=False, log=lambda m: None)  # no max_length: the run's
    with pytest.raises(ValueError, match=r"fine-tuned on MRPC, not sst-2 \(the run's config.json\)"):
        predict_submission(run / "last", "sst-2", tmp_path / "a", make_points([3]), **kw)
    res = predict_submission(run / "last", "sst-2", tmp_path / "b", make_points([3]), any_task=True, **kw)
    assert res.settings["max_length"] == 6
    traces = (tmp_path / "b" / "sst-2" / "static_k3.tsv").read_text().splitlines()[1:]
    assert max(int(re.search(r"\((\d+)\),emb", row).group(1)) for row in traces) == 6


def test_dev_scoring_is_announced_and_shown_like_the_test_split(tiny, tmp_path, capsys):
    """--dev ran every point on the dev split after the test split's bar had ended, without a line or a bar (IMDb's
    5,000 dev reviews: minutes of silence)."""
    data, ckpt = tiny
    said: list[str] = []
    res = predict_submission(
        ckpt, "sst-2", tmp_path / "sub", make_points([3], [0.3]), data_dir=data, dev_split="dev",
        progress=True, log=said.append,
    )  # fmt: skip
    assert all(p.dev is not None for p in res.points)
    test_line = said.index(next(m for m in said if m.startswith("sst-2 test: 10 rows")))
    dev_line = said.index(next(m for m in said if m.startswith("sst-2 dev: 8 rows, mean ")))
    assert test_line < dev_line < said.index(next(m for m in said if m.startswith("static_k3:")))
    bars = capsys.readouterr().err
    assert "\rpredict:   0%" in bars and "\rdev:   0%" in bars  # a bar for each split


def test_the_early_exit_engine_shows_a_bar_per_dynamic_point(tiny, tmp_path, capsys):
    """--engine early-exit ran each dynamic point without a bar after the static points' bar had ended (IMDb's
    25,000 test reviews: minutes of silence per point)."""
    data, ckpt = tiny
    predict_submission(
        ckpt, "sst-2", tmp_path / "sub", make_points([3], [0.3], [2]), data_dir=data, engine="early-exit",
        progress=True, log=str,
    )  # fmt: skip
    bars = capsys.readouterr().err
    assert "\rpredict:   0%" in bars  # the static point's full pass
    assert "\rpredict entropy_0.3:   0%|          | 0/10 " in bars  # counted in examples: the 10 test rows
    assert "\rpredict patience_t2:   0%|          | 0/10 " in bars


def test_the_log_says_how_many_test_rows_max_length_cuts(tiny, tmp_path):
    data, ckpt = tiny
    said: list[str] = []
    predict_submission(
        ckpt, "sst-2", tmp_path / "sub", make_points([3]), data_dir=data, max_length=6, progress=False,
        log=said.append,
    )  # fmt: skip
    rows = (tmp_path / "sub" / "sst-2" / "static_k3.tsv").read_text().splitlines()[1:]
    at_6 = sum("(6),emb" in row for row in rows)
    assert 0 < at_6 < 10
    assert any(
        m.endswith(f"(max_length 6; {at_6} test rows reach it (longer texts are cut))") for m in said
    ), said


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patience", "-1"], "values must be whole numbers >= 1"),
        (["--entropy", "-0.5"], "entropy threshold -0.5"),
        (["--regression-threshold", "-1", "--static", "3"], "--regression-threshold"),
        (["--hub", "--data", "x", "--static", "3"], "with --hub use --hub-path"),
        (["--hub-path", "/nowhere", "--static", "3"], "--hub-path is the hub dataset"),
        (["--static", "3", "--batch-size", "0"], "--batch-size"),
        (["--static", "3", "--max-length", "1000"], "the model has 64 positions"),
    ],
)
def test_cli_predict_bad_options(tiny, tmp_path, args, message):
    from typer.testing import CliRunner

    from elue.cli import app

    data, ckpt = tiny
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "sst-2",
            "--model",
            str(ckpt),
            "--output",
            str(tmp_path / "s"),
            "--data",
            str(data),
            *args,
        ],
    )
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert "Traceback" not in result.output


def test_cli_repeated_point_options_merge(tiny, tmp_path):
    from typer.testing import CliRunner

    from elue.cli import app

    data, ckpt = tiny
    out = tmp_path / "s"
    result = CliRunner().invoke(
        app,
        ["predict", "sst-2", "--model", str(ckpt), "--output", str(out), "--data", str(data), "--max-length", "32",
         "--static", "3", "--static", "1", "--patience", "1", "--patience", "2", "--no-progress", "--limit", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "sst-2").glob("*.tsv"))
    assert names == ["patience_t1.tsv", "patience_t2.tsv", "static_k1.tsv", "static_k3.tsv"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        # spaces were removed before the lists were split: '1 2' was layer 12, '0.1 0.6' the threshold 0.16
        (["--static", "1 2"], ["static_k1", "static_k2"]),
        (["--entropy", "0.1 0.6"], ["entropy_0.1", "entropy_0.6"]),
        (
            ["--entropy", " 0.1, 0.6 ", "--patience", "1 2"],
            ["entropy_0.1", "entropy_0.6", "patience_t1", "patience_t2"],
        ),
        (["--static", "1 - 3"], ["static_k1", "static_k2", "static_k3"]),
    ],
)
def test_cli_point_lists_separated_by_spaces(tiny, tmp_path, args, names):
    data, ckpt = tiny
    out = tmp_path / "s"
    result = invoke_cli(
        ["predict", "sst-2", "--model", ckpt, "--output", out, "--data", data, "--max-length", "32", "--limit", "4",
         "--no-progress", *args]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in (out / "sst-2").glob("*.tsv")) == names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patience", "1 -2"], "'-2': values must be whole numbers >= 1"),
        (["--static", "3 0"], "static k=0"),
    ],
)
def test_cli_point_lists_with_spaces_refused_item_by_item(tiny, tmp_path, args, message):
    data, ckpt = tiny
    result = invoke_cli(
        ["predict", "sst-2", "--model", ckpt, "--output", tmp_path / "s", "--data", data, *args]
    )
    assert result.exit_code in (1, 2) and message in result.output, result.output


def test_an_output_that_is_a_data_folder_is_refused_and_left_whole(tiny, tmp_path):
    """`--output ../shared/data --overwrite` (the --data folder typed twice) removed the task's train.tsv,
    dev.tsv, test.tsv and test_labels.tsv as the *.tsv of an earlier run, after predicting from them."""
    data, ckpt = tiny
    copy = shutil.copytree(data, tmp_path / "data")
    before = sorted(p.name for p in (copy / "sst-2").iterdir())
    result = invoke_cli(
        ["predict", "sst-2", "--model", ckpt, "--output", copy, "--data", copy, "--static", "3", "--overwrite",
         "--max-length", "32", "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 1 and "is a task folder of ELUE data (it holds dev.tsv" in result.output
    assert sorted(p.name for p in (copy / "sst-2").iterdir()) == before
    # a copy of the data as --output, the data read from elsewhere: refused by its files
    with pytest.raises(FileExistsError, match="not of a submission"):
        predict_submission(ckpt, "sst-2", copy, make_points([3]), overwrite=True, **_kw(data))
    assert sorted(p.name for p in (copy / "sst-2").iterdir()) == before


def test_an_untrained_checkpoint_or_an_output_file_is_refused_before_running(tiny, tmp_path):
    from elue.elasticbert import ElasticBertForSequenceClassification
    from elue.elasticbert.export import load_finetuned

    data, ckpt = tiny
    model = ElasticBertForSequenceClassification.from_pretrained(str(ckpt))
    untrained = tmp_path / "converted"  # what `elue convert` gives: no classifier weights
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    model.save_pretrained(untrained, state_dict=state)
    shutil.copy(ckpt / "vocab.txt", untrained / "vocab.txt")
    with pytest.raises(ValueError, match="holds no classifier weights .*not fine-tuned"):
        load_finetuned(untrained)
    (tmp_path / "afile").write_text("")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        predict_submission(
            ckpt, "sst-2", tmp_path / "afile", data_dir=data, points=make_points(static=[1]), log=print
        )


def test_a_checkpoint_with_nan_weights_is_refused(tiny, tmp_path):
    """A diverged run's checkpoint (NaN weights): its NaN logits read as class 0 for every example (argmax), and
    `elue predict` wrote a submission of 0s without a word. Now it is refused, in one line, before any file."""
    import torch

    from elue.elasticbert import ElasticBertForSequenceClassification

    data, ckpt = tiny
    model = ElasticBertForSequenceClassification.from_pretrained(str(ckpt))
    with torch.no_grad():
        model.elasticbert.encoder.layer[1].output.dense.weight[0, 0] = float("nan")
    diverged = tmp_path / "diverged"
    model.save_pretrained(diverged)
    shutil.copy(ckpt / "vocab.txt", diverged / "vocab.txt")
    out = tmp_path / "sub"
    result = invoke_cli(
        ["predict", "sst-2", "--model", diverged, "--output", out, "--data", data, "--static", "1", "--cpu",
         "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "holds NaN or infinite weights (elasticbert.encoder.layer.1.output.dense.weight; 1 tensors)" in (
        result.output
    )
    assert not out.exists()


def test_replay_decides_ties_with_tau_as_the_engine_does():
    """τ equal to an observed entropy (a quantile, say): the replay computes entropies as the engine does, so
    such an example leaves at the same exit in both."""
    import torch

    from elue.elasticbert.early_exit import _entropy_exits

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 300, 2)).astype(np.float32)  # [E, N, C]
    for tau in np.quantile(
        [float(v) for v in torch.special.entr(torch.softmax(torch.from_numpy(logits), -1)).sum(-1).flatten()],
        [0.25, 0.5, 0.75],
    ):
        tau = float(np.float32(tau))
        _, layer = replay_exits(logits, Point("entropy", tau), [1, 2, 3, 4])
        # the engine's rule, exit by exit
        want = np.full(300, 4)
        left = np.ones(300, dtype=bool)
        for e in range(4):
            out = _entropy_exits(torch.from_numpy(logits[e]), tau).numpy() & left
            want[out] = e + 1
            left &= ~out
        assert (layer == want).all()
    # and at every observed entropy exactly
    from elue.elasticbert.early_exit import entropy_from_logits

    observed = entropy_from_logits(torch.from_numpy(logits[1])).numpy()
    for tau in observed[:20].tolist():
        _, layer = replay_exits(logits, Point("entropy", tau), [1, 2, 3, 4])
        assert (layer[:20] == [_first_exit(logits[:, i], tau) for i in range(20)]).all()


def _first_exit(row_logits, tau):  # noqa: ANN001, ANN202
    import torch

    from elue.elasticbert.early_exit import _entropy_exits

    for e in range(len(row_logits)):
        if bool(_entropy_exits(torch.from_numpy(row_logits[e : e + 1]), tau)[0]):
            return e + 1
    return len(row_logits)


def test_point_names_tell_close_thresholds_apart():
    names = [p.name for p in make_points(entropy=[0.6929956, 0.6929957, 0.3, 1e-05])]
    assert names == ["entropy_0.6929956", "entropy_0.6929957", "entropy_0.3", "entropy_1em05"]


def test_offline_hub_id_in_the_cache_is_used_not_called_a_missing_folder(tmp_path):
    """HF_HUB_OFFLINE is how a downloaded hub model is used without network: `--model org/name` must load from
    the cache, as `from_pretrained` does. Before: 'no such folder'. One that is not cached still fails at once."""
    from elue.elasticbert.export import predict_submission
    from elue.elasticbert.export_points import make_points

    data, ckpt = write_sst2(tmp_path / "data"), write_tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "sub"
    predict_submission(ckpt, "sst-2", out, make_points(static=[3]), data_dir=data, progress=False, log=str)
    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--tiny-sst2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (cache / "models--someorg--tiny-sst2" / "refs").mkdir()
    (cache / "models--someorg--tiny-sst2" / "refs" / "main").write_text("abc123")
    for f in ckpt.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    env = dict(child_env(), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    elue = str(Path(sys.executable).with_name("elue"))
    common = ["--output", str(tmp_path / "hubsub"), "--data", str(data), "--static", "3", "--no-progress"]
    proc = subprocess.run([elue, "predict", "sst-2", "--model", "someorg/tiny-sst2", *common], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "hubsub" / "sst-2" / "static_k3.tsv").read_text() == (
        out / "sst-2" / "static_k3.tsv"
    ).read_text()
    proc = subprocess.run([elue, "predict", "sst-2", "--model", "someorg/not-cached", *common], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --model someorg/not-cached: no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE)"
    )


@pytest.mark.parametrize("max_length", [1, 2])
def test_max_length_shorter_than_the_special_tokens_is_refused(tiny, tmp_path, max_length):
    """[CLS] text [SEP] cannot be cut to 1 or 2 tokens: the tokenizer then passed whole texts on (an IMDb review
    of 1,342 tokens crashed the 512-position model with a traceback; short ones were written untruncated)."""
    data, ckpt = tiny
    with pytest.raises(ValueError, match=rf"--max-length {max_length}: sst-2 inputs take 2 special tokens"):
        predict_submission(
            ckpt, "sst-2", tmp_path / "sub", make_points(static=[3]), data_dir=data, max_length=max_length,
            progress=False, log=lambda m: None,
        )  # fmt: skip
    assert not (tmp_path / "sub" / "sst-2").exists()


def test_cli_predict_on_a_full_disk_names_the_output(tiny, tmp_path, monkeypatch):
    """A full disk while writing the points said only "error: [Errno 28] No space left on device"."""
    import errno
    import os

    import elue.testfile

    data, ckpt = tiny

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(elue.testfile, "write_test_file", no_space)
    out = tmp_path / "s"
    result = invoke_cli(
        ["predict", "sst-2", "--model", ckpt, "--output", out, "--data", data, "--max-length", "32", "--limit", "4",
         "--no-progress", "--static", "1"]
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"error: writing to {out} failed (no space left on the device)" in result.output, result.output
