"""The submission layout the leaderboard stores, as one rule for both sides: the server checks every
uploaded path with `classify`, and `elue validate` runs the same check on a folder so that a submission it
passes is not refused at upload.

    model.py                 default model for all tasks
    <task>/model.py          a task's own model (optional)
    <task>/<point>.tsv       test files, one per operating point
    <task>.tsv               a single test file for a task
    README*, LICENSE*        allowed and ignored
    <task>/points.json       allowed and ignored (`elue predict` writes it next to its test files)

Task names are written as spec §1 spells them (`sst-2`, not `SST-2` or `sst2`): the local toolkit forgives
other spellings, the stored submission does not. Hidden files and folders (`.git/`, `.DS_Store`), `__pycache__`
and `__MACOSX` are skipped on both sides, as `elue.submission.discover` skips them.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from elue.tasks import TASK_NAMES


class LayoutError(ValueError):
    """A path a submission may not hold; the message names it and the accepted layout."""


_SKIPPED_PARTS = ("__pycache__", "__MACOSX")


def is_skipped(path: PurePosixPath) -> bool:
    """Hidden entries, `__pycache__` and `__MACOSX`: left out of a submission rather than refused
    (`.` and `..` are not hidden: a path through them is refused elsewhere)."""
    return any((p.startswith(".") and p not in (".", "..")) or p in _SKIPPED_PARTS for p in path.parts)


def classify(path: PurePosixPath) -> tuple[str, str | None]:
    """(kind, task) with kind in model|task_model|testfile|ignored; LayoutError for anything else."""
    parts = path.parts
    name = parts[-1] if parts else ""
    if is_skipped(path):
        return "ignored", None
    if len(parts) == 1:
        if name == "model.py":
            return "model", None
        if name.endswith(".tsv") and name[:-4] in TASK_NAMES:
            return "testfile", name[:-4]
        if name.upper().startswith(("README", "LICENSE")):
            return "ignored", None
    elif len(parts) == 2 and parts[0] in TASK_NAMES:
        if name == "model.py":
            return "task_model", parts[0]
        if name.endswith(".tsv") and len(name) > 4:
            return "testfile", parts[0]
        if name == "points.json" or name.upper().startswith(("README", "LICENSE")):
            return "ignored", None
    raise LayoutError(
        f"unexpected file {str(path)!r}: a submission holds model.py, <task>/model.py, <task>/*.tsv or "
        f"<task>.tsv, with <task> one of {', '.join(TASK_NAMES)}"
    )


def folder_problems(root: Path) -> list[str]:
    """What an upload of the folder `root` would be refused for, one message per file (none: accepted as
    far as its file names go)."""
    problems = []
    for folder, dirs, files in os.walk(root):
        here = PurePosixPath(Path(folder).relative_to(root).as_posix())
        dirs[:] = sorted(d for d in dirs if not is_skipped(here / d))  # never walk into .git/
        for f in sorted(files):
            rel = here / f
            if is_skipped(rel):
                continue
            try:
                classify(rel)
            except LayoutError as err:
                problems.append(str(err))
    return problems
