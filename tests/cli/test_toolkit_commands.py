from __future__ import annotations

import json

import pytest
from toolkit_fixtures import TINY_MODEL_PY, TINY_PARAMS, write_answers, write_submission
from typer.testing import CliRunner

from elue.cli import app
from elue.costs.sandbox import bwrap_available

runner = CliRunner()
needs_bwrap = pytest.mark.skipif(not bwrap_available()[0], reason="bubblewrap missing or unusable here")


def test_tasks_lists_all_six():
    res = runner.invoke(app, ["tasks"])
    assert res.exit_code == 0
    for name in ("sst-2", "imdb", "snli", "scitail", "mrpc", "sts-b"):
        assert name in res.output
    # not a terminal: rich's 80 columns, and nothing cut short
    assert "549,367" in res.output and "hypothesis" in res.output and "…" not in res.output
    assert "Official ELUE split sizes; a local copy may hold fewer rows" in " ".join(res.output.split())


def test_names_are_printed_literally_not_as_markup(tmp_path, priced_once):
    answers = write_answers(tmp_path / "answers")
    sub = tmp_path / "sub"
    (sub / "sst-2").mkdir(parents=True)
    write_submission(sub, name="sst-2/[bold]y.tsv")
    out = tmp_path / "out[/b]x.json"
    res = runner.invoke(
        app, ["evaluate", str(sub), "--answers", str(answers), "--json", str(out), "--trust-model-code"]
    )
    assert res.exit_code == 0, res.output
    assert "[bold]y.tsv" in res.output and "out[/b]x.json" in res.output
    model = tmp_path / "model.py"
    model.write_text(
        'from torch import nn\nmodule_list = {"[/x]": nn.Linear(4, 4)}\nentire_model = nn.Linear(4, 4)\n'
    )
    res = runner.invoke(app, ["flops", str(model), "--module", "[/x]", "--shape", "4", "--trust-model-code"])
    assert res.exit_code == 0, res.output
    assert "[/x] at (4,)" in res.output


def test_flops_of_one_call(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(TINY_MODEL_PY)
    res = runner.invoke(
        app, ["flops", str(model), "--module", "layer_1", "--shape", "24,32", "--trust-model-code"]
    )
    assert res.exit_code == 0, res.output
    assert f"{2 * 1024 * 24:,} FLOPs" in res.output
    assert f"{TINY_PARAMS:,} parameters" in res.output
    # a tiny model's figures with significant digits, as in the tables: not "0.049 MFLOPs" and "(0.01M)"
    assert "= 0.0492 MFLOPs" in res.output and f"({TINY_PARAMS / 1e6:.3g}M)" in res.output


def test_flops_names_a_leading_1_that_looks_like_a_batch_dimension(tmp_path):
    """`elue flops ... --shape 1,24,32` priced a (1, 1, 24, 32) input without a word (shapes are per example;
    the pricer adds the batch dimension): a note now says so and gives the shape without it."""
    model = tmp_path / "model.py"
    model.write_text(TINY_MODEL_PY)
    args = ["flops", str(model), "--module", "layer_1", "--trust-model-code", "--shape"]
    res = runner.invoke(app, [*args, "1,24,32"])
    assert res.exit_code == 0, res.output
    assert "note: shapes are per example" in res.output and "give --shape 24,32" in res.output
    res = runner.invoke(app, [*args, "24,32"])
    assert res.exit_code == 0 and "note" not in res.output, res.output


def test_flops_bad_shape_and_unknown_module(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(TINY_MODEL_PY)
    res = runner.invoke(
        app, ["flops", str(model), "--module", "layer_1", "--shape", "24,x", "--trust-model-code"]
    )
    assert res.exit_code == 1 and "not a comma-separated list" in res.output
    res = runner.invoke(
        app, ["flops", str(model), "--module", "nope", "--shape", "4,32", "--trust-model-code"]
    )
    assert res.exit_code == 1 and "nope" in res.output and "layer_1" in res.output


def test_evaluate_writes_json(tmp_path, priced_once):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    out = tmp_path / "out" / "result.json"
    res = runner.invoke(
        app, ["evaluate", str(sub), "--answers", str(answers), "--json", str(out), "--trust-model-code"]
    )
    assert res.exit_code == 0, res.output
    assert "sst-2" in res.output and "ELUE score" in res.output and "incomplete" in res.output
    data = json.loads(out.read_text())
    assert data["elue_score"] is None
    assert data["tasks"]["sst-2"]["points"][0]["examples"] == 5


def test_evaluate_with_replaced_baseline(tmp_path, priced_once):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    base = tmp_path / "base.json"
    # a flat baseline at 50: the score is the performance minus 50
    base.write_text(json.dumps({"name": "flat", "tasks": {"sst-2": [[0.001, 50.0]]}}))
    out = tmp_path / "r.json"
    args = ["evaluate", str(sub), "--answers", str(answers), "--baseline", str(base), "--json", str(out)]
    res = runner.invoke(app, [*args, "--trust-model-code"])
    assert res.exit_code == 0, res.output
    task = json.loads(out.read_text())["tasks"]["sst-2"]
    assert task["elue_score"] == pytest.approx(task["points"][0]["performance"] - 50.0)


def test_validate_reports_missing_rows(tmp_path, priced_once):
    data = write_answers(tmp_path / "data")
    sub = write_submission(tmp_path / "sub", rows=[(0, 1, 5, 1), (1, 0, 7, 2)])
    res = runner.invoke(app, ["validate", str(sub), "--data", str(data), "--trust-model-code"])
    assert res.exit_code == 1
    assert "sst-2.tsv" in res.output and "missing" in res.output


def test_untrusted_code_refused_without_sandbox(tmp_path, monkeypatch):
    data = write_answers(tmp_path / "data")
    sub = write_submission(tmp_path / "sub")
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    import elue.costs.sandbox as sandbox

    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: None)
    res = runner.invoke(app, ["validate", str(sub), "--data", str(data)])
    assert res.exit_code == 1
    assert "bubblewrap" in res.output.lower() or "bwrap" in res.output
    assert "--trust-model-code" in res.output


HOSTILE = """
import socket, pathlib
from torch import nn
leaks = []
try:
    leaks.append(pathlib.Path({key!r}).read_text())
except Exception:
    pass
try:
    pathlib.Path({outside!r}).write_text("pwned")
except Exception:
    pass
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except Exception:
    pass
if leaks:
    raise SystemExit("LEAKED " + leaks[0][:20])
raise RuntimeError("hostile model gave up")
"""


@needs_bwrap
def test_hostile_model_py_is_contained(tmp_path):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    key = answers / "sst-2" / "test_labels.tsv"
    outside = tmp_path / "pwned.txt"
    (sub / "model.py").write_text(HOSTILE.format(key=str(key), outside=str(outside)))
    res = runner.invoke(app, ["evaluate", str(sub), "--answers", str(answers)])
    assert res.exit_code == 1
    assert "hostile model gave up" in res.output  # it ran, found nothing, and its error is reported
    assert "LEAKED" not in res.output
    assert not outside.exists()


def test_evaluate_says_which_tasks_lack_baseline_points(tmp_path, priced_once):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"name": "imdb only", "tasks": {"imdb": [[1.0, 50.0]]}}))
    args = ["evaluate", str(sub), "--answers", str(answers), "--baseline", str(base), "--trust-model-code"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "the baseline has no points for sst-2" in " ".join(res.output.split())


def test_evaluate_refuses_unwritable_json_before_scoring(tmp_path):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    for bad in (tmp_path, sub / "model.py" / "x.json"):
        res = runner.invoke(app, ["evaluate", str(sub), "--answers", str(answers), "--json", str(bad)])
        assert res.exit_code == 1 and "--json" in res.output and "Traceback" not in res.output


def test_baseline_not_utf8_named(tmp_path):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    base = tmp_path / "utf16.json"
    base.write_bytes(b"\xff\xfe{")
    res = runner.invoke(app, ["evaluate", str(sub), "--answers", str(answers), "--baseline", str(base)])
    assert res.exit_code == 1 and "utf16.json: not UTF-8" in res.output


# the last dimension is layer_1's 32 features, so that the shape itself, not the module, is what is refused
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("3,,32", "not a comma-separated list of positive integers"),
        ("-3,32", "not a comma-separated list of positive integers"),
        ("0,32", "shape dimensions must be positive"),
        ("2147483648,32", "shape dimension 2147483648 is too large"),
        ("", "not a comma-separated list of positive integers"),
        ("9" * 5000 + ",32", "too large"),
    ],
)
def test_flops_shape_is_strict(tmp_path, shape, message):
    model = tmp_path / "model.py"
    model.write_text(TINY_MODEL_PY)
    res = runner.invoke(
        app, ["flops", str(model), "--module", "layer_1", "--shape", shape, "--trust-model-code"]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert message in " ".join(res.output.split()), res.output


def test_flops_on_a_folder_says_so(tmp_path):
    res = runner.invoke(app, ["flops", str(tmp_path), "--module", "layer_1", "--shape", "4,32"])
    assert res.exit_code == 1 and "is a folder; give the model.py file" in res.output


def test_tiny_models_costs_are_printed_with_significant_digits(capsys):
    """A tiny model's 0.0048M parameters and 0.048 MFLOPs printed as 0.00 / 0.0 (the JSON had them)."""
    from types import SimpleNamespace

    from elue.cli.toolkit_commands import _print_result
    from elue.scoring import shown_millions as _size

    assert [_size(v, 1) for v in (0.0481, 0.0, 1234.56, 7.0)] == ["0.0481", "0.0", "1,234.6", "7.0"]
    point = SimpleNamespace(file="sst-2.tsv", examples=3, mflops=0.0481, performance=None, metrics={})
    task = SimpleNamespace(params_m=0.00544, elue_score=None, points=[point])
    _print_result(SimpleNamespace(tasks={"SST-2": task}, elue_score=None), with_performance=False)
    out = capsys.readouterr().out
    assert "params 0.00544M" in out and "0.0481" in out


def test_the_exact_parameter_count_is_printed_beside_the_millions(capsys):
    """40,004,000 parameters were printed 'params 40.00M' only: a model over the <= 40M track's budget (spec §5)
    read as within it."""
    from types import SimpleNamespace

    from elue.cli.toolkit_commands import _print_result

    point = SimpleNamespace(file="sst-2.tsv", examples=3, mflops=1.0, performance=None, metrics={})
    tasks = {
        "sst-2": SimpleNamespace(params_m=40_004_000 / 1e6, elue_score=None, points=[point]),
        "imdb": SimpleNamespace(params_m=130 / 1e6, elue_score=None, points=[point]),
    }
    _print_result(SimpleNamespace(tasks=tasks, elue_score=None), with_performance=False)
    out = capsys.readouterr().out
    assert "params 40.00M (40,004,000)" in out and "params 0.00013M (130)" in out


def test_a_score_that_rounds_to_zero_is_printed_without_a_sign(capsys):
    """A model matching the baseline up to rounding (-0.004, or the baseline's own -7e-15) was printed
    'ELUE score -0.00' and 'Overall ELUE score: -0.00' (the leaderboard's pages show 0.00)."""
    from types import SimpleNamespace

    from elue.cli.toolkit_commands import _fmt, _print_result

    assert [_fmt(v) for v in (-0.004, -7e-15, -0.0, 0.004, -0.005001, -1.0, None)] == [
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "-0.01",
        "-1.00",
        "—",
    ]
    point = SimpleNamespace(file="sst-2.tsv", examples=3, mflops=1.0, performance=-0.001, metrics={})
    task = SimpleNamespace(params_m=1.0, elue_score=-0.004, points=[point])
    result = SimpleNamespace(tasks={"sst-2": task}, elue_score=-0.001, unchecked={})
    _print_result(result, with_performance=True)
    out = capsys.readouterr().out
    assert "-0.00" not in out and "ELUE score 0.00" in out and "Overall ELUE score: 0.00" in out


def test_validate_and_evaluate_print_rank_warnings_and_succeed(tmp_path, priced_once):
    data = write_answers(tmp_path / "data")
    sub = write_submission(tmp_path / "sub")
    path = sub / "sst-2.tsv"
    # index 3 (line 5) writes a batch dimension on layer_1's input: legal to run, so a warning, not an error
    path.write_text(path.read_text().replace("(9,32),layer_1", "(1,9,32),layer_1"))
    res = runner.invoke(app, ["validate", str(sub), "--data", str(data), "--trust-model-code"])
    assert res.exit_code == 0, res.output
    assert "warning: " in res.output and "'layer_1' is called with inputs of different ranks" in res.output
    assert "line 5" in res.output and "1 warning above" in res.output
    res = runner.invoke(app, ["evaluate", str(sub), "--answers", str(data), "--trust-model-code"])
    assert res.exit_code == 0, res.output
    assert "different ranks" in res.output and "(1,9,32)" in res.output


def test_validate_checks_the_tasks_it_has_data_for_and_names_the_others(tmp_path, priced_once):
    """`../shared/data` has no SciTail: a six-task submission stopped at it, and five went unchecked."""
    data = write_answers(tmp_path / "data")
    sub = write_submission(tmp_path / "sub")
    (sub / "mrpc.tsv").write_text("index\tpred\tmodules\n0\t1\t(5),emb\n")
    res = runner.invoke(app, ["validate", str(sub), "--data", str(data), "--trust-model-code"])
    assert res.exit_code == 1, res.output
    assert "sst-2.tsv" in res.output  # the table of what was checked
    assert "error: checked sst-2; not checked (no local test set):" in res.output
    assert f"{data}: no folder mrpc/ with its test.tsv" in res.output and "OK" not in res.output
    (sub / "sst-2.tsv").unlink()  # nothing left to check: the error alone
    res = runner.invoke(app, ["validate", str(sub), "--data", str(data), "--trust-model-code"])
    assert res.exit_code == 1 and "no folder mrpc/" in res.output and "checked" not in res.output, res.output


def test_validate_checks_the_others_when_a_task_folder_has_no_test_set(tmp_path, priced_once):
    """A task folder under --data without test.tsv (train/dev only) ended validation with that one error,
    and the tasks that do have a test set were not checked."""
    data = write_answers(tmp_path / "data")
    (data / "mrpc").mkdir()
    (data / "mrpc" / "dev.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
    sub = write_submission(tmp_path / "sub")
    (sub / "mrpc.tsv").write_text("index\tpred\tmodules\n0\t1\t(5),emb\n")
    res = runner.invoke(app, ["validate", str(sub), "--data", str(data), "--trust-model-code"])
    assert res.exit_code == 1, res.output
    assert "sst-2.tsv" in res.output  # checked
    assert "error: checked sst-2; not checked (no local test set):" in res.output
    assert "no test.tsv or test.tsv.gz for mrpc" in res.output and "OK" not in res.output


def test_evaluate_scores_the_tasks_it_has_answer_keys_for_and_names_the_others(tmp_path, priced_once):
    """A six-task submission against `../shared/data` (no SciTail key) was not scored at all; the tasks with
    a key are now scored, printed and written to --json, the others named there and in the error."""
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    (sub / "mrpc.tsv").write_text("index\tpred\tmodules\n0\t1\t(5),emb\n")
    out = tmp_path / "result.json"
    res = runner.invoke(
        app, ["evaluate", str(sub), "--answers", str(answers), "--json", str(out), "--trust-model-code"]
    )
    assert res.exit_code == 1, res.output
    assert "sst-2.tsv" in res.output and "no answer key for mrpc" in res.output
    assert "error: scored sst-2; not scored (no answer key):" in res.output
    written = json.loads(out.read_text())
    assert list(written["tasks"]) == ["sst-2"] and written["elue_score"] is None
    assert written["not_scored"] == {
        "mrpc": f"no answer key for mrpc: {answers / 'mrpc' / 'test_labels.tsv'}"
    }
    (sub / "sst-2.tsv").unlink()  # nothing left to score: the error alone, nothing written
    out.unlink()
    res = runner.invoke(
        app, ["evaluate", str(sub), "--answers", str(answers), "--json", str(out), "--trust-model-code"]
    )
    assert res.exit_code == 1 and "no answer key for mrpc" in res.output and "scored" not in res.output
    assert not out.exists()


def test_evaluate_json_holds_each_tasks_warnings(tmp_path, priced_once):
    """The rank warnings `elue evaluate` prints were missing from --json: each task now has "warnings", the
    warnings about the model.py that priced it (an empty list when there are none); the other keys stay."""
    answers = write_answers(tmp_path / "answers")
    out = tmp_path / "r.json"
    args = [
        "evaluate",
        str(tmp_path / "ok"),
        "--answers",
        str(answers),
        "--json",
        str(out),
        "--trust-model-code",
    ]
    write_submission(tmp_path / "ok")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    task = json.loads(out.read_text())["tasks"]["sst-2"]
    # the tiny model's ~0 MFLOPs lie below the default baseline's range: that is the one warning
    assert len(task["warnings"]) == 1 and "an extrapolation" in task["warnings"][0]
    assert set(task) == {"params_m", "elue_score", "model_py", "points", "warnings"}
    sub = write_submission(tmp_path / "sub")
    path = sub / "sst-2.tsv"
    path.write_text(path.read_text().replace("(9,32),layer_1", "(1,9,32),layer_1"))  # line 5
    args[1] = str(sub)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    warning, extrapolation = json.loads(out.read_text())["tasks"]["sst-2"]["warnings"]
    assert "an extrapolation" in extrapolation
    assert "'layer_1' is called with inputs of different ranks" in warning
    assert f"(1,9,32) at {path}: line 5" in warning


def test_help_gives_flags_no_type(capsys, monkeypatch):
    """`elue X --help` (the entry point): a flag takes no value, so it shows no `<bool>`; options keep types."""
    from elue.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    for command in (["finetune"], ["evaluate"], []):
        with pytest.raises(SystemExit) as e:
            main([*command, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "--help" in out and "<bool>" not in out, command
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    main_out = capsys.readouterr().out
    assert "<float range>" in main_out and "--cpu" in main_out


def test_a_mistyped_or_one_task_data_folder_is_said_once(tmp_path, priced_once):
    """`--answers ../shared/dat` said "no answer key for <task>" once per task, and `--answers ../shared/data/sst-2`
    (one task's folder, read as sst-2/sst-2/...) the same, with no word of what was wrong: each is now one line
    that says it, before model.py is started."""
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    (sub / "mrpc.tsv").write_text("index\tpred\tmodules\n0\t1\t(5),emb\n")
    cases = [
        (["evaluate", str(sub), "--answers", str(tmp_path / "answrs")], "--answers", "no such folder"),
        (
            ["evaluate", str(sub), "--answers", str(answers / "sst-2")],
            "--answers",
            "looks like one task's folder",
        ),
        (["validate", str(sub), "--data", str(tmp_path / "answrs")], "--data", "no such folder"),
        (["validate", str(sub), "--data", str(answers / "sst-2")], "--data", "looks like one task's folder"),
    ]
    for args, option, said in cases:
        res = runner.invoke(app, [*args, "--trust-model-code"])
        assert res.exit_code == 1, res.output
        assert res.output.startswith(f"error: {option} ") and said in res.output, res.output
        assert "mrpc" not in res.output and "sst-2.tsv" not in res.output  # said once, nothing scored
