"""examples/make_pretrain_corpus.py: the local corpus of docs/pretraining.md from the ELUE data folder."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "make_pretrain_corpus.py"


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def _tsv_gz(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("sentence\tlabel\n" + "".join(f"{r}\t1\n" for r in rows))


def test_documents_from_a_data_folder(tmp_path):
    data = tmp_path / "data"
    _tsv_gz(data / "imdb" / "train.tsv.gz", ["A fine film.<br /><br />Really fine.", "Dull. Long."])
    _tsv_gz(data / "imdb" / "dev.tsv.gz", ["Held out. Review."])
    (data / "sst-2").mkdir()
    (data / "sst-2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i} .\t0\n" for i in range(8)))
    proc = _make(str(tmp_path / "corpus"), "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    train = (tmp_path / "corpus" / "train.txt").read_text().split("\n\n")
    assert train[:2] == ["A fine film.\nReally fine.", "Dull. Long."]
    assert train[2:] == ["\n".join(f"s{i} ." for i in range(6)), "s6 .\ns7 .\n"]
    assert (tmp_path / "corpus" / "eval.txt").read_text() == "Held out. Review.\n"


def test_a_missing_data_folder_is_one_line(tmp_path):
    """A FileNotFoundError traceback, after making the output folder."""
    proc = _make(str(tmp_path / "corpus"), "--data", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "no ELUE data in" in proc.stderr and "imdb/train.tsv.gz" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "corpus").exists()


def test_the_corpus_is_written_in_utf8_whatever_the_locale(tmp_path):
    """`elue pretrain` reads UTF-8 only; the files were written in the locale's encoding: under an ASCII locale a
    review with an accent stopped the script with UnicodeEncodeError (cp1252 on Windows wrote bytes pretrain then
    refused)."""
    import os

    data = tmp_path / "data"
    _tsv_gz(data / "imdb" / "train.tsv.gz", ["Un film très réussi… 🎬"])
    _tsv_gz(data / "imdb" / "dev.tsv.gz", ["Déjà vu."])
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "corpus"), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "corpus" / "train.txt").read_bytes().decode("utf-8") == "Un film très réussi… 🎬\n"
    assert (tmp_path / "corpus" / "eval.txt").read_bytes().decode("utf-8") == "Déjà vu.\n"
