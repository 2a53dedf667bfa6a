"""A submission folder -> a result. The one place that glues the toolkit together.

Layout (one folder per submission):
    model.py                 default model.py for every task
    <task>/model.py          optional, overrides the default for that task
    <task>/*.tsv             one test file per operating point
    <task>.tsv               or a single point for that task

Data path: discover files -> parse & validate test files -> price each model.py's distinct
(module, shape) calls once in the sandbox -> per-example FLOPs by trace lookup -> metrics -> scores.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from elue import data, layout, scoring
from elue.costs.sandbox import CostTable, SandboxError, SandboxLimits, SandboxUnavailable, price_model
from elue.metrics import compute_metrics
from elue.tasks import TASK_NAMES, Task, get_task
from elue.testfile import TestFile, TestFileError, read_test_file
from elue.trace import Call, format_shape

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # warnings are returned too; the CLI prints them itself

# progress(stage description, done, total)
Progress = Callable[[str, int, int], None]


class SubmissionError(Exception):
    """A submission that cannot be scored. The message is meant for the submitter."""


@dataclass
class TaskFiles:
    task: Task
    model_py: Path
    test_files: list[Path]
    root: Path | None = None  # the submission folder


# not submission content: editor/OS leftovers and files a submitter may keep next to the test files
_IGNORED = {"model.py", "__pycache__", "README.md", "__MACOSX", "points.json"}


def _is_test_file(path: Path) -> bool:
    return path.suffix.lower() == ".tsv"


_NOT_TSV = "test files are plain tab-separated .tsv files (not .csv, .txt or compressed)"


def _misnamed_test_file(path: Path) -> bool:
    """A top-level file meant as a task's test file in another format (`snli.tsv.gz`, `sst-2.txt`, `x.csv`)."""
    if path.suffix.lower() == ".csv":
        return True
    try:
        get_task(path.name.split(".")[0])
    except KeyError:
        return False
    return True


def _kept_in_task_folder(path: Path) -> bool:
    """Files a task folder may hold next to its test files (the server accepts the same)."""
    return path.name.upper().startswith(("README", "LICENSE"))


@dataclass
class PointResult:
    file: str
    mflops: float
    examples: int
    performance: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TaskResult:
    task: str
    model_py: str
    params_m: float
    points: list[PointResult]
    elue_score: float | None = None
    # warnings about the model.py that priced this task (`rank_warnings`, `params_warning`) and about points
    # scored outside the baseline's MFLOPs; in to_dict only when asked: they name files by their paths here
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, *, with_warnings: bool = False) -> dict:
        out = {"params_m": self.params_m, "elue_score": self.elue_score, "model_py": self.model_py}
        out["points"] = [asdict(p) for p in self.points]
        if with_warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass
class SubmissionResult:
    tasks: dict[str, TaskResult]
    elue_score: float | None = None
    # wall seconds spent starting sandboxes and loading model.py files (not part of to_dict)
    load_seconds: float = 0.0
    # what the submitter should look at but does not stop scoring (`rank_warnings`); not part of
    # to_dict: also logged on the "elue.submission" logger (the leaderboard keeps that log)
    warnings: list[str] = field(default_factory=list)
    # task -> why it was not checked (validate: no test set in the data folder) or not scored (evaluate with
    # `partial`: no answer key)
    unchecked: dict[str, str] = field(default_factory=dict)

    def to_dict(self, *, with_warnings: bool = False) -> dict:
        """The result as JSON data. `with_warnings`: each task also gets `"warnings"`, the warnings about
        its model.py (`elue evaluate --json`; the leaderboard's stored result leaves them out)."""
        tasks = {name: t.to_dict(with_warnings=with_warnings) for name, t in self.tasks.items()}
        out = {"tasks": tasks, "elue_score": self.elue_score}
        if self.unchecked:
            out["not_scored"] = dict(self.unchecked)
        return out


def discover(submission_dir: Path) -> dict[str, TaskFiles]:
    """Find the test files and the model.py of every task in a submission folder."""
    root = Path(submission_dir)
    if not root.is_dir():
        raise SubmissionError(f"{root}: not a directory")
    _refuse_a_task_folder(root)
    default_model = root / "model.py"
    found: dict[str, list[Path]] = {}
    sources: dict[str, list[Path]] = {}  # task -> the entries (files, folders) that gave it test files
    models: dict[str, Path] = {}
    problems: list[str] = []
    for entry in _listing(root):
        if entry.name.startswith(".") or entry.name in _IGNORED:
            continue
        if entry.is_file() and _is_test_file(entry):
            task = _task_or_problem(entry.stem, entry, problems)
            if task:
                found.setdefault(task.name, []).append(entry)
                sources.setdefault(task.name, []).append(entry)
        elif entry.is_file() and _misnamed_test_file(entry):
            problems.append(f"{entry}: {_NOT_TSV}")
        elif entry.is_dir():
            task = _task_or_problem(entry.name, entry, problems)
            if task is None:
                continue
            files = []
            for p in _listing(entry):
                if p.name.startswith(".") or p.name in _IGNORED:
                    continue
                if p.is_file() and _is_test_file(p):
                    files.append(p)
                elif p.is_dir():
                    problems.append(f"{p}: unexpected folder (test files go directly in {entry.name}/)")
                elif not _kept_in_task_folder(p):  # a point in another format must not vanish unseen
                    problems.append(f"{p}: unexpected file; {_NOT_TSV}")
            if not files:
                problems.append(f"{entry}: no test files (*.tsv) in this task folder")
            found.setdefault(task.name, []).extend(files)
            sources.setdefault(task.name, []).append(entry)
            if (entry / "model.py").is_file():
                models[task.name] = entry / "model.py"
    for name, entries in sources.items():
        if len(entries) > 1:
            listed = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries)
            problems.append(
                f"{root}: {name} is given more than once ({listed}); use one of <task>.tsv or <task>/"
            )
    out: dict[str, TaskFiles] = {}
    for name, files in found.items():
        model_py = models.get(name, default_model)
        if not model_py.is_file():
            problems.append(f"{name}: no model.py (expected {default_model} or {root / name / 'model.py'})")
            continue
        out[name] = TaskFiles(get_task(name), model_py, files, root=root)
    if problems:
        raise SubmissionError("\n".join(problems))
    if not out:
        raise SubmissionError(
            f"{root}: no test files found; expected <task>/*.tsv or <task>.tsv for tasks {', '.join(TASK_NAMES)}"
        )
    return {name: out[name] for name in TASK_NAMES if name in out}


def _refuse_a_task_folder(root: Path) -> None:
    """`elue evaluate runs/sub/sst-2` (one task's folder of a submission, as `elue predict` writes it) named
    every point file an unknown task ('static_k1', ...): say once which folder to give."""
    try:
        task = get_task(root.resolve().name)
    except KeyError:
        return
    points = [p for p in _listing(root) if p.is_file() and _is_test_file(p) and not p.name.startswith(".")]
    if not points or any(_is_task_name(p.stem) for p in points):
        return
    above = root.parent if root.name not in ("", "..") else root.resolve().parent  # "." has no name
    raise SubmissionError(
        f"{root} looks like the {task.name} folder of a submission (it holds {points[0].name}, not <task>.tsv "
        f"files): give the submission folder above it, {above}"
    )


def _is_task_name(name: str) -> bool:
    try:
        get_task(name)
    except KeyError:
        return False
    return True


def _listing(folder: Path) -> list[Path]:
    """The entries of a folder, sorted; one that cannot be listed (no read permission) is a SubmissionError
    naming it (it was a PermissionError traceback)."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise SubmissionError(f"{folder}: cannot list the folder: {err.strerror or err}") from None


def _task_or_problem(name: str, path: Path, problems: list[str]) -> Task | None:
    """The task a folder or test file names. `get_task` forgives spaces around a typed name; a file name
    with them is refused: `" sst-2"/` would otherwise count as sst-2 while it looks like another folder
    in most listings (and next to a real `sst-2/`, as the same task given twice for no visible reason)."""
    try:
        task = get_task(name)
    except KeyError as err:
        problems.append(f"{path}: {err.args[0]}")
        return None
    if name != name.strip():
        problems.append(f"{path}: the name {name!r} has spaces around it; rename it to {name.strip()!r}")
        return None
    return task


@dataclass
class _PricedTask:
    files: TaskFiles
    test_files: list[TestFile]
    costs: CostTable
    trace_flops: list[np.ndarray]  # per test file, FLOPs of each distinct trace
    warnings: list[str] = field(default_factory=list)  # about this task's model.py


def _parse_and_price(
    tasks: dict[str, TaskFiles],
    indices_of: Callable[[Task], np.ndarray],
    *,
    trust_model_code: bool,
    limits: SandboxLimits | None,
    progress: Progress | None,
) -> tuple[dict[str, _PricedTask], float, list[str]]:
    """Parse every test file, price every model.py once. Returns the priced tasks, the wall
    seconds spent starting sandboxes and loading model.py files, and the warnings."""
    parsed: dict[str, list[TestFile]] = {}
    n_files = sum(len(t.test_files) for t in tasks.values())
    done = 0
    problems: list[str] = []
    for name, tf in tasks.items():
        indices = indices_of(tf.task)
        parsed[name] = []
        incomplete: list[Path] = []
        for path in tf.test_files:
            try:
                parsed[name].append(read_test_file(path, tf.task, test_indices=indices))
            except TestFileError as err:
                problems.append(str(err))
                if any(line is None and "test indices are missing" in m for line, m in err.problems):
                    incomplete.append(path)
            done += 1
            if progress:
                progress("reading test files", done, n_files)
        note = _shards_note(name, incomplete, indices)
        if note:
            problems.append(note)
    if problems:
        raise SubmissionError("\n".join(problems))

    # Each model.py is priced once for the union of its calls over all tasks that use it.
    calls_by_model: dict[Path, set[Call]] = {}
    for name, tf in tasks.items():
        calls = calls_by_model.setdefault(tf.model_py, set())
        for test_file in parsed[name]:
            for trace in test_file.traces:
                calls.update(trace)
    by_model = {
        model_py: rank_warnings(tasks, parsed, {model_py: calls})
        for model_py, calls in calls_by_model.items()
    }
    warnings = [w for ws in by_model.values() for w in ws]
    for warning in warnings:
        log.warning("%s", warning)
    # Sandboxes run side by side (one per core at most): most of their time is starting Python,
    # importing torch and building model.py, which does not share anything between them.
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls_by_model), os.cpu_count() or 1))) as pool:
        futures = {
            model_py: pool.submit(
                price_model, model_py, sorted(calls), trust_model_code=trust_model_code, limits=limits
            )
            for model_py, calls in calls_by_model.items()
        }
        costs_by_model: dict[Path, CostTable] = {}
        if progress:  # the bar shows while the first sandbox starts (seconds: Python, torch, model.py)
            progress("pricing model.py files in the sandbox", 0, len(futures))
        for i, model_py in enumerate(futures, start=1):
            try:
                costs_by_model[model_py] = futures[model_py].result()
            except SandboxUnavailable as err:
                raise SubmissionError(f"{model_py}: {err}") from None
            except SandboxError as err:
                # names model.py lacks: point at the file and line of each use
                users = {n: tf for n, tf in tasks.items() if tf.model_py == model_py}
                lines = _unknown_module_lines(users, indices_of, err.module_names) if err.module_names else []
                if err.failed_call is not None:
                    lines = [f"{model_py}: {err}", *_lines_using(users, parsed, err.failed_call)]
                lines = lines or [f"{model_py}: {err}"]
                lines += [f"note: {w}" for w in warnings if w.startswith(f"{model_py}: ")]
                raise SubmissionError("\n".join(lines)) from None
            if progress:
                progress("pricing model.py files in the sandbox", i, len(futures))
    # wall time of this phase not spent pricing: sandbox start-up and model.py loading
    load_seconds = max(0.0, time.perf_counter() - start - sum(c.pricing_s for c in costs_by_model.values()))
    for model_py, costs in costs_by_model.items():
        warning = params_warning(model_py, costs)
        if warning:
            log.warning("%s", warning)
            warnings.append(warning)
            by_model[model_py].append(warning)

    out = {}
    for name, tf in tasks.items():
        costs = costs_by_model[tf.model_py]
        # FLOPs of each distinct trace once; rows only refer to traces by id
        flops = [
            np.array([sum(costs.flops[call] for call in trace) for trace in f.traces], dtype=np.float64)
            for f in parsed[name]
        ]
        out[name] = _PricedTask(tf, parsed[name], costs, flops, list(by_model[tf.model_py]))
    return out, load_seconds, warnings


def _shards_note(task: str, incomplete: list[Path], indices) -> str | None:
    """A note when test files of one task, each missing test indices, hold every test index together: they
    look like the shards of one operating point (one file per GPU process), which belong in one file."""
    if len(incomplete) < 2:
        return None
    held: set[str] = set()
    for path in incomplete:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()[1:]
        except (OSError, UnicodeDecodeError):
            return None
        held.update(field for line in lines if (field := line.split("\t", 1)[0].strip()).isdigit())
    if {str(int(i)) for i in np.asarray(indices).tolist()} != {str(int(f)) for f in held}:
        return None
    names = ", ".join(p.name for p in incomplete)
    return (
        f"note: {task}: {names} together hold every test index: they look like shards of one operating point "
        f"(one file per process?). Each test file is one operating point with every test index: put the "
        f"shards of a point in one file (one header)."
    )


def params_warning(model_py: Path, costs: CostTable) -> str | None:
    """A warning when module_list's modules hold more parameters than entire_model: a module the test files
    call is then missing from entire_model (kept in a plain list, or built apart), and the parameters charged
    (spec §3: entire_model's) are too few. A warning, not an error: the count comes from model.py's process."""
    if costs.module_list_params is None or costs.module_list_params <= costs.params:
        return None
    return (
        f"{model_py}: module_list's modules hold {costs.module_list_params:,} parameters, entire_model only "
        f"{costs.params:,}: entire_model must hold every module of module_list (spec §3 charges entire_model's "
        f"parameters, each shared tensor once). A layer kept in a plain list or dict is not a submodule."
    )


MAX_RANK_WARNINGS = 5  # modules named per model.py; more are counted


def rank_warnings(
    tasks: dict[str, TaskFiles],
    parsed: dict[str, list[TestFile]],
    calls_by_model: dict[Path, set[Call]] | None = None,
) -> list[str]:
    """One warning per module of a model.py that the submission calls with inputs of different ranks
    (e.g. `(29,768)` on one line and `(1,29,768)` on another): the shapes of the `modules` column are per
    example, without the batch dimension (spec §2), so this is most often a batch dimension written in some
    rows, which is priced as another input. Each rank's first use (file, line, shape) is named. A warning,
    not an error: a module may take inputs of several ranks by design (see docs/costs.md)."""
    if calls_by_model is None:
        calls_by_model = {}
        for name, tf in tasks.items():
            for test_file in parsed[name]:
                calls_by_model.setdefault(tf.model_py, set()).update(c for t in test_file.traces for c in t)
    warnings: list[str] = []
    for model_py, calls in calls_by_model.items():
        ranks: dict[str, set[int]] = {}
        for module, shape in calls:  # distinct calls only: cheap when every rank agrees
            ranks.setdefault(module, set()).add(len(shape))
        mixed = sorted(m for m, r in ranks.items() if len(r) > 1)
        users = [name for name, tf in tasks.items() if tf.model_py == model_py]
        for module in mixed[:MAX_RANK_WARNINGS]:
            firsts = _first_use_by_rank(module, [f for name in users for f in parsed[name]])
            shown = ", ".join(f"{format_shape(shape)} at {path}: line {line}" for shape, path, line in firsts)
            shapes = [shape for shape, _, _ in firsts]
            hint = ""
            if any(len(s) == len(shapes[0]) + 1 and s[0] == 1 for s in shapes[1:]):
                hint = " A leading 1 there looks like a batch dimension: write shapes without it."
            warnings.append(
                f"{model_py}: module {module!r} is called with inputs of different ranks: {shown}. "
                f"Shapes in the modules column are per example, without the batch dimension (spec §2), "
                f"and each rank is priced as written.{hint} If the module takes inputs of several ranks "
                f"by design, this warning can be ignored."
            )
        if len(mixed) > MAX_RANK_WARNINGS:
            more = len(mixed) - MAX_RANK_WARNINGS
            warnings.append(
                f"{model_py}: {more} more module{'s' if more > 1 else ''} called with inputs of different "
                f"ranks: {', '.join(map(repr, mixed[MAX_RANK_WARNINGS:]))}"
            )
    return warnings


def _first_use_by_rank(module: str, test_files: list[TestFile]) -> list[tuple[tuple[int, ...], Path, int]]:
    """(shape, file, line) of the first call of `module` at each rank, ranks in ascending order; the files
    in the order given, the rows in file order."""
    first: dict[int, tuple[tuple[int, ...], Path, int]] = {}
    for test_file in test_files:
        tids, rows = np.unique(test_file.trace_ids, return_index=True)  # each trace's first row
        for k in np.argsort(rows, kind="stable"):
            for name, shape in test_file.traces[int(tids[k])]:
                if name == module and len(shape) not in first:
                    first[len(shape)] = (shape, test_file.path, int(rows[k]) + 2)  # header is line 1
    return [first[r] for r in sorted(first)]


def _lines_using(
    tasks: dict[str, TaskFiles], parsed: dict[str, list[TestFile]], call: Call, limit: int = 5
) -> list[str]:
    """Where a call whose pricing failed is used: the first few file:line places."""
    places: list[str] = []
    for name in tasks:
        for test_file in parsed[name]:
            bad = [tid for tid, trace in enumerate(test_file.traces) if call in trace]
            rows = np.flatnonzero(np.isin(test_file.trace_ids, bad))
            if len(rows):
                shown = ", ".join(str(r + 2) for r in rows[:limit])  # line = row + 2 (header is line 1)
                more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
                places.append(f"  used by {test_file.path}: line {shown}{more}")
    return places


def _unknown_module_lines(tasks: dict[str, TaskFiles], indices_of, module_names: list[str]) -> list[str]:
    """Re-read the test files that use a model.py, now knowing its module names: every call of a name it
    lacks is reported with its file and line."""
    problems = []
    for tf in tasks.values():
        indices = indices_of(tf.task)
        for path in tf.test_files:
            try:
                read_test_file(path, tf.task, test_indices=indices, module_names=module_names)
            except TestFileError as err:
                problems.append(str(err))
    return problems


def validate_submission(
    submission_dir: Path,
    data_dir: Path,
    *,
    trust_model_code: bool = False,
    limits: SandboxLimits | None = None,
    progress: Progress | None = None,
) -> SubmissionResult:
    """The submitter's pre-flight check against DATA_DIR/<task>/test.tsv, without labels.

    Everything `evaluate_submission` checks except performance: files, indices, traces, model.py; and,
    as warnings, the files an upload to the leaderboard would be refused for (`elue.layout`)."""
    tasks = discover(submission_dir)
    # a task without a local test set is named, and the others are still checked (`../shared/data` has no
    # SciTail; a task folder may hold train/dev only)
    unchecked = {name: why for name in tasks if (why := _no_test_set(data_dir, name)) is not None}
    if len(unchecked) == len(tasks):
        raise SubmissionError("\n".join(unchecked.values()))
    tasks = {name: files for name, files in tasks.items() if name not in unchecked}
    priced, load_seconds, warnings = _parse_and_price(
        tasks,
        lambda task: data.read_test_indices(data_dir, task),
        trust_model_code=trust_model_code,
        limits=limits,
        progress=progress,
    )
    results = {name: _task_result(p, None, None) for name, p in priced.items()}
    # what scores here but would not be stored by the leaderboard (other task spellings, extra files)
    refused = [
        f"the leaderboard refuses this folder as it is: {p}" for p in layout.folder_problems(submission_dir)
    ]
    return SubmissionResult(
        results, load_seconds=load_seconds, warnings=refused + warnings, unchecked=unchecked
    )


def _no_test_set(data_dir: Path, task: str) -> str | None:
    """Why `data_dir` has no test set of `task` to check against (None: it has one)."""
    if not (Path(data_dir) / task).is_dir():
        hint = data.task_folder_hint(data_dir, "test.tsv", "test.tsv.gz")
        return f"{data_dir}: no folder {task}/ with its test.tsv" + (f"; {hint}" if hint else "")
    try:
        data.split_path(data_dir, task, "test")
    except FileNotFoundError as err:
        return str(err)
    return None


def evaluate_submission(
    submission_dir: Path,
    answers_dir: Path,
    *,
    baseline: scoring.Baseline | None = None,
    trust_model_code: bool = False,
    limits: SandboxLimits | None = None,
    progress: Progress | None = None,
    partial: bool = False,
) -> SubmissionResult:
    """Score a submission against the answer keys `answers_dir/<task>/test_labels.tsv`.

    A task without an answer key is an error, unless `partial`: then it is named in `unchecked` and the
    others are scored (a researcher's folder of keys may lack one, as `../shared/data` lacks SciTail; the
    leaderboard, which holds every key it accepts uploads for, keeps the error)."""
    tasks = discover(submission_dir)
    baseline = scoring.load_baseline() if baseline is None else baseline
    keys: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    unscored: dict[str, str] = {}
    for name in tasks:
        try:
            keys[name] = data.read_answer_key(answers_dir, name)
        except FileNotFoundError:
            hint = data.task_folder_hint(answers_dir, "test_labels.tsv")
            where = Path(answers_dir) / name / "test_labels.tsv"
            unscored[name] = f"no answer key for {name}: {where}" + (f"; {hint}" if hint else "")
    if unscored and (not partial or len(unscored) == len(tasks)):
        raise SubmissionError("\n".join(unscored.values()))
    tasks = {name: files for name, files in tasks.items() if name not in unscored}
    priced, load_seconds, warnings = _parse_and_price(
        tasks,
        lambda task: keys[task.name][0],
        trust_model_code=trust_model_code,
        limits=limits,
        progress=progress,
    )
    results = {name: _task_result(p, keys[name], baseline.get(name)) for name, p in priced.items()}
    for extrapolation in [w for r in results.values() for w in r.warnings if w not in warnings]:
        log.warning("%s", extrapolation)  # (the leaderboard's scoring log reads this logger)
        warnings.append(extrapolation)
    overall = None if unscored else scoring.overall_score({n: r.elue_score for n, r in results.items()})
    return SubmissionResult(
        results, overall, load_seconds=load_seconds, warnings=warnings, unchecked=unscored
    )


def _task_result(priced: _PricedTask, key, baseline_points) -> TaskResult:
    points = []
    for test_file, trace_flops in zip(priced.test_files, priced.trace_flops, strict=True):
        mflops = scoring.mean_mflops(test_file.trace_ids, trace_flops)
        point = PointResult(file=test_file.path.name, mflops=mflops, examples=len(test_file))
        if key is not None:
            point.metrics = _metrics(priced.files.task, key, test_file)
            point.performance = point.metrics["performance"]
        points.append(point)
    score = None
    warnings = list(priced.warnings)
    if key is not None and baseline_points:
        score = scoring.elue_score([(p.mflops, p.performance) for p in points], baseline_points)
        outside = [points[i] for i in scoring.outside_baseline([p.mflops for p in points], baseline_points)]
        if outside:
            xs = [float(f) for f, _ in baseline_points]
            shown = ", ".join(f"{p.file} ({scoring.shown_millions(p.mflops)})" for p in outside)
            lo, hi = scoring.shown_millions(min(xs)), scoring.shown_millions(max(xs))
            if len(xs) == 1:  # no segment to extend: the curve is that point's performance everywhere
                where = f"not at the baseline's only point ({lo} MFLOPs): scored against its performance there, a constant"
            else:
                where = f"outside the baseline's {lo}–{hi} MFLOPs: scored on the curve's linear extension (spec §4)"
            warnings.append(f"{priced.files.task.name}: {shown} {where}, an extrapolation")
    return TaskResult(
        task=priced.files.task.name,
        model_py=_relative_model_py(priced.files),
        params_m=priced.costs.params / 1e6,
        points=points,
        elue_score=score,
        warnings=warnings,
    )


def _relative_model_py(files: TaskFiles) -> str:
    """ "model.py" or "<task folder>/model.py": where in the submission, without the host's folders."""
    if files.root is not None:
        return files.model_py.relative_to(files.root).as_posix()
    own = files.model_py.parent.name == files.task.name
    return f"{files.task.name}/model.py" if own else "model.py"


def _metrics(task: Task, key: tuple[np.ndarray, np.ndarray], test_file: TestFile) -> dict[str, float]:
    key_index, key_labels = key
    # predictions in the answer key's order (the reader guaranteed the same index set)
    return compute_metrics(task, key_labels, test_file.pred_for(key_index))


def iter_points(result: SubmissionResult) -> Iterable[tuple[str, TaskResult, PointResult]]:
    for name, task_result in result.tasks.items():
        for point in task_result.points:
            yield name, task_result, point
