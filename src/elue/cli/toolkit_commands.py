"""Toolkit commands: `elue evaluate`, `elue validate`, `elue flops`, `elue tasks`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import fail

console = Console()
err_console = Console(stderr=True)

TRUST_HELP = (
    "Run model.py WITHOUT the bubblewrap sandbox. Only for files you wrote or trust: "
    "model.py is arbitrary Python code."
)


class _RichProgress:
    """Adapts the library's progress(stage, done, total) callback to a rich progress bar."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.bars: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = stage.split(" (")[0]
        if key not in self.bars:
            self.bars[key] = self.progress.add_task(stage, total=total)
        self.progress.update(self.bars[key], completed=done, total=total, description=stage)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    """A score or performance to `digits` decimals (spec §4: 2); a value that rounds to zero is 0.00, not -0.00
    (the leaderboard's pages show it so too)."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def _print_result(result, *, with_performance: bool) -> None:
    from elue.scoring import shown_millions

    for name, task_result in result.tasks.items():
        # and the exact count: 40,004,000 parameters read "40.00M", and the model is not on the <= 40M track
        title = f"{name}  ·  params {shown_millions(task_result.params_m, 2)}M ({round(task_result.params_m * 1e6):,})"
        if with_performance:
            title += f"  ·  ELUE score {_fmt(task_result.elue_score)}"
        console.print(title, soft_wrap=True)  # on its own line: a table's title wraps at the table's width
        table = Table()
        table.add_column("file")
        table.add_column("examples", justify="right")
        if with_performance:
            table.add_column("performance", justify="right")
            table.add_column("parts", justify="left")
        table.add_column("MFLOPs", justify="right")
        for point in task_result.points:
            row = [escape(point.file), str(point.examples)]  # a file named `[b]x.tsv` is text
            if with_performance:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in point.metrics.items() if k != "performance")
                row += [_fmt(point.performance), parts]
            row.append(shown_millions(point.mflops, 1))
            table.add_row(*row)
        console.print(table)
    if with_performance:
        overall = result.elue_score
        if overall is None:
            missing = [n for n in _task_names() if n not in result.tasks and n not in result.unchecked]
            unscored = [name for name, t in result.tasks.items() if t.elue_score is None]
            why = []
            if missing:
                why.append(f"no test files for {', '.join(missing)}")
            if result.unchecked:
                why.append(f"no answer key for {', '.join(result.unchecked)}")
            if unscored:
                why.append(f"the baseline has no points for {', '.join(unscored)} (see --baseline)")
            console.print(f"Overall ELUE score: — (incomplete: {'; '.join(why)})")
        else:
            console.print(f"Overall ELUE score: [bold]{_fmt(overall)}[/]")


def _print_warnings(result) -> None:
    """Warnings that do not stop scoring (e.g. a module called with inputs of different ranks), on stderr."""
    for warning in result.warnings:
        err_console.print(f"[yellow]warning[/]: {escape(warning)}", soft_wrap=True)


def _task_names():
    from elue.tasks import TASK_NAMES

    return TASK_NAMES


def evaluate(
    submission_dir: Path = typer.Argument(
        ..., help="Submission folder: model.py and <task>/*.tsv or <task>.tsv."
    ),
    answers: Path = typer.Option(
        ..., "--answers", help="Answer keys laid out as DATA_DIR/<task>/test_labels.tsv."
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="Baseline points per dataset (JSON); default: ElasticBERT-BASE."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON to this file."),
    trust_model_code: bool = typer.Option(False, "--trust-model-code", help=TRUST_HELP),
) -> None:
    """Score a submission: performance, MFLOPs, params and ELUE score per dataset and point."""
    from elue import scoring
    from elue.submission import SubmissionError, evaluate_submission

    _check_folder("--answers", answers, "<task>/test_labels.tsv", "test_labels.tsv")
    if json_out:
        _check_writable(json_out)
    try:
        base = scoring.load_baseline(baseline) if baseline else None
        with _progress() as bar:
            result = evaluate_submission(
                submission_dir,
                answers,
                baseline=base,
                trust_model_code=trust_model_code,
                progress=_RichProgress(bar),
                partial=True,
            )
    except (SubmissionError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    _print_result(result, with_performance=True)
    _print_warnings(result)
    if json_out:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result.to_dict(with_warnings=True), indent=2) + "\n")
        except OSError as err:
            fail(f"cannot write {json_out}: {err.strerror or err}")
        console.print(f"wrote {escape(str(json_out))}")
    if result.unchecked:  # scored what has a key, wrote it, and still says the submission was not all scored
        scored = ", ".join(result.tasks)
        fail(f"scored {scored}; not scored (no answer key):\n" + "\n".join(result.unchecked.values()))


def _check_folder(option: str, path: Path, layout: str, *own_files: str) -> None:
    """A mistyped data folder, or one task's folder given for the folder of all tasks, said once, not once
    per task of the submission."""
    from elue.data import task_folder_hint

    if not path.is_dir():
        what = "no such folder" if not path.exists() else "not a folder"
        fail(f"{option} {path}: {what} (give the folder holding {layout}, e.g. ../shared/data)")
    if hint := task_folder_hint(path, *own_files):
        fail(f"{option} {path}: {hint} ({layout})")


def _check_writable(path: Path) -> None:
    """Refuse an output path that cannot be written before minutes of scoring, not after."""
    if path.is_dir():
        fail(f"--json {path}: is a folder; give a file name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        fail(f"--json {path}: cannot write there ({parent} is not a writable folder)")


def validate(
    submission_dir: Path = typer.Argument(..., help="Submission folder to check before submitting."),
    data: Path = typer.Option(
        ..., "--data", help="Task data laid out as DATA_DIR/<task>/test.tsv (no labels needed)."
    ),
    trust_model_code: bool = typer.Option(False, "--trust-model-code", help=TRUST_HELP),
) -> None:
    """Pre-flight check of a submission against the test sets, without labels."""
    from elue.submission import SubmissionError, validate_submission

    _check_folder("--data", data, "<task>/test.tsv", "test.tsv", "test.tsv.gz")
    try:
        with _progress() as bar:
            result = validate_submission(
                submission_dir, data, trust_model_code=trust_model_code, progress=_RichProgress(bar)
            )
    except (SubmissionError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    _print_result(result, with_performance=False)
    _print_warnings(result)
    if result.unchecked:
        checked = ", ".join(result.tasks)
        fail(f"checked {checked}; not checked (no local test set):\n" + "\n".join(result.unchecked.values()))
    console.print("[green]OK[/]: every test file is complete and every module call is priced.")
    if result.warnings:
        n = len(result.warnings)
        console.print(f"[yellow]{n} warning{'s' if n > 1 else ''}[/] above: check before submitting.")


def flops(
    model_py: Path = typer.Argument(..., help="A model.py defining module_list and entire_model."),
    module: str = typer.Option(..., "--module", help="Key of module_list to price."),
    shape: str = typer.Option(..., "--shape", help="Input shape without the batch dimension, e.g. 24,768."),
    trust_model_code: bool = typer.Option(False, "--trust-model-code", help=TRUST_HELP),
) -> None:
    """FLOPs of one module call (batch 1) under the ELUE convention, and the model's parameters."""
    from elue.costs.sandbox import SandboxError, SandboxUnavailable, price_model
    from elue.scoring import shown_millions
    from elue.trace import TraceError, parse_shape

    try:
        dims = parse_shape(shape)
        with err_console.status("pricing in the sandbox (starting Python, torch and model.py)"):
            costs = price_model(model_py, [(module, dims)], trust_model_code=trust_model_code)
    except (TraceError, SandboxError, SandboxUnavailable) as err:
        fail(str(err))
    value = costs.flops[(module, dims)]
    if len(dims) > 1 and dims[0] == 1:  # `--shape 1,24,768` priced a (1, 1, 24, 768) input without a word
        err_console.print(
            f"note: shapes are per example (spec §2): {dims} is priced as a call with a dimension of size 1 "
            f"first, under the batch dimension the pricer adds; if that 1 is a batch dimension, give "
            f"--shape {','.join(map(str, dims[1:]))}",
            soft_wrap=True,
        )
    console.print(
        f"{escape(module)} at {dims}: {value:,} FLOPs = {shown_millions(value / 1e6, 3)} MFLOPs ({value // 2:,} MACs)"
    )
    console.print(f"entire_model: {costs.params:,} parameters ({shown_millions(costs.params / 1e6, 2)}M)")


def tasks() -> None:
    """List the ELUE tasks: labels, text columns, metric and split sizes."""
    from elue.tasks import TASKS

    table = Table(title="ELUE tasks", box=box.SIMPLE_HEAD, pad_edge=False)
    # one item per line and no wrapping inside names or numbers: readable at 80 columns (and piped)
    for col in ("task", "labels", "text", "metric", "splits"):
        table.add_column(col if col != "splits" else "official\nsplits", no_wrap=True)
    for t in TASKS.values():
        labels = (
            "\n".join(f"{i} {n}" for i, n in enumerate(t.labels)) if t.labels else "float 0–5\n(regression)"
        )
        sizes = "\n".join(f"{s} {t.split_sizes[s]:,}" for s in ("train", "dev", "test"))
        table.add_row(
            f"{t.name}\nversion {t.version}",
            labels,
            "\n".join(t.text_columns),
            t.metric.replace("_and_", " and\n"),  # pearson_and_spearman would not fit 80 columns
            sizes,
            end_section=True,
        )
    console.print(table)
    console.print(
        "Official ELUE split sizes; a local copy may hold fewer rows (`elue validate` counts them)."
    )


def register(app: typer.Typer) -> None:
    for command in (evaluate, validate, flops, tasks):
        app.command()(command)
