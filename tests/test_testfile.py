"""Test files (spec §2): reading, strict validation, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elue.testfile import TestFile, TestFileError, read_test_file, write_test_file

FIXTURES = Path(__file__).parent / "fixtures" / "testfiles"
T1 = "(10),emb; (10,768),layer_1; (768),exit_1"
T2 = "(7),emb; (7,768),layer_1; (768),exit_1; (7,768),layer_2; (768),exit_2"
NAMES = {"emb", "layer_1", "exit_1", "layer_2", "exit_2"}


def _file(
    tmp_path, body: str, header: str = "index\tpred\tmodules\n", name="t.tsv", raw: bytes | None = None
):
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(header + body, encoding="utf-8", newline="")
    return p


def _error(path, task="sst-2", **kw) -> TestFileError:
    with pytest.raises(TestFileError) as e:
        read_test_file(path, task, **kw)
    assert str(path) in str(e.value)
    return e.value


def test_read_fixture():
    tf = read_test_file(FIXTURES / "sst2_small.tsv", "sst-2", test_indices=[0, 1, 2], module_names=NAMES)
    assert isinstance(tf, TestFile) and len(tf) == 3
    assert tf.index.dtype == np.int64 and tf.index.tolist() == [0, 1, 2]
    assert tf.pred.dtype == np.int64 and tf.pred.tolist() == [1, 0, 1]
    assert tf.trace_ids.dtype == np.int32 and tf.trace_ids.tolist() == [0, 1, 0]
    assert len(tf.traces) == 2
    assert tf.traces[0] == (("emb", (10,)), ("layer_1", (10, 768)), ("exit_1", (768,)))
    assert tf.trace(1)[-1] == ("exit_2", (768,))
    assert tf.trace_strings()[0] == T1
    assert tf.trace_counts().tolist() == [2, 1]
    assert tf.pred_for([2, 1, 0]).tolist() == [1, 0, 1]
    with pytest.raises(KeyError, match="index 9"):
        tf.pred_for([9])


def test_bom_crlf_spaces_and_trailing_blank_lines(tmp_path):
    body = (
        f"index\tpred\tmodules\r\n 3 \t 1 \t{T1}\r\n4\t0\t(10),emb ;(10,768), layer_1;(768),exit_1\r\n\r\n\n"
    )
    p = _file(tmp_path, "", raw=b"\xef\xbb\xbf" + body.encode())
    tf = read_test_file(p, "sst-2", module_names=NAMES)
    assert tf.index.tolist() == [3, 4] and tf.pred.tolist() == [1, 0]
    # two spellings of one trace are one distinct trace
    assert len(tf.traces) == 1 and tf.trace_ids.tolist() == [0, 0]


def test_float_class_rejected(tmp_path):
    e = _error(_file(tmp_path, f"0\t1.0\t{T1}\n1\t0e0\t{T1}\n2\t0.5\t{T1}\n"), "sst-2")
    assert [line for line, _ in e.problems] == [2, 3, 4]
    assert "'1.0' is a float where a class is expected (write an integer class id 0..1)" in str(e)


def test_regression(tmp_path):
    tf = read_test_file(_file(tmp_path, f"0\t2.5\t{T1}\n1\t4\t{T1}\n2\t-0.25\t{T1}\n"), "sts-b")
    assert tf.pred.dtype == np.float64 and tf.pred.tolist() == [2.5, 4.0, -0.25]
    e = _error(_file(tmp_path, f"0\tnan\t{T1}\n1\tinf\t{T1}\n2\tabc\t{T1}\n"), "sts-b")
    assert [line for line, _ in e.problems] == [2, 3, 4]
    assert "not a finite number" in str(e) and "'abc' is not a number" in str(e)


def test_empty_file(tmp_path):
    assert "empty" in str(_error(_file(tmp_path, "", header="")))
    assert "empty" in str(_error(_file(tmp_path, "", raw=b"\xef\xbb\xbf\n  \n")))
    e = _error(_file(tmp_path, ""), test_indices=[0, 1])
    assert "no rows" in str(e) and "all 2 test indices are missing" in str(e)


def test_wrong_header(tmp_path):
    e = _error(_file(tmp_path, f"0\t1\t{T1}\n", header="idx\tpred\tmodules\n"))
    assert e.problems[0][0] == 1 and "header" in e.problems[0][1]
    e = _error(_file(tmp_path, "0,1,x\n", header="index,pred,modules\n"))
    assert "tab-separated" in str(e)


def test_row_problems_all_reported_with_lines(tmp_path):
    body = (
        f"0\t1\t{T1}\n"  # 2 ok
        f"1\t1\n"  # 3 column count
        f"x\t1\t{T1}\n"  # 4 index not int
        f"0\t1\t{T1}\n"  # 5 duplicate
        f"2\t2\t{T1}\n"  # 6 label outside
        f"3\t0.5\t{T1}\n"  # 7 float class
        f"4\t1\t(10),emb;;\n"  # 8 malformed trace
        f"5\t1\t(10),embed\n"  # 9 unknown module
        f"6\t\t{T1}\n"  # 10 missing pred
        f"\t1\t{T1}\n"  # 11 missing index
        "\n"  # 12 empty line
        f"7\t1\t{T1}\n"  # 13 ok
    )
    e = _error(_file(tmp_path, body), module_names=NAMES)
    lines = {line: msg for line, msg in e.problems}
    assert sorted(k for k in lines if k is not None) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert "found 2" in lines[3]
    assert "'x' is not an integer" in lines[4]
    assert "duplicate index 0 (first on line 2)" in lines[5]
    assert "outside the task's labels 0..1" in lines[6]
    assert "'0.5' is a float where a class is expected" in lines[7]
    assert "bad modules value" in lines[8] and "empty" in lines[8]
    assert "unknown module name 'embed'" in lines[9] and "exit_1" not in lines[9]
    # the names model.py has: once, after the lines, not repeated on each line that misses one
    assert [m for line, m in e.problems if line is None] == [
        f"model.py's module_list has: {', '.join(sorted(NAMES))}"
    ]
    assert "missing pred" in lines[10]
    assert "missing index" in lines[11]
    assert "empty line" in lines[12]
    assert str(e).count("\n  line ") == 10


def test_snli_labels(tmp_path):
    assert read_test_file(_file(tmp_path, f"0\t2\t{T1}\n"), "snli").pred.tolist() == [2]
    assert "0..1" in str(_error(_file(tmp_path, f"0\t2\t{T1}\n"), "scitail"))
    assert "0..2" in str(_error(_file(tmp_path, f"0\t-1\t{T1}\n"), "snli"))


def test_test_set_membership(tmp_path):
    p = _file(tmp_path, f"0\t1\t{T1}\n1\t1\t{T1}\n99\t0\t{T1}\n")
    e = _error(p, test_indices=np.arange(30))
    assert (4, "index 99 is not in the sst-2 test set") in e.problems
    missing = [m for line, m in e.problems if line is None]
    assert missing and "28 of 30 test indices are missing, e.g. 2, 3, 4" in missing[0]


def test_problem_cap(tmp_path):
    body = "".join(f"{i}\t7\t{T1}\n" for i in range(50))
    e = _error(_file(tmp_path, body))
    assert len(e.problems) == 20 and e.more == 30 and "and 30 more" in str(e)
    assert "50 problems" in str(e)


def test_bad_utf8(tmp_path):
    raw = b"index\tpred\tmodules\n0\t1\t" + T1.encode() + b"\n1\t\xff\t" + T1.encode() + b"\n"
    e = _error(_file(tmp_path, "", raw=raw))
    assert e.problems == [(3, "not valid UTF-8")]


def test_missing_file(tmp_path):
    assert "cannot read" in str(_error(tmp_path / "nope.tsv"))


def test_write_read_roundtrip(tmp_path):
    calls = [("emb", (5,)), ("layer_1", (5, 384))]
    p = write_test_file(
        tmp_path / "sub" / "out.tsv",
        [2, 0, 1],
        [1, 0, 1],
        [T1, calls, " (10),emb ;(10,768),layer_1;(768),exit_1 "],
    )
    text = p.read_text()
    assert text.splitlines()[0] == "index\tpred\tmodules"
    assert text.splitlines()[2] == "0\t0\t(5),emb; (5,384),layer_1"
    tf = read_test_file(p, "sst-2", test_indices=[0, 1, 2])
    assert tf.index.tolist() == [2, 0, 1]
    assert len(tf.traces) == 2 and tf.trace_ids.tolist() == [0, 1, 0]
    # floats keep full precision
    x = [0.1, 1 / 3, 4.999999999]
    p2 = write_test_file(tmp_path / "r.tsv", np.arange(3), np.array(x), [T1] * 3)
    assert read_test_file(p2, "sts-b").pred.tolist() == x


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        write_test_file(tmp_path / "a.tsv", [0, 1], [1], [T1, T1])
    with pytest.raises(ValueError, match="duplicates"):
        write_test_file(tmp_path / "a.tsv", [0, 0], [1, 1], [T1, T1])
    with pytest.raises(ValueError, match="row 1"):
        write_test_file(tmp_path / "a.tsv", [0, 1], [1, 1], [T1, "(x),emb"])
    with pytest.raises(ValueError, match="non-finite"):
        write_test_file(tmp_path / "a.tsv", [0], [float("nan")], [T1])
    assert not (tmp_path / "a.tsv").exists()


def test_writing_non_finite_preds_names_the_rows_and_the_cause(tmp_path):
    """A model giving NaN (a diverged run's weights) reached `elue predict`'s user as 'pred holds non-finite
    values' alone: the message now counts them, names the first row and index, and points at the model."""
    with pytest.raises(ValueError) as e:
        write_test_file(tmp_path / "a.tsv", [7, 8, 9], [0.5, float("nan"), float("inf")], [T1, T1, T1])
    msg = str(e.value)
    assert "2 non-finite value(s)" in msg and "row 1 (index 8)" in msg and "diverged" in msg


def test_reading_25k_rows(tmp_path):
    # (an IMDb-sized file; its speed is bench/bench_scoring.py's figure, not a timed test's)
    n = 25_000
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 512, size=n)
    exits = rng.integers(1, 13, size=n)
    modules = []
    for length, k in zip(lengths.tolist(), exits.tolist(), strict=True):
        calls = [("emb", (length,))]
        for i in range(1, k + 1):
            calls += [(f"layer_{i}", (length, 768)), (f"exit_{i}", (768,))]
        modules.append(calls)
    p = write_test_file(tmp_path / "imdb.tsv", np.arange(n), rng.integers(0, 2, size=n), modules)
    names = {"emb"} | {f"layer_{i}" for i in range(1, 13)} | {f"exit_{i}" for i in range(1, 13)}
    tf = read_test_file(p, "imdb", test_indices=np.arange(n), module_names=names)
    assert len(tf) == n and len(tf.traces) > 1000
    order = np.argsort(tf.index)
    for row in (0, 12_345, n - 1):
        assert list(tf.traces[tf.trace_ids[order[row]]]) == modules[row]


def test_trace_error_names_position(tmp_path):
    e = _error(_file(tmp_path, f"0\t1\t{T1}\n1\t1\t(10),emb; (10,x),layer_1\n2\t1\t\n"))
    assert e.problems[0][0] == 3 and "call 2" in e.problems[0][1] and "'x'" in e.problems[0][1]
    assert e.problems[1][0] == 4 and "empty modules value" in e.problems[1][1]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("99999999999999999999999\t1\t(3),emb\n", "not in the sst-2 test set (far too large)"),
        ("0_0\t1\t(3),emb\n", "index '0_0' is not an integer"),
        ("\u0661\t1\t(3),emb\n", "is not an integer"),  # an Arabic-Indic digit: int() would take it
        ("0\t1_0\t(3),emb\n", "pred '1_0' is not a class id"),
        ("0\t\u0660\t(3),emb\n", "is not a class id"),
        ("0\t1\t(99999999999999999999999),emb\n", "is too large"),
    ],
)
def test_numbers_are_plain_ascii_literals(tmp_path, row, message):
    err = _error(_file(tmp_path, row))
    assert message in str(err)


@pytest.mark.parametrize(
    ("modules", "hint"),
    [
        # a module_list key with a space (or a comma) cannot be written in a trace: the message said only
        # "is not of the form '(<shape>),<name>'", which '(10,768),layer 1' looks like
        (
            "(10,768),layer 1",
            "(module name 'layer 1': a name in the modules column holds no spaces, commas, ",
        ),
        ("(10,768),enc(1)", "(module name 'enc(1)': a name in the modules column holds no spaces, commas, "),
        ("layer_1,(10,768)", "(the name comes after the shape)"),
        ("layer_1, (10, 768)", "(the name comes after the shape)"),
        ("(10,768),layer_1,(768),exit_1", "(calls are separated by ';')"),
        ("(10,768),layer_1 (768),exit_1", "(calls are separated by ';')"),
    ],
)
def test_a_call_not_of_the_form_says_what_looks_wrong(tmp_path, modules, hint):
    e = _error(_file(tmp_path, f"0\t1\t(10),emb; {modules}\n"))
    ((line, message),) = e.problems
    assert line == 2 and f"call 2 {modules!r} is not of the form '(<shape>),<name>'" in message
    assert hint in message
    # a call of another form gets no hint that does not fit it
    e = _error(_file(tmp_path, "0\t1\t(10)emb\n", name="other.tsv"))
    assert e.problems[0][1].endswith("e.g. '(10,768),layer_1'")


EMPTY = " (a module that got no input, e.g. an expert no token was routed to, was not called: leave it out of the trace)"


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        # a zero-length input costs nothing: the example would be priced at 0 FLOPs for that layer
        ("(10),emb; (0,768),layer_1", f"call 2 '(0,768),layer_1': shape dimensions must be positive{EMPTY}"),
        ("(10),emb; (10,0),layer_1", f"call 2 '(10,0),layer_1': shape dimensions must be positive{EMPTY}"),
        # an MoE expert that got no token: the message says to leave the call out
        (
            "(10),emb; (0,768),expert_3",
            f"call 2 '(0,768),expert_3': shape dimensions must be positive{EMPTY}",
        ),
        # 10 digits (within the digit cap) but beyond 2**31 - 1, which the counting code would overflow
        (
            "(2147483648),emb",
            "call 1 '(2147483648),emb': shape dimension 2147483648 is too large (at most 2,147,483,647)",
        ),
    ],
)
def test_trace_shapes_must_be_positive_and_bounded(tmp_path, modules, message):
    e = _error(_file(tmp_path, f"0\t1\t{T1}\n1\t1\t{modules}\n"))
    assert e.problems == [(3, f"bad modules value: {message}")]
    # the largest allowed dimension is accepted
    tf = read_test_file(_file(tmp_path, "0\t1\t(2147483647),emb\n", name="max.tsv"), "sst-2")
    assert tf.traces == [(("emb", (2_147_483_647,)),)]


def test_regression_pred_plain_literal(tmp_path):
    err = _error(_file(tmp_path, "0\t1_000.5\t(3),emb\n"), task="sts-b")
    assert "pred '1_000.5' is not a number" in str(err)
    ok = read_test_file(_file(tmp_path, "0\t-.5e1\t(3),emb\n1\t+3.\t(3),emb\n"), "sts-b")
    assert ok.pred.tolist() == [-5.0, 3.0]


def test_long_bad_header_is_shortened(tmp_path):
    err = _error(_file(tmp_path, "", header="0" * 100_000 + "\n"))
    assert len(str(err)) < 400 and "(100,000 characters)" in str(err)


def test_cr_only_line_ends_named(tmp_path):
    err = _error(_file(tmp_path, "", raw=b"index\tpred\tmodules\r0\t1\t(3),emb\r"))
    assert "CR only" in str(err)


def test_integers_beyond_pythons_digit_limit_are_named(tmp_path):
    """int() refuses more than 4,300 digits: such fields are reported with their line like any other."""
    huge = "9" * 5000
    e = _error(_file(tmp_path, f"{huge}\t1\t{T1}\n1\t{huge}\t{T1}\n2\t1\t({huge},768),layer_1\n"), "sst-2")
    assert [line for line, _ in e.problems] == [2, 3, 4]
    text = str(e)
    assert "far too large" in text and "outside the task's labels" in text and "too large (at most" in text
    assert len(text) < 2000  # the 5,000 digits are not quoted in full


def test_a_python_style_trailing_comma_gets_a_hint(tmp_path):
    e = _error(_file(tmp_path, f"0\t1\t{T1}\n1\t1\t(10,),emb\n"))
    assert "write (768), not Python's (768,)" in e.problems[0][1]
    e = _error(_file(tmp_path, f"0\t1\t{T1}\n1\t1\t(10,,768),layer_1\n", name="b.tsv"))
    assert "not a non-negative integer" in e.problems[0][1] and "Python" not in e.problems[0][1]


def test_pandas_index_column_gets_a_hint(tmp_path):
    """`df.to_csv(path, sep="\\t")` writes pandas' row index as an unnamed first column."""
    e = _error(_file(tmp_path, f"0\t0\t1\t{T1}\n", header="\tindex\tpred\tmodules\n"))
    assert e.problems[0][0] == 1 and "index=False" in e.problems[0][1]
    e = _error(_file(tmp_path, f"0\t0\t1\t{T1}\n", header="Unnamed: 0\tindex\tpred\tmodules\n", name="u.tsv"))
    assert "index=False" in e.problems[0][1]


def test_quoted_fields_are_named_as_quoting(tmp_path):
    """A spreadsheet saving 'tab delimited' text, or pandas with quoting=QUOTE_NONNUMERIC/QUOTE_ALL, puts
    fields that hold commas (every modules value) or text in double quotes."""
    e = _error(_file(tmp_path, f'0\t1\t"{T1}"\n1\t0\t"{T2}"\n'))
    assert [line for line, _ in e.problems] == [2, 3]
    assert all("double quotes" in m and "form" not in m for _, m in e.problems)
    e = _error(_file(tmp_path, f'0\t1\t"{T1}"\n', header='"index"\t"pred"\t"modules"\n', name="q.tsv"))
    assert e.problems[0][0] == 1 and "double quotes" in e.problems[0][1]
    e = _error(_file(tmp_path, f'0\t"1"\t{T1}\n', name="p.tsv"))
    assert "double quotes" in e.problems[0][1]


def test_a_repeated_header_is_one_problem(tmp_path):
    """Shards (one file per GPU process) concatenated with `cat` repeat the header: one problem, not three."""
    body = f"0\t1\t{T1}\nindex\tpred\tmodules\n1\t0\t{T1}\n"
    e = _error(_file(tmp_path, body))
    assert len(e.problems) == 1 and e.problems[0][0] == 3
    assert "header" in e.problems[0][1] and "concatenated" in e.problems[0][1]


def test_label_names_get_their_ids(tmp_path):
    e = _error(_file(tmp_path, f"0\tpositive\t{T1}\n1\tNegative\t{T1}\n"))
    assert "write its id 1" in e.problems[0][1] and "write its id 0" in e.problems[1][1]
    e = _error(_file(tmp_path, f"0\tcontradiction\t{T1}\n", name="n.tsv"), "snli")
    assert "write its id 2" in e.problems[0][1]


def test_utf16_is_named(tmp_path):
    """Excel's 'Unicode Text' is UTF-16 with a BOM."""
    raw = ("index\tpred\tmodules\r\n" + f"0\t1\t{T1}\r\n").encode("utf-16")
    e = _error(_file(tmp_path, "", raw=raw))
    assert "UTF-16" in str(e) and "UTF-8" in str(e)
