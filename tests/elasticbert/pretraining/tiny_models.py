"""The tiny model shapes the pre-training tests train (hidden 32; 4 layers, or 2 where a test runs often), and
the settings of a tiny-model run."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}

TWO_LAYERS = dict(TINY_MODEL, num_hidden_layers=2)


def tiny_run_settings(
    corpus_files: dict[str, Path], tokenizer_path: str, output_dir: Path, /, **over
) -> dict:
    """Pre-training settings for a tiny model, output in `output_dir` (what `tiny_settings` makes; usable by
    fixtures of a wider scope)."""
    base = {
        "tokenizer_name_or_path": tokenizer_path,
        "model_config": dict(TINY_MODEL),
        "train_files": [str(corpus_files["train"])],
        "max_seq_length": 48,
        "per_device_batch_size": 8,
        "max_steps": 6,
        "learning_rate": 3e-3,
        "warmup_steps": 1,
        "logging_steps": 1,
        "save_steps": 0,
        "progress_bar": False,
        "output_dir": str(output_dir),
    }
    base.update(over)
    return base


def tiny_pretraining_model():  # noqa: ANN201
    """A seeded 4-layer ElasticBertForPreTraining (vocabulary 200, hidden 32, no dropout) with an exit per layer."""
    import torch

    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForPreTraining

    torch.manual_seed(0)
    cfg = ElasticBertConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        num_output_layers=4, max_output_layers=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return ElasticBertForPreTraining(cfg)


def tiny_batch(rows: int = 8, length: int = 16) -> dict:
    """A seeded batch for `tiny_pretraining_model`: token ids, MLM labels (30 % of positions) and SOP labels."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 200, (rows, length), generator=g)
    labels = torch.where(torch.rand(rows, length, generator=g) < 0.3, ids, -100)
    return {"input_ids": ids, "labels": labels, "sop_labels": torch.randint(0, 2, (rows,), generator=g)}
