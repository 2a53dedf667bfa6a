"""The submission layout the leaderboard stores (`elue.layout`), checked path by path."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from elue.layout import LayoutError, classify, folder_problems, is_skipped


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("model.py", ("model", None)),
        ("sst-2.tsv", ("testfile", "sst-2")),
        ("sts-b/model.py", ("task_model", "sts-b")),
        ("imdb/k6.tsv", ("testfile", "imdb")),
        ("imdb/points.json", ("ignored", None)),
        ("README.md", ("ignored", None)),
        ("snli/LICENSE", ("ignored", None)),
        (".DS_Store", ("ignored", None)),
        ("sst-2/.draft.tsv", ("ignored", None)),
        ("__pycache__/model.cpython-311.pyc", ("ignored", None)),
    ],
)
def test_accepted_paths(path, expected):
    assert classify(PurePosixPath(path)) == expected


@pytest.mark.parametrize(
    "path", ["SST-2.tsv", "sst2/a.tsv", "result.json", "sst-2/a/b.tsv", "cola/a.tsv", "x.py"]
)
def test_refused_paths_name_the_file_and_the_layout(path):
    with pytest.raises(LayoutError, match=rf"unexpected file '{path}': a submission holds model.py.*sst-2"):
        classify(PurePosixPath(path))


def test_dot_and_dot_dot_are_not_hidden():
    # a path through `..` must reach the checks that refuse it, not be skipped as a hidden file
    assert not is_skipped(PurePosixPath("../sst-2.tsv"))
    assert is_skipped(PurePosixPath("a/.git/config"))


def test_folder_problems_one_message_per_refused_file_never_inside_hidden_folders(tmp_path):
    (tmp_path / "sst-2").mkdir()
    (tmp_path / "sst-2" / "a.tsv").write_text("")
    (tmp_path / "model.py").write_text("")
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "pack").write_text("")
    assert folder_problems(tmp_path) == []
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sst-2" / "old").mkdir()
    (tmp_path / "sst-2" / "old" / "a.tsv").write_text("")
    problems = folder_problems(tmp_path)
    assert [p.split(":")[0] for p in problems] == [
        "unexpected file 'notes.txt'",
        "unexpected file 'sst-2/old/a.tsv'",
    ]
