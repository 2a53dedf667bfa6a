"""Scoring speed: a 5-dataset submission the size of the local test sets (~40k rows; IMDb 25k rows up to
512 tokens, exit layers 1-12), scored by `elue evaluate`'s code path, against the naive way (an
off-the-shelf counter, torch's FlopCounterMode, run on every row's module calls).

    python bench/bench_scoring.py [--data ../shared/data] [--naive-rows 200]

Prints: total wall time, the time spent starting the sandbox and building model.py (load), the
remainder (target < 3 s), the naive time and the ratio (target >= 100x). The naive time is measured
on a random sample of `--naive-rows` rows of every task, each task with its own model.py (SNLI's
3-way and STS-B's 1-output heads have theirs), and extrapolated per task to all of its rows (the
counter's work per row does not depend on the other rows, so the extrapolation is linear); the
per-task figures and the rows they cover are printed. `--naive-rows 0` skips the naive side.
Run it on a quiet machine: timings here are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from elue.costs.flops import default_dummy_input
from elue.example_submission import build_example_submission
from elue.submission import discover, evaluate_submission, iter_points
from elue.testfile import read_test_file

REPO = Path(__file__).resolve().parents[1]


def _cpu_modules(model_py: Path) -> dict:
    """A submission's model.py, built with real CPU weights for an ordinary counter (our own generated
    code, run in-process; its `torch.device("meta")` block is switched to the CPU)."""
    namespace: dict = {}
    source = model_py.read_text().replace('torch.device("meta")', 'torch.device("cpu")')
    exec(compile(source, str(model_py), "exec"), namespace)  # our own code
    modules = namespace["module_list"]
    for m in modules.values():
        m.eval()
    return modules


@dataclass
class NaiveTask:
    task: str
    model_py: str  # relative to the submission
    rows: int  # rows of the task (all its test files)
    timed: int  # rows timed
    seconds_per_row: float

    @property
    def seconds(self) -> float:  # extrapolated to every row of the task
        return self.seconds_per_row * self.rows


def naive_estimate(submission: Path, rows_per_task: int, seed: int = 0) -> list[NaiveTask]:
    """Time FlopCounterMode on every module call of `rows_per_task` random rows of each task, with that
    task's own model.py (in-process, no sandbox), and extrapolate per task to all of its rows."""
    built: dict[Path, dict] = {}
    out = []
    for name, tf in discover(submission).items():
        if tf.model_py not in built:
            built[tf.model_py] = _cpu_modules(tf.model_py)
        modules = built[tf.model_py]
        pool = []  # (TestFile, row) over every test file (operating point) of the task
        for path in tf.test_files:
            test_file = read_test_file(path, tf.task)
            pool += [(test_file, r) for r in range(len(test_file))]
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(pool), size=min(rows_per_task, len(pool)), replace=False)
        start = time.perf_counter()
        with torch.no_grad():
            for p in picks:
                test_file, row = pool[p]
                for module_name, shape in test_file.trace(row):
                    module = modules[module_name]
                    (x,) = default_dummy_input(module, shape)
                    with FlopCounterMode(display=False) as counter:
                        module(x)
                    counter.get_total_flops()
        per_row = (time.perf_counter() - start) / len(picks)
        out.append(
            NaiveTask(name, tf.model_py.relative_to(submission).as_posix(), len(pool), len(picks), per_row)
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument(
        "--naive-rows",
        type=int,
        default=200,
        help="rows timed per task for the naive estimate (0: skip the naive side)",
    )
    parser.add_argument(
        "--trust-model-code", action="store_true", help="no bwrap (our own generated model.py)"
    )
    args = parser.parse_args()
    if args.naive_rows < 0:
        parser.error(f"--naive-rows must be 0 (skip the naive side) or more, got {args.naive_rows}")
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "submission"
        t = time.perf_counter()
        rows = build_example_submission(args.data, sub, tasks=["sst-2", "imdb", "snli", "mrpc", "sts-b"])
        print(f"built submission: {sum(rows.values()):,} rows {rows} in {time.perf_counter() - t:.1f} s")

        model_pys = {tf.model_py for tf in discover(sub).values()}
        t = time.perf_counter()
        result = evaluate_submission(sub, args.data, trust_model_code=args.trust_model_code)
        total_s = time.perf_counter() - t
        # the worker reports when model.py was loaded; the rest of its wall time is sandbox start-up,
        # importing torch and building model.py
        load_s = result.load_seconds
        fast_s = max(total_s - load_s, 1e-9)

        naive = naive_estimate(sub, args.naive_rows) if args.naive_rows else []

    for name, task in result.tasks.items():
        for p in task.points:
            print(
                f"  {name:6s} {p.file:12s} {p.examples:6d} rows  {p.mflops:10,.1f} MFLOPs  perf {p.performance:.2f}"
            )
    print(f"elue evaluate, end to end:        {total_s:8.2f} s")
    print(
        f"  of which sandbox start + model.py load ({len(model_pys)} model.py, side by side): {load_s:8.2f} s"
    )
    print(f"  scoring after model.py is loaded: {fast_s:8.2f} s   (target < 3 s)")
    if not naive:
        print("naive side skipped (--naive-rows 0)")
        return
    print("naive (FlopCounterMode on every module call of a row, real CPU weights, 1 thread):")
    for n in naive:
        print(
            f"  {n.task:6s} {n.model_py:16s} {n.timed:4d} of {n.rows:6,d} rows timed: "
            f"{n.seconds_per_row * 1e3:8.1f} ms/row  -> {n.seconds:8.1f} s"
        )
    covered = sum(n.rows for n in naive)
    all_rows = sum(p.examples for _, _, p in iter_points(result))
    naive_s = sum(n.seconds for n in naive)
    print(
        f"naive, extrapolated per task to {covered:,} of {all_rows:,} rows "
        f"({sum(n.timed for n in naive):,} timed): {naive_s:8.1f} s"
    )
    print(f"speed-up vs naive: {naive_s / fast_s:8.0f}x   (target >= 100x)")


if __name__ == "__main__":
    main()
