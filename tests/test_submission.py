from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from toolkit_fixtures import (
    SST2_KEY,
    SST2_ROWS,
    TINY_MODEL_PY,
    TINY_PARAMS,
    tiny_flops,
    tiny_trace,
    write_answers,
    write_submission,
)

from elue.submission import SubmissionError, discover, evaluate_submission, validate_submission


def test_discover_layouts(tmp_path):
    (tmp_path / "model.py").write_text(TINY_MODEL_PY)
    (tmp_path / "sst-2.tsv").write_text("x")
    (tmp_path / "snli").mkdir()
    (tmp_path / "snli" / "a.tsv").write_text("x")
    (tmp_path / "snli" / "b.tsv").write_text("x")
    (tmp_path / "snli" / "model.py").write_text(TINY_MODEL_PY)
    found = discover(tmp_path)
    assert list(found) == ["sst-2", "snli"]
    assert found["sst-2"].model_py == tmp_path / "model.py"
    assert found["snli"].model_py == tmp_path / "snli" / "model.py"
    assert [p.name for p in found["snli"].test_files] == ["a.tsv", "b.tsv"]


def test_discover_errors(tmp_path):
    (tmp_path / "sst2x.tsv").write_text("x")
    with pytest.raises(SubmissionError, match="unknown ELUE task 'sst2x'.*available: sst-2"):
        discover(tmp_path)
    (tmp_path / "sst2x.tsv").unlink()
    (tmp_path / "imdb.tsv").write_text("x")
    with pytest.raises(SubmissionError, match="no model.py"):
        discover(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SubmissionError, match="no test files"):
        discover(empty)


def test_evaluate_by_hand(tmp_path):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    result = evaluate_submission(sub, answers, trust_model_code=True)
    task = result.tasks["sst-2"]
    assert task.params_m == pytest.approx(TINY_PARAMS / 1e6)
    (point,) = task.points
    key = dict(SST2_KEY)
    correct = sum(key[i] == p for i, p, _, _ in SST2_ROWS)
    assert point.performance == pytest.approx(100 * correct / len(SST2_ROWS))
    expected = np.mean([tiny_flops(n, e) for _, _, n, e in SST2_ROWS]) / 1e6
    assert point.mflops == pytest.approx(expected, rel=1e-12)
    assert point.examples == 5
    assert task.elue_score is not None  # the default baseline has SST-2
    assert result.elue_score is None  # five tasks missing
    as_json = result.to_dict()
    assert set(as_json) == {"tasks", "elue_score"}
    assert set(as_json["tasks"]["sst-2"]["points"][0]) >= {
        "file",
        "performance",
        "metrics",
        "mflops",
        "examples",
    }


def test_evaluate_reports_bad_rows_by_file_and_line(tmp_path):
    answers = write_answers(tmp_path / "answers")
    rows = [*SST2_ROWS[:-1], (4, 7, 3, 1)]  # label 7 is outside {0, 1}
    sub = write_submission(tmp_path / "sub", rows=rows)
    with pytest.raises(SubmissionError, match=r"(?s)sst-2.tsv.*line 6: pred 7"):
        evaluate_submission(sub, answers, trust_model_code=True)


def test_missing_module_name_is_one_clear_error(tmp_path):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    (sub / "model.py").write_text(TINY_MODEL_PY.replace("for i in (1, 2)", "for i in (1,)"))
    with pytest.raises(SubmissionError, match=r"(?s)sst-2.tsv.*line 3: .*layer_2") as err:
        evaluate_submission(sub, answers, trust_model_code=True)
    # every row that calls layer_2 is named (rows 2, 3 and 5 of SST2_ROWS exit at layer 2)
    assert [f"line {n}:" in str(err.value) for n in (2, 3, 4, 5, 6)] == [False, True, True, False, True]


def test_validate_without_labels(tmp_path, priced_once):
    answers = write_answers(tmp_path / "data")
    (answers / "sst-2" / "test_labels.tsv").unlink()  # validate must not need it
    sub = write_submission(tmp_path / "sub")
    result = validate_submission(sub, answers, trust_model_code=True)
    (point,) = result.tasks["sst-2"].points
    assert point.performance is None and point.examples == 5


def test_validate_warns_about_files_the_leaderboard_refuses(tmp_path, priced_once):
    """Scored here but refused at upload: a task folder spelled another way, a file the layout lacks.
    Hidden files, README and points.json are fine on both sides."""
    answers = write_answers(tmp_path / "data")
    sub = write_submission(tmp_path / "sub", name="SST-2.tsv")
    (sub / "result.json").write_text("{}")
    (sub / "README.md").write_text("x")
    (sub / ".git").mkdir()
    (sub / ".git" / "config").write_text("x")
    result = validate_submission(sub, answers, trust_model_code=True)
    assert result.tasks["sst-2"].points[0].examples == 5
    refused = [w for w in result.warnings if w.startswith("the leaderboard refuses this folder")]
    assert len(refused) == 2
    assert "'SST-2.tsv'" in refused[0] and "'result.json'" in refused[1] and "sst-2" in refused[1]
    (sub / "SST-2.tsv").rename(sub / "sst-2.tsv")
    (sub / "result.json").unlink()
    assert validate_submission(sub, answers, trust_model_code=True).warnings == []


def test_result_names_model_py_inside_the_submission(tmp_path, priced_once):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    result = evaluate_submission(sub, answers, trust_model_code=True).to_dict()
    assert result["tasks"]["sst-2"]["model_py"] == "model.py"
    (sub / "sst-2").mkdir()
    (sub / "sst-2.tsv").rename(sub / "sst-2" / "point.tsv")
    (sub / "sst-2" / "model.py").write_text(TINY_MODEL_PY)
    result = evaluate_submission(sub, answers, trust_model_code=True).to_dict()
    assert result["tasks"]["sst-2"]["model_py"] == "sst-2/model.py"


def test_discover_alias_folder_and_ignored_entries(tmp_path, priced_once):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "model.py").write_text(TINY_MODEL_PY)
    (tmp_path / "sst2" / "A.TSV").write_text("x")  # suffix case does not matter
    (tmp_path / "__MACOSX").mkdir()  # left by macOS zip tools
    found = discover(tmp_path)
    assert [p.name for p in found["sst-2"].test_files] == ["A.TSV"]
    answers = write_answers(tmp_path / "answers")
    sub = tmp_path / "sub"
    (sub / "sst2").mkdir(parents=True)
    (sub / "sst2" / "model.py").write_text(TINY_MODEL_PY)
    write_submission(tmp_path / "tmp")
    (sub / "sst2" / "a.tsv").write_text((tmp_path / "tmp" / "sst-2.tsv").read_text())
    result = evaluate_submission(sub, answers, trust_model_code=True)
    assert result.tasks["sst-2"].model_py == "sst2/model.py"  # where it is, not a file that does not exist


def _write(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda r: (r / "sst-2").mkdir() or (r / "sst-2" / "a.tsv").write_text("x"),
            "sst-2 is given more than once",
        ),
        (lambda r: (r / "sst-2.csv").write_text("x"), "test files are plain tab-separated .tsv files"),
        (lambda r: (r / "snli.tsv.gz").write_bytes(b"x"), "snli.tsv.gz: test files are plain"),
        (lambda r: (r / "SST2.txt").write_text("x"), "SST2.txt: test files are plain"),
        # a .csv is refused whatever its name: points exported from a spreadsheet must not vanish unseen
        (lambda r: (r / "predictions.csv").write_text("x"), "predictions.csv: test files are plain"),
        # a task folder with a model.py and no test file: the task would be scored with no points
        (lambda r: _write(r / "mrpc" / "model.py"), "mrpc: no test files"),
        # inside a task folder: a point in another format would silently drop an operating point
        (
            lambda r: _write(r / "mrpc" / "a.tsv", r / "mrpc" / "b.tsv.gz"),
            "b.tsv.gz: unexpected file; test files are plain",
        ),
    ],
)
def test_discover_refuses_ambiguous_or_dropped_files(tmp_path, make, message):
    write_submission(tmp_path)
    make(tmp_path)
    with pytest.raises(SubmissionError, match=message):
        discover(tmp_path)


def test_discover_keeps_notes_next_to_test_files(tmp_path):
    (tmp_path / "sst-2").mkdir()
    write_submission(tmp_path, name="sst-2/a.tsv")
    for name in ("README.txt", "LICENSE", "points.json"):
        (tmp_path / "sst-2" / name).write_text("x")
    (tmp_path / "run.sh").write_text("x")  # a top-level file that names no task: not a test file
    assert [p.name for p in discover(tmp_path)["sst-2"].test_files] == ["a.tsv"]


@pytest.mark.parametrize("unreadable", ["", "sst-2"])
def test_discover_names_a_folder_it_cannot_read(tmp_path, monkeypatch, unreadable):
    """A folder without read permission (unpacked with odd modes; simulated: the tests may run as root) was a
    PermissionError traceback from `elue validate`/`evaluate`."""
    (tmp_path / "sst-2").mkdir()
    write_submission(tmp_path, name="sst-2/a.tsv")
    target = tmp_path / unreadable if unreadable else tmp_path
    listdir = Path.iterdir

    def iterdir(self):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return listdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(
        SubmissionError, match=f"^{re.escape(str(target))}: cannot list the folder: Permission denied"
    ):
        discover(tmp_path)


def test_discover_refuses_nested_folder(tmp_path):
    (tmp_path / "model.py").write_text(TINY_MODEL_PY)
    (tmp_path / "sst-2" / "sub").mkdir(parents=True)
    (tmp_path / "sst-2" / "a.tsv").write_text("x")
    with pytest.raises(SubmissionError, match="unexpected folder"):
        discover(tmp_path)


def test_failing_call_named_with_its_lines(tmp_path):
    answers = write_answers(tmp_path / "answers")
    # emb's Embedding has 100 rows; a (3, 5) input to a 1-D-ids module fails only at that shape
    rows = "".join(f"{i}\t1\t{'(2,5),emb' if i == 3 else '(3),emb'}\n" for i, _ in SST2_KEY)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "model.py").write_text(
        TINY_MODEL_PY.replace(
            "return self.norm(self.word(ids))",
            "assert ids.dim() == 1, 'ids must be 1-D'\n        return self.norm(self.word(ids))",
        )
    )
    (sub / "sst-2.tsv").write_text("index\tpred\tmodules\n" + rows)
    with pytest.raises(SubmissionError) as err:
        evaluate_submission(sub, answers, trust_model_code=True)
    assert "fails at input shape (2,5)" in str(err.value)
    assert "sst-2.tsv: line 5" in str(err.value)  # index 3 is on line 5
    # the ranks differ too ((3) and (2,5)): said with the error, which stops scoring before any warning
    assert "\nnote: " in str(err.value) and "'emb' is called with inputs of different ranks" in str(err.value)


def _rank_case(root: Path, traces: dict[str, list[str]]) -> tuple[dict, dict]:
    """Hand-made test files (file name -> one `modules` value per row) for `rank_warnings`, no sandbox."""
    from elue.submission import TaskFiles
    from elue.tasks import get_task
    from elue.testfile import read_test_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(TINY_MODEL_PY)
    task = get_task("sst-2")
    paths = []
    for file_name, rows in traces.items():
        path = root / file_name
        path.write_text("index\tpred\tmodules\n" + "".join(f"{i}\t1\t{m}\n" for i, m in enumerate(rows)))
        paths.append(path)
    tasks = {"sst-2": TaskFiles(task, root / "model.py", paths, root=root)}
    return tasks, {"sst-2": [read_test_file(p, task) for p in paths]}


def test_rank_warning_names_file_line_module_and_both_shapes(tmp_path):
    from elue.submission import rank_warnings

    tasks, parsed = _rank_case(
        tmp_path,
        {
            "a.tsv": ["(29),emb; (29,32),layer_1", "(7),emb; (7,32),layer_1"],
            # the batch dimension written on line 3 of b.tsv only (and on no emb call)
            "b.tsv": ["(5),emb; (5,32),layer_1", "(9),emb; (1,9,32),layer_1; (32),exit_1"],
        },
    )
    (warning,) = rank_warnings(tasks, parsed)
    assert warning.startswith(
        f"{tmp_path / 'model.py'}: module 'layer_1' is called with inputs of different ranks"
    )
    assert f"(29,32) at {tmp_path / 'a.tsv'}: line 2" in warning  # each rank's first use
    assert f"(1,9,32) at {tmp_path / 'b.tsv'}: line 3" in warning
    assert "without the batch dimension" in warning and "looks like a batch dimension" in warning


def test_rank_warning_without_leading_one_and_none_when_ranks_agree(tmp_path):
    from elue.submission import rank_warnings

    # one rank per module, however the sizes vary: nothing to say
    tasks, parsed = _rank_case(
        tmp_path / "same", {"a.tsv": ["(3,32),layer_1; (32),exit_1", "(40,32),layer_1"]}
    )
    assert rank_warnings(tasks, parsed) == []
    # a module that takes a vector and a sequence (no leading 1): warned, without the batch hint
    tasks, parsed = _rank_case(tmp_path / "mixed", {"a.tsv": ["(32),exit_1", "(4,32),exit_1"]})
    (warning,) = rank_warnings(tasks, parsed)
    assert "'exit_1'" in warning and "(32) at" in warning and "(4,32) at" in warning
    assert "looks like a batch dimension" not in warning and "by design" in warning


def test_rank_warnings_are_per_model_py_and_capped(tmp_path):
    from elue.submission import MAX_RANK_WARNINGS, TaskFiles, rank_warnings
    from elue.tasks import get_task

    tasks, parsed = _rank_case(tmp_path / "a", {"a.tsv": ["(3,32),layer_1"]})
    other, other_parsed = _rank_case(tmp_path / "b", {"b.tsv": ["(1,3,32),layer_1"]})
    # snli's own model.py has its own layer_1: its ranks are not compared with sst-2's
    tasks["snli"] = TaskFiles(get_task("snli"), tmp_path / "b" / "model.py", other["sst-2"].test_files)
    parsed["snli"] = other_parsed["sst-2"]
    assert rank_warnings(tasks, parsed) == []
    names = [f"m{i}" for i in range(MAX_RANK_WARNINGS + 2)]
    tasks, parsed = _rank_case(
        tmp_path / "many",
        {"a.tsv": ["; ".join(f"(3),{n}" for n in names), "; ".join(f"(1,3),{n}" for n in names)]},
    )
    warnings = rank_warnings(tasks, parsed)
    assert len(warnings) == MAX_RANK_WARNINGS + 1
    assert warnings[-1].endswith("2 more modules called with inputs of different ranks: 'm5', 'm6'")


def test_validate_and_evaluate_warn_about_a_batch_dimension(tmp_path, caplog, priced_once):
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    # line 4 (index 2) writes the batch dimension; Linear(32, 32) still runs on (1, 1, 5, 32)
    text = (
        (sub / "sst-2.tsv")
        .read_text()
        .replace(
            "(5,32),layer_1; (32),exit_1; (5,32),layer_2", "(5,32),layer_1; (32),exit_1; (1,5,32),layer_2"
        )
    )
    (sub / "sst-2.tsv").write_text(text)
    for run in (validate_submission, evaluate_submission):
        with caplog.at_level("WARNING", logger="elue.submission"):
            result = run(sub, answers, trust_model_code=True)
        warning, *rest = result.warnings
        assert [w for w in rest if "an extrapolation" not in w] == []  # (the tiny model's ~0 MFLOPs)
        assert "'layer_2'" in warning and f"(1,5,32) at {sub / 'sst-2.tsv'}: line 4" in warning
        assert f"(7,32) at {sub / 'sst-2.tsv'}: line 3" in warning
        assert warning in caplog.messages  # the server's log capture reads the "elue" loggers
        caplog.clear()
    ok = evaluate_submission(write_submission(tmp_path / "ok"), answers, trust_model_code=True)
    assert [w for w in ok.warnings if "an extrapolation" not in w] == []


@pytest.mark.parametrize("name", [" sst-2", "sst-2 ", "\tsnli"])
def test_discover_refuses_task_names_with_spaces_around(tmp_path, name):
    from elue.tasks import get_task

    (tmp_path / "model.py").write_text(TINY_MODEL_PY)
    (tmp_path / name).mkdir()
    (tmp_path / name / "a.tsv").write_text("x")
    with pytest.raises(
        SubmissionError, match=re.escape(f"the name {name!r} has spaces around it; rename it")
    ) as err:
        discover(tmp_path)
    assert "given more than once" not in str(err.value)
    (tmp_path / name / "a.tsv").rename(tmp_path / f"{name}.tsv")  # a top-level test file, the same
    (tmp_path / name).rmdir()
    with pytest.raises(SubmissionError, match=re.escape(f"{name!r} has spaces around it")):
        discover(tmp_path)
    # next to a real folder of the task: one clear problem, not "given twice" for no visible reason
    write_submission(tmp_path, name=f"{name.strip()}.tsv")
    with pytest.raises(SubmissionError) as err:
        discover(tmp_path)
    assert "spaces around it" in str(err.value) and "more than once" not in str(err.value)
    # a typed name (command line, API) keeps its leniency
    assert get_task(f" {name} ").name == name.strip()


def test_entire_model_smaller_than_module_list_is_warned_about(tmp_path, priced_once):
    """entire_model is what spec §3 charges; one that lacks a module the test files call (here layer_2, kept
    in a plain list) is charged too few parameters. validate and evaluate now say so, naming both counts."""
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    (sub / "model.py").write_text(
        TINY_MODEL_PY.replace(
            "entire_model = nn.ModuleDict(module_list)",
            "entire_model = nn.ModuleDict({k: v for k, v in module_list.items() if k != 'layer_2'})",
        )
    )
    result = evaluate_submission(sub, answers, trust_model_code=True)
    assert result.tasks["sst-2"].params_m == pytest.approx((TINY_PARAMS - 32 * 32) / 1e6)
    (warning,) = [w for w in result.warnings if "entire_model" in w]
    assert f"hold {TINY_PARAMS:,} parameters, entire_model only {TINY_PARAMS - 32 * 32:,}" in warning
    assert str(sub / "model.py") in warning
    assert any(
        "entire_model only" in w for w in validate_submission(sub, answers, trust_model_code=True).warnings
    )
    # the honest model.py: no such warning
    write_submission(sub)
    assert not [
        w for w in evaluate_submission(sub, answers, trust_model_code=True).warnings if "entire_model" in w
    ]


def test_evaluate_without_an_answer_key_fails_unless_partial(tmp_path, priced_once):
    """The leaderboard keeps the error (it holds every key it accepts uploads for); the CLI scores the rest."""
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    (sub / "mrpc.tsv").write_text("index\tpred\tmodules\n0\t1\t(5),emb\n")
    with pytest.raises(SubmissionError, match="no answer key for mrpc"):
        evaluate_submission(sub, answers, trust_model_code=True)
    result = evaluate_submission(sub, answers, trust_model_code=True, partial=True)
    assert list(result.tasks) == ["sst-2"] and list(result.unchecked) == ["mrpc"]
    assert result.elue_score is None and result.to_dict()["not_scored"]["mrpc"].startswith("no answer key")


def test_one_tasks_folder_given_as_the_data_folder_is_named(tmp_path, priced_once):
    """Library callers (not the CLI, which checks first) of `evaluate_submission(sub, data / "sst-2")` and
    `validate_submission` got only "no answer key for sst-2: .../sst-2/sst-2/test_labels.tsv"."""
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    with pytest.raises(SubmissionError, match="sst-2 looks like one task's folder"):
        evaluate_submission(sub, answers / "sst-2", trust_model_code=True)
    (answers / "sst-2" / "test.tsv").write_text("index\tsentence\n0\tfine\n")
    with pytest.raises(SubmissionError, match="sst-2 looks like one task's folder"):
        validate_submission(sub, answers / "sst-2", trust_model_code=True)


def test_each_task_result_holds_the_warnings_of_its_own_model_py(tmp_path, priced_once):
    """Warnings are per model.py; a task's result carries those of the model.py that priced it, and
    `to_dict` shows them only when asked (the leaderboard's stored result is unchanged)."""
    answers = write_answers(tmp_path / "answers")
    mrpc = answers / "mrpc"
    mrpc.mkdir()
    (mrpc / "test_labels.tsv").write_text("index\tlabel\n0\t1\n1\t0\n")
    sub = write_submission(tmp_path / "sub")
    (sub / "mrpc").mkdir()
    (sub / "mrpc" / "model.py").write_text(TINY_MODEL_PY)
    (sub / "mrpc" / "a.tsv").write_text("index\tpred\tmodules\n0\t1\t(4),emb\n1\t0\t(1,4),emb\n")
    result = evaluate_submission(sub, answers, trust_model_code=True)
    (extrapolation,) = result.tasks["sst-2"].warnings  # the tiny model lies below the SST-2 baseline
    assert extrapolation.startswith("sst-2: sst-2.tsv (") and "an extrapolation" in extrapolation
    (warning,) = result.tasks["mrpc"].warnings  # (the default baseline has no MRPC points)
    assert warning == result.warnings[0] and warning.startswith(f"{sub / 'mrpc' / 'model.py'}: module 'emb'")
    assert "warnings" not in result.to_dict()["tasks"]["mrpc"]
    as_json = result.to_dict(with_warnings=True)["tasks"]
    assert as_json["mrpc"]["warnings"] == [warning] and as_json["sst-2"]["warnings"] == [extrapolation]


def test_progress_shows_pricing_before_the_first_sandbox_is_done(tmp_path):
    """The sandboxes take seconds to start (Python, torch, model.py): the bar is there before one finishes."""
    calls = []
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    evaluate_submission(sub, answers, trust_model_code=True, progress=lambda *a: calls.append(a))
    pricing = [c for c in calls if c[0].startswith("pricing")]
    assert pricing == [
        ("pricing model.py files in the sandbox", 0, 1),
        ("pricing model.py files in the sandbox", 1, 1),
    ]
    assert calls[0][0] == "reading test files"


def test_points_outside_the_baselines_flops_are_named_as_extrapolated(tmp_path, caplog, priced_once):
    """A point below or above the baseline curve's MFLOPs is scored on its linear extension (spec §4): the score
    stands, and a warning names the file (a 20-MFLOPs CNN scored +1.94 on SST-2 by extrapolation alone)."""
    from elue import scoring

    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    mflops = evaluate_submission(sub, answers, trust_model_code=True).tasks["sst-2"].points[0].mflops
    around = scoring.parse_baseline(
        {"name": "b", "tasks": {"sst-2": [[mflops / 2, 50.0], [mflops * 2, 90.0]]}}
    )
    inside = evaluate_submission(sub, answers, baseline=around, trust_model_code=True)
    assert inside.tasks["sst-2"].warnings == [] and inside.warnings == []
    above = scoring.parse_baseline(
        {"name": "b", "tasks": {"sst-2": [[mflops / 4, 50.0], [mflops / 2, 90.0]]}}
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="elue.submission"):
        result = evaluate_submission(sub, answers, baseline=above, trust_model_code=True)
    (warning,) = result.tasks["sst-2"].warnings
    assert caplog.messages == [warning]  # the leaderboard's scoring log shows it to the submitter
    assert (
        warning.startswith(f"sst-2: sst-2.tsv ({mflops:.3g}) outside the baseline's ")
        and "extrapolation" in warning
    )
    assert result.warnings == [warning]
    point = result.tasks["sst-2"].points[0]  # the score stands: the warning changes nothing
    want = scoring.elue_score([(point.mflops, point.performance)], above["sst-2"])
    assert result.tasks["sst-2"].elue_score == pytest.approx(want)
    assert "linear extension" in warning
    # a one-point baseline has no segment to extend: it is a constant, and the warning says so (it read
    # "outside the baseline's 0.0005–0.0005 MFLOPs: scored on the curve's linear extension")
    one = scoring.parse_baseline({"name": "b", "tasks": {"sst-2": [[mflops / 2, 50.0]]}})
    (warning,) = (
        evaluate_submission(sub, answers, baseline=one, trust_model_code=True).tasks["sst-2"].warnings
    )
    assert warning == (
        f"sst-2: sst-2.tsv ({scoring.shown_millions(mflops)}) not at the baseline's only point "
        f"({scoring.shown_millions(mflops / 2)} MFLOPs): scored against its performance there, a constant, "
        "an extrapolation"
    )
    assert scoring.outside_baseline([1.0, 5.0, 9.0], [(2.0, 0.0), (8.0, 1.0)]) == [0, 2]
    assert scoring.outside_baseline([2.0, 8.0], [(2.0, 0.0), (8.0, 1.0)]) == []  # the ends are inside


def test_shards_of_one_point_in_a_task_folder_are_named_as_such(tmp_path):
    """One file per GPU process, each with its share of the test set, put side by side in `sst-2/`: each file
    is an operating point missing the others' indices; the error says what the files together look like."""
    answers = write_answers(tmp_path / "answers")
    sub = write_submission(tmp_path / "sub")
    (sub / "sst-2.tsv").unlink()
    (sub / "sst-2").mkdir()
    header = "index\tpred\tmodules\n"
    for rank, rows in enumerate((SST2_ROWS[:3], SST2_ROWS[3:])):
        body = "".join(f"{i}\t{p}\t{tiny_trace(n, e)}\n" for i, p, n, e in rows)
        (sub / "sst-2" / f"rank{rank}.tsv").write_text(header + body)
    with pytest.raises(SubmissionError) as err:
        evaluate_submission(sub, answers, trust_model_code=True)
    text = str(err.value)
    assert "rank0.tsv" in text and "rank1.tsv" in text and "test indices are missing" in text
    assert "shards of one operating point" in text and "one file" in text
    # two real operating points, one of them incomplete: no such note
    write_submission(sub / "x")  # a complete point to copy
    (sub / "sst-2" / "rank1.tsv").write_text((sub / "x" / "sst-2.tsv").read_text())
    for p in (sub / "x").iterdir():
        p.unlink()
    (sub / "x").rmdir()
    with pytest.raises(SubmissionError) as err:
        evaluate_submission(sub, answers, trust_model_code=True)
    assert "test indices are missing" in str(err.value) and "shards of one" not in str(err.value)


def test_one_tasks_folder_given_as_the_submission_is_named(tmp_path):
    """`elue evaluate runs/sub/sst-2` (the folder `elue predict` writes the points into) named each point file
    an unknown task ("static_k1.tsv: unknown ELUE task 'static_k1'", one line per point); it now says once to
    give the folder above. A submission folder that happens to be called sst-2 still works."""
    (tmp_path / "sub" / "sst-2").mkdir(parents=True)
    sub = write_submission(tmp_path / "sub", name="sst-2/static_k1.tsv")
    (sub / "sst-2" / "static_k2.tsv").write_text((sub / "sst-2" / "static_k1.tsv").read_text())
    (sub / "sst-2" / "model.py").write_text((sub / "model.py").read_text())
    with pytest.raises(SubmissionError) as e:
        discover(sub / "sst-2")
    assert str(e.value) == (
        f"{sub / 'sst-2'} looks like the sst-2 folder of a submission (it holds static_k1.tsv, not <task>.tsv "
        f"files): give the submission folder above it, {sub}"
    )
    assert list(discover(sub)) == ["sst-2"]
    named_sst2 = write_submission(tmp_path / "SST-2")  # holds sst-2.tsv and model.py
    assert list(discover(named_sst2)) == ["sst-2"]
