"""The test file of a submission (spec §2): a TSV with header `index, pred, modules`.

One row per test example, every test index exactly once. `pred` is a class id (classification) or a
float (STS-B); `modules` is the example's trace (see `elue.trace`).

Reading is strict: `read_test_file` collects up to `MAX_PROBLEMS` problems (each with its line
number) and raises one `TestFileError` that lists them all. Accepted leniencies:

- UTF-8 with or without a BOM; LF or CRLF line ends; blank lines at the very end.
- spaces around each field (`" 1 "` reads as `1`).
- nothing else for classes: a class id is an integer literal; a float (`1.0`, `0.5`, `1e0`: probabilities or
  numpy floats written as they are) is rejected with a message saying to write the integer.
- regression predictions may fall outside 0–5 (Pearson/Spearman do not care); they must be finite.
- numbers are plain ASCII literals: no `1_000` or non-ASCII digits (Python's `int()` would take both).

What common writers get wrong is named as such rather than as a bad value: pandas' row index written as a
first column, fields in double quotes (a spreadsheet's "tab delimited" text, pandas' `QUOTE_NONNUMERIC`),
a header repeated inside the file (shards concatenated), label names where ids go, UTF-16 (Excel's
"Unicode Text").

Each distinct `modules` string is parsed once: a file whose 25,000 rows share a few dozen traces
costs a few dozen parses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elue.tasks import Task, get_task
from elue.trace import Call, TraceError, format_trace, parse_trace

HEADER: tuple[str, str, str] = ("index", "pred", "modules")
MAX_PROBLEMS = 20
# ASCII literals only: int()/float() also take "1_000" and non-ASCII digits, which no writer means
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(
    r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.ASCII | re.I
)
_INT64_MAX = 2**63 - 1
_SHOWN = 80  # characters of a bad header quoted in a message


def _shown(text: str, limit: int = 40) -> str:
    """A field quoted in a message, cut short."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


class TestFileError(ValueError):
    """A test file that cannot be accepted. `problems` holds (line or None, message) pairs."""

    __test__ = False  # not a pytest test class

    def __init__(self, path: Path | str, problems: list[tuple[int | None, str]], more: int = 0):
        self.path = Path(path)
        self.problems = list(problems)
        self.more = more
        super().__init__(self._message())

    def _message(self) -> str:
        total = len(self.problems) + self.more
        lines = [f"{self.path}: {total} problem{'s' if total != 1 else ''}:"]
        for line, msg in self.problems:
            lines.append(f"  line {line}: {msg}" if line is not None else f"  {msg}")
        if self.more:
            lines.append(f"  ... and {self.more} more")
        return "\n".join(lines)


@dataclass
class TestFile:
    """A parsed, validated test file. Row i: `index[i]`, `pred[i]`, trace `traces[trace_ids[i]]`."""

    __test__ = False  # not a pytest test class

    path: Path
    index: np.ndarray  # int64, file order
    pred: np.ndarray  # int64 (classification) or float64 (regression)
    traces: list[tuple[Call, ...]]  # distinct traces
    trace_ids: np.ndarray  # int32, per row -> traces
    _pos: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def trace(self, row: int) -> tuple[Call, ...]:
        """The trace of row `row` (file order)."""
        return self.traces[int(self.trace_ids[row])]

    def trace_strings(self) -> list[str]:
        """The distinct traces as `modules` strings, in `traces` order."""
        return [format_trace(t) for t in self.traces]

    def trace_counts(self) -> np.ndarray:
        """How many rows use each distinct trace (int64, in `traces` order)."""
        return np.bincount(self.trace_ids, minlength=len(self.traces)).astype(np.int64)

    def rows_for(self, indices) -> np.ndarray:
        """Row positions of the given test indices (e.g. an answer key's order). KeyError if absent."""
        if self._pos is None:
            self._pos = {int(i): r for r, i in enumerate(self.index.tolist())}
        idx = np.asarray(indices).tolist()
        try:
            return np.fromiter((self._pos[int(i)] for i in idx), dtype=np.int64, count=len(idx))
        except KeyError as e:
            raise KeyError(f"index {e.args[0]} is not in test file {self.path}") from None

    def pred_for(self, indices) -> np.ndarray:
        """Predictions reordered to follow `indices` (e.g. the answer key's index column)."""
        return self.pred[self.rows_for(indices)]


class _Problems:
    def __init__(self, limit: int):
        self.limit = limit
        self.items: list[tuple[int | None, str]] = []
        self.more = 0

    def add(self, line: int | None, msg: str) -> None:
        if len(self.items) < self.limit:
            self.items.append((line, msg))
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.items)


_QUOTED = "is in double quotes (a spreadsheet's or CSV writer's quoting): write the file without quotes"


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] == '"'


def _parse_class(text: str, num_labels: int, labels: Sequence[str] = ()) -> tuple[int | None, str | None]:
    """(class id, None) or (None, what is wrong)."""
    expected = f"an integer class id 0..{num_labels - 1}"
    if not _INT.fullmatch(text):
        if _quoted(text):
            return None, f"pred {_shown(text)} {_QUOTED}"
        names = [name.lower() for name in labels]
        if text.lower() in names:
            return None, f"pred {text!r} is a label name: write its id {names.index(text.lower())}"
        if _FLOAT.fullmatch(text):
            return None, f"pred {text!r} is a float where a class is expected (write {expected})"
        return None, f"pred {text!r} is not a class id (expected {expected})"
    if len(text) > 20:  # beyond int64, and int() refuses more than 4,300 digits
        return None, f"pred {_shown(text)} is outside the task's labels 0..{num_labels - 1}"
    value = int(text)
    if not 0 <= value < num_labels:
        return None, f"pred {value} is outside the task's labels 0..{num_labels - 1}"
    return value, None


def _parse_float(text: str) -> tuple[float | None, str | None]:
    if not _FLOAT.fullmatch(text):
        if _quoted(text):
            return None, f"pred {_shown(text)} {_QUOTED}"
        return None, f"pred {text!r} is not a number"
    f = float(text)
    if not math.isfinite(f):
        return None, f"pred {text!r} is not a finite number"
    return f, None


def _parse_cached(text: str, by_part: dict[str, Call]) -> tuple[Call, ...]:
    """parse_trace(text), memoised per call: traces of one model share most of their calls."""
    calls = []
    for raw in text.split(";"):
        part = raw.strip()
        call = by_part.get(part)
        if call is None:
            try:
                parsed = parse_trace(part) if part else []
            except TraceError:
                parsed = []
            if len(parsed) != 1:
                return tuple(parse_trace(text))  # raises, naming the call's position in the value
            call = by_part[part] = parsed[0]
        calls.append(call)
    return tuple(calls)


def _describe_names(names: Collection[str], limit: int = 30) -> str:
    items = sorted(names)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def read_test_file(
    path: Path | str,
    task: str | Task,
    *,
    test_indices: np.ndarray | Sequence[int] | None = None,
    module_names: Collection[str] | None = None,
    max_problems: int = MAX_PROBLEMS,
) -> TestFile:
    """Read and validate a test file for `task`. Raises `TestFileError` listing every problem found
    (up to `max_problems`, with line numbers).

    `test_indices`: the task's test indices (e.g. `elue.data.read_test_indices`); when given, every
    row's index must be one of them and none may be missing. `module_names`: the keys of model.py's
    `module_list`; when given, every call must name one of them.
    """
    path = Path(path)
    t = get_task(task) if isinstance(task, str) else task
    problems = _Problems(max_problems)

    def fail() -> TestFileError:
        return TestFileError(path, problems.items, problems.more)

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TestFileError(path, [(None, f"cannot read the file: {e.strerror or e}")]) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TestFileError(
            path, [(1, "the file is UTF-16 (e.g. Excel's 'Unicode Text'): save it as UTF-8 text")]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TestFileError(path, [(line, "not valid UTF-8")]) from None
    if not text.strip():
        raise TestFileError(
            path, [(None, "the file is empty: expected a header 'index<TAB>pred<TAB>modules'")]
        )

    lines = text.split("\n")
    # drop blank lines at the very end (a final newline, or a few)
    while lines and not lines[-1].strip():
        lines.pop()

    if len(lines) == 1 and "\r" in lines[0].rstrip("\r"):
        raise TestFileError(path, [(None, "line ends are CR only (old Mac style): use LF or CRLF")])
    header = [h.strip().lower() for h in lines[0].rstrip("\r").split("\t")]
    if tuple(header) != HEADER:
        hint = ""
        if len(header) == 1 and "," in header[0]:
            hint = " (the file must be tab-separated, not comma-separated)"
        elif tuple(h.strip('"') for h in header) == HEADER:
            hint = " (the names are in double quotes: write the file without quotes)"
        elif len(header) > 3 and tuple(header[-3:]) == HEADER:
            hint = (
                " (an extra first column, as pandas writes its row index: "
                "write with to_csv(..., sep='\\t', index=False))"
            )
        shown = lines[0].rstrip("\r")
        shown = repr(shown) if len(shown) <= _SHOWN else f"{shown[:_SHOWN]!r}... ({len(shown):,} characters)"
        problems.add(1, f"header is {shown}, expected 'index<TAB>pred<TAB>modules'{hint}")
        raise fail()
    if len(lines) == 1:
        problems.add(None, "the file has a header but no rows")
        if test_indices is not None:
            problems.add(None, f"all {len(np.asarray(test_indices))} test indices are missing")
        raise fail()

    regression = t.is_regression
    num_labels = t.num_labels
    known = frozenset(module_names) if module_names is not None else None

    n = len(lines) - 1
    index = np.empty(n, dtype=np.int64)
    pred = np.empty(n, dtype=np.float64 if regression else np.int64)
    trace_ids = np.empty(n, dtype=np.int32)
    traces: list[tuple[Call, ...]] = []
    by_string: dict[str, int] = {}  # modules string -> trace id (-1: bad)
    by_trace: dict[tuple[Call, ...], int] = {}
    bad_trace_msg: dict[str, str] = {}
    first_line: dict[int, int] = {}  # index -> line it first appeared on
    by_part: dict[str, Call] = {}  # one call's text -> parsed call

    for row, line_text in enumerate(lines[1:]):
        lineno = row + 2
        if line_text.endswith("\r"):
            line_text = line_text[:-1]
        if not line_text.strip():
            problems.add(lineno, "empty line")
            continue
        fields = line_text.split("\t")
        if tuple(f.strip().lower() for f in fields) == HEADER:
            problems.add(
                lineno, "the header again (files concatenated, e.g. one per process? keep one header)"
            )
            continue
        if len(fields) != 3:
            problems.add(
                lineno, f"expected 3 tab-separated fields (index, pred, modules), found {len(fields)}"
            )
            continue
        s_index, s_pred, s_modules = fields

        s_index = s_index.strip()
        if not _INT.fullmatch(s_index):
            problems.add(lineno, f"index {_shown(s_index)} is not an integer" if s_index else "missing index")
        elif len(s_index) > 20 or abs(idx := int(s_index)) > _INT64_MAX:  # int() stops at 4,300 digits
            problems.add(lineno, f"index {_shown(s_index)} is not in the {t.name} test set (far too large)")
        else:
            index[row] = idx
            seen = first_line.get(idx)
            if seen is not None:
                problems.add(lineno, f"duplicate index {idx} (first on line {seen})")
            else:
                first_line[idx] = lineno

        s_pred = s_pred.strip()
        if not s_pred:
            problems.add(lineno, "missing pred")
        elif regression:
            value, err = _parse_float(s_pred)
            if err:
                problems.add(lineno, err)
            else:
                pred[row] = value
        else:
            value, err = _parse_class(s_pred, num_labels, t.labels or ())
            if err:
                problems.add(lineno, err)
            else:
                pred[row] = value

        tid = by_string.get(s_modules)
        if tid is None and _quoted(s_modules.strip()):
            tid = by_string[s_modules] = -1
            bad_trace_msg[s_modules] = f"modules value {_QUOTED}"
        if tid is None:
            try:
                calls = _parse_cached(s_modules, by_part)
            except TraceError as e:
                tid = -1
                bad_trace_msg[s_modules] = f"bad modules value: {e}"
            else:
                unknown = [] if known is None else sorted({name for name, _ in calls if name not in known})
                if unknown:
                    tid = -1
                    bad_trace_msg[s_modules] = (
                        f"unknown module name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                    )
                else:
                    tid = by_trace.get(calls)
                    if tid is None:
                        tid = len(traces)
                        traces.append(calls)
                        by_trace[calls] = tid
            by_string[s_modules] = tid
        if tid < 0:
            problems.add(lineno, bad_trace_msg[s_modules])
        else:
            trace_ids[row] = tid

    if any(m.startswith("unknown module") for m in bad_trace_msg.values()):
        # the names model.py has, once after the lines (not repeated on each of them)
        problems.add(None, f"model.py's module_list has: {_describe_names(known)}")
    if test_indices is not None:
        expected = np.asarray(test_indices, dtype=np.int64)
        expected_set = set(expected.tolist())
        for idx, lineno in first_line.items():
            if idx not in expected_set:
                problems.add(lineno, f"index {idx} is not in the {t.name} test set")
        missing = expected_set.difference(first_line)
        if missing:
            few = sorted(missing)[:10]
            more = ", ..." if len(missing) > len(few) else ""
            problems.add(
                None,
                f"{len(missing)} of {len(expected_set)} test indices are missing, e.g. "
                f"{', '.join(map(str, few))}{more}",
            )
    if problems:
        # report in line order (index checks were appended after the row scan)
        problems.items.sort(key=lambda p: (p[0] is None, p[0] or 0))
        raise fail()
    return TestFile(path=path, index=index, pred=pred, traces=traces, trace_ids=trace_ids)


def write_test_file(
    path: Path | str,
    index: Sequence[int] | np.ndarray,
    pred: Sequence | np.ndarray,
    modules: Sequence[str | Sequence[Call]],
) -> Path:
    """Write a test file. `modules[i]` is a trace string or a list of (name, shape) calls.

    Integer predictions are written as integers, floats with full precision (`repr`). Every trace is
    checked with `parse_trace`, so what is written can be read back. Returns the path.
    """
    path = Path(path)
    idx = np.asarray(index)
    prd = np.asarray(pred)
    if idx.ndim != 1 or prd.ndim != 1:
        raise ValueError("index and pred must be one-dimensional")
    if not (len(idx) == len(prd) == len(modules)):
        raise ValueError(f"index, pred and modules differ in length: {len(idx)}, {len(prd)}, {len(modules)}")
    if idx.dtype.kind not in "iu":
        raise ValueError(f"index must hold integers, got dtype {idx.dtype}")
    if len(set(idx.tolist())) != len(idx):
        raise ValueError("index holds duplicates")

    if prd.dtype.kind in "iub":
        pred_text = [str(int(v)) for v in prd.tolist()]
    elif prd.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(prd))
        if len(bad):  # say where and why: it is the model's output (NaN from diverged weights, an overflow)
            i = int(bad[0])
            raise ValueError(
                f"pred holds {len(bad)} non-finite value(s) (NaN or infinity), the first at row {i} "
                f"(index {int(idx[i])}): {prd[i]!r}; a test file needs a finite number on every row, so check the "
                "model that made them (a diverged training run gives NaN weights)"
            )
        pred_text = [repr(float(v)) for v in prd.tolist()]
    else:
        raise ValueError(f"pred must be numeric, got dtype {prd.dtype}")

    cache: dict[object, str] = {}
    module_text: list[str] = []
    for i, m in enumerate(modules):
        key = m if isinstance(m, str) else tuple((str(n), tuple(int(d) for d in s)) for n, s in m)
        s = cache.get(key)
        if s is None:
            try:
                s = format_trace(parse_trace(m)) if isinstance(m, str) else format_trace(list(key))
                parse_trace(s)
            except TraceError as e:
                raise ValueError(f"modules of row {i} (index {int(idx[i])}): {e}") from None
            cache[key] = s
        module_text.append(s)

    out = ["\t".join(HEADER)]
    out.extend(f"{i}\t{p}\t{m}" for i, p, m in zip(idx.tolist(), pred_text, module_text, strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8", newline="\n")
    return path
