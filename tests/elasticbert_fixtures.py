"""A tiny random ElasticBERT checkpoint with a WordPiece vocabulary of a few sentiment words, shared by the
fine-tuning and export tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

POS = ["good", "great", "fine", "lovely", "superb", "fun"]
NEG = ["bad", "awful", "dull", "boring", "poor", "ugly"]
FILL = ["the", "film", "movie", "was", "is", "a", "plot", "story", "very", "quite"]


def write_tiny_checkpoint(
    path: Path, layers: int = 3, num_labels: int = 2, exits: int | None = None, seed: int = 0
) -> Path:
    """A random ElasticBERT (hidden 32), exits on the top `exits` layers (default every layer), and a
    WordPiece tokenizer for sentences made of the words above."""
    from transformers import BertTokenizerFast

    from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POS, *NEG, *FILL, "."]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # `vocab=`: transformers 5 ignores `vocab_file=` and builds a tokenizer of the special tokens alone
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    assert len(tokenizer) == len(vocab), "the tokenizer lost the vocabulary"
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = ElasticBertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_output_layers=exits,
        num_labels=num_labels,
    )
    ElasticBertForSequenceClassification(config).save_pretrained(path)
    return path


def write_sst2(root: Path, n_train: int = 64, n_dev: int = 16, n_test: int = 12, seed: int = 0) -> Path:
    """A tiny SST-2 in ELUE layout: the label is which word list the sentence draws from."""
    rng = random.Random(seed)

    def sentence(label: int) -> str:
        words = rng.sample(FILL, rng.randint(2, 6)) + [rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        return " ".join(words)

    d = root / "sst-2"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = [(sentence(i % 2), i % 2) for i in range(n)]
        (d / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    test = [(100 + i, sentence(i % 2), i % 2) for i in range(n_test)]
    (d / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s, _ in test))
    (d / "test_labels.tsv").write_text("index\tlabel\n" + "".join(f"{i}\t{y}\n" for i, _, y in test))
    return root


def invoke_cli(args):
    """`elue ARGS` in this process (typer's CliRunner); arguments may be paths."""
    from typer.testing import CliRunner

    from elue.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def padded_batch(vocab: int, b: int = 3, s: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (B, S) and a right-padded attention mask: row r has 2r padding positions, row 0 none."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    for row in range(1, b):
        mask[row, s - 2 * row :] = 0
    ids[mask == 0] = 0
    return ids, mask


# a vocabulary for tokenizers of the tiny models below
TINY_WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "movie",
    "was",
    "great",
    "bad",
    "not",
    "a",
    "film",
]

# a tiny random ElasticBERT classifier for tests of its Hugging Face behaviour (hidden 32, 2 layers, no dropout)
TINY_VOCAB = 99
TINY_SIZES = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def tiny_classifier(seed: int = 0, **kw):  # noqa: ANN201
    """An `ElasticBertForSequenceClassification` of `TINY_SIZES` (updated by `kw`), seeded, in eval mode."""
    from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification

    torch.manual_seed(seed)
    return ElasticBertForSequenceClassification(ElasticBertConfig(**{**TINY_SIZES, **kw})).eval()
