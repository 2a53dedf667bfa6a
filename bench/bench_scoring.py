"""Scoring speed: a 5-dataset submission the size of the local test sets (~40k rows; IMDb 25k rows up to
512 tokens, exit layers 1-12), scored by `elue evaluate`'s code path, against the naive way (an
off-the-shelf counter, torch's FlopCounterMode, run on every row's module calls).

    python bench/bench_scoring.py [--data ../shared/data] [--naive-rows 300]

Prints: total wall time, the time spent starting the sandbox and building model.py (load), the
remainder (target < 3 s), the naive time (measured on a random sample of rows and extrapolated to
all rows; the counter is the same per row, so the extrapolation is linear) and the ratio (target
>= 100x). Run it on a quiet machine: timings here are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from elue.example_submission import build_example_submission, model_py_source
from elue.submission import discover, evaluate_submission
from elue.testfile import read_test_file

REPO = Path(__file__).resolve().parents[1]


def naive_seconds_per_row(submission: Path, rows: int, seed: int = 0) -> tuple[float, int]:
    """Time FlopCounterMode on every module call of `rows` random rows (in-process, no sandbox)."""
    namespace: dict = {}
    # the same modules as the submission's model.py, with real CPU weights for an ordinary counter
    exec(compile(model_py_source(device="cpu"), "model.py", "exec"), namespace)  # our own code
    modules = namespace["module_list"]
    for m in modules.values():
        m.eval()
    tasks = discover(submission)
    pool = []  # (task, TestFile, row)
    for tf in tasks.values():
        if tf.model_py != submission / "model.py":
            continue  # tasks with their own head size: the shared model covers the rest
        for path in tf.test_files:
            test_file = read_test_file(path, tf.task)
            pool += [(test_file, r) for r in range(len(test_file))]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), size=min(rows, len(pool)), replace=False)
    start = time.perf_counter()
    with torch.no_grad():
        for p in picks:
            test_file, row = pool[p]
            for name, shape in test_file.trace(row):
                x = torch.zeros((1, *shape), dtype=torch.long if name == "emb" else torch.float32)
                with FlopCounterMode(display=False) as counter:
                    modules[name](x)
                counter.get_total_flops()
    return (time.perf_counter() - start) / len(picks), len(pool)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--naive-rows", type=int, default=300, help="rows timed for the naive estimate")
    parser.add_argument(
        "--trust-model-code", action="store_true", help="no bwrap (our own generated model.py)"
    )
    args = parser.parse_args()
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

        per_row, n_rows = naive_seconds_per_row(sub, args.naive_rows)
        naive_s = per_row * n_rows

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
    print(
        f"naive (FlopCounterMode per row, {args.naive_rows} rows timed, x{n_rows:,} rows): {naive_s:8.1f} s"
    )
    print(f"speed-up vs naive: {naive_s / fast_s:8.0f}x   (target >= 100x)")


if __name__ == "__main__":
    main()
