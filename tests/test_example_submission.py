"""The demo submission writer refuses what would otherwise look like success (no data) or a traceback."""

from __future__ import annotations

import pytest

from elue.example_submission import build_example_submission


def test_no_task_data_is_an_error_and_nothing_is_written(tmp_path):
    (tmp_path / "data" / "sst-2").mkdir(parents=True)  # one level too deep would look like this: no test.tsv
    with pytest.raises(FileNotFoundError, match="no ELUE task folders with a test.tsv"):
        build_example_submission(tmp_path / "data", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "data" / "sst-2").mkdir(parents=True)
    (tmp_path / "data" / "sst-2" / "test.tsv").write_text("index\tsentence\n0\tfine\n")
    (tmp_path / "out").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        build_example_submission(tmp_path / "data", tmp_path / "out")


def test_a_gzipped_test_split_counts(tmp_path):
    import gzip

    from elue.example_submission import _has_test_split

    (tmp_path / "imdb").mkdir()
    (tmp_path / "imdb" / "test.tsv.gz").write_bytes(gzip.compress(b"index\tsentence\n0\tfine\n"))
    assert _has_test_split(tmp_path, "imdb") and not _has_test_split(tmp_path, "sst-2")
