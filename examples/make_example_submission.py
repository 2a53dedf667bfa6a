"""Write a demonstration ELUE submission for the local test sets, then check and score it.

    python examples/make_example_submission.py [--data ../shared/data] [--out examples/submission]
    elue validate examples/submission --data ../shared/data
    elue evaluate examples/submission --answers ../shared/data --json result.json

The model.py has BERT-base-shaped modules (12 layers, 12 exits); the traces use the real token count
of each test example and a random exit layer; predictions are random placeholders (see
elue.example_submission). It shows the format, not a model: expect chance-level performance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from elue.example_submission import build_example_submission

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="ELUE-layout data dir, <task>/test.tsv (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "examples" / "submission",
        help="folder to write model.py and <task>.tsv into (default: %(default)s)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="only the first N test rows per task (a quick look; such files fail validation: every index is needed)",
    )
    args = parser.parse_args()
    if args.max_rows is not None and args.max_rows < 1:
        parser.error("--max-rows must be at least 1")
    try:
        written = build_example_submission(args.data, args.out, max_rows=args.max_rows)
    except (OSError, ValueError) as err:  # no data, an --out that is a file: one line, no traceback
        raise SystemExit(f"error: {err}") from None
    for task, rows in written.items():
        print(f"{task}: {rows} rows")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
