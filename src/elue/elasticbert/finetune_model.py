"""The model side of fine-tuning: the checkpoint's tokenizer, the checks of a checkpoint folder, of
`max_length` and of the layers and exits asked for, and the ElasticBERT classifier built from the checkpoint
for the run's task and mode (static or joint).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .finetune_checkpoints import BEST_DIR, LAST_DIR
from .finetune_config import FinetuneConfig
from .task_data import TaskSpec

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_tokenizer(path: str | Path):
    """The fast tokenizer of a checkpoint (`AutoTokenizer`). The released `fnlp/elasticbert-*` checkpoints hold a
    vocab.txt and neither tokenizer_config.json nor tokenizer.json (their model card loads `BertTokenizer` by
    hand), and AutoTokenizer knows no tokenizer for `model_type: elasticbert`: such a folder or hub repo gets
    BERT's WordPiece tokenizer of that vocab.txt."""
    from transformers import AutoTokenizer, BertTokenizerFast
    from transformers.utils import cached_file

    def has(name: str) -> bool:
        return cached_file(str(path), name, _raise_exceptions_for_missing_entries=False) is not None

    if not has("tokenizer_config.json") and not has("tokenizer.json") and has("vocab.txt"):
        return BertTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path), use_fast=True)


def check_checkpoint_dir(path: str | Path, *, tokenizer: bool = True, option: str = "--model") -> None:
    """A local checkpoint folder must hold a config, weights and (with `tokenizer`) tokenizer files; raise
    FileNotFoundError naming what is missing, with a hint when `path` is a run folder (`path/best`)."""
    path = Path(path)
    if not path.is_dir():
        return  # a hub id: transformers reports it
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files")
    if not missing:
        return
    hint = ""
    runs = [d for d in (BEST_DIR, LAST_DIR) if (path / d / "config.json").is_file()]
    # a pre-training checkpoint keeps its model in model/; a pre-training run keeps checkpoints/step-N/model
    models = sorted((path / "checkpoints").glob("step-*/model/config.json"))
    models += sorted(path.glob("step-*/model/config.json")) if path.name == "checkpoints" else []
    if runs:
        hint = f"; it looks like a fine-tuning run folder: did you mean {path / runs[0]}?"
    elif (path / "model" / "config.json").is_file():
        hint = f"; it looks like a pre-training checkpoint: did you mean its model folder {path / 'model'}?"
    elif models:
        hint = (
            "; it looks like a pre-training run's folder: give the model/ folder of one of its checkpoints, "
            f"e.g. {models[-1].parent}"
        )
    raise FileNotFoundError(f"{option} {path}: no {', no '.join(missing)} in this folder{hint}")


def check_max_length(max_length: int, config, option: str = "--max-length") -> None:
    """Inputs longer than the model's position table cannot be encoded: refuse before running."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if limit and max_length > limit:
        raise ValueError(f"{option} {max_length}: the model has {limit} positions (use at most {limit})")


def default_exits(config, num_layers: int | None) -> int:
    """The checkpoint's exit layout (exits on its top `num_output_layers` layers) for a model truncated to
    `num_layers`: the exits that remain below the cut (at least one, the top layer's)."""
    total = int(config.num_hidden_layers)
    k = int(getattr(config, "num_output_layers", None) or total)
    n = int(num_layers or total)
    return max(1, min(n, n - (total - k)))


def load_model(
    cfg: FinetuneConfig, spec: TaskSpec, path: str | None = None, log: Callable[[str], None] = print
):
    """The ElasticBERT classifier of `cfg` from `path` (default `cfg.model`), in float32 whatever the dtype it was
    saved in (AdamW's updates round away in half-precision weights; mixed precision is Accelerate's autocast).
    Exit heads fine-tuned for another number of outputs (a 2-label model trained on for STS-B or SNLI) cannot be
    reused: they start fresh."""
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig
    from elue.elasticbert.modeling_elasticbert import ElasticBertForSequenceClassification

    path = path or cfg.model
    config = model_config(cfg, spec, path)
    saved_labels = int(ElasticBertConfig.from_pretrained(path).num_labels)
    # transformers' own load report is a table with terminal colour codes that calls fresh exit heads MISSING,
    # which is what a converted checkpoint is meant to have: said here in words instead
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = ElasticBertForSequenceClassification.from_pretrained(
            path,
            config=config,
            dtype=torch.float32,
            ignore_mismatched_sizes=saved_labels != spec.num_labels,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    mismatched = {k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", ())}
    if any(key.startswith("classifier") for key in mismatched):
        log(
            f"note: {path}'s exit heads have {saved_labels} outputs, {spec.name} needs {spec.num_labels}: "
            "the heads start from random weights"
        )
    missing = sorted(info.get("missing_keys", ()))
    heads = {k.rsplit(".", 1)[0] for k in missing if k.startswith("classifier")}
    if heads:
        log(
            f"note: {path} has no weights for {len(heads)} exit head(s), which start from random weights "
            "(checkpoints from `elue convert` or pre-training have none)"
        )
    others = [k for k in missing if not k.startswith("classifier")]
    if others:
        shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
        log(
            f"warning: {path} lacks {len(others)} weight(s) of the encoder, which start from random values: {shown}"
        )
    return model


def model_config(cfg: FinetuneConfig, spec: TaskSpec, path: str | None = None):
    """The config `load_model` builds (layers, exits, labels), checked against the checkpoint's: ValueError
    for a depth, exit count or max length the checkpoint cannot give. Reads config.json only."""
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig

    path = path or cfg.model
    config = ElasticBertConfig.from_pretrained(path)
    check_max_length(cfg.max_length, config)
    layers = int(config.num_hidden_layers)
    option = "--layers" if cfg.mode == "static" else "--num-layers"
    if cfg.num_layers is not None and not 1 <= cfg.num_layers <= layers:
        raise ValueError(f"{option} {cfg.num_layers}: the model has {layers} layers")
    config.num_labels = spec.num_labels
    # the task's class names, or generic ones: a checkpoint trained before on another task of as many classes
    # kept that task's names (an SST-2 model fine-tuned on MRPC called its classes negative / positive), and an
    # ELUE checkpoint's pipeline said LABEL_2 for contradiction
    names = spec.label_names if spec.label_names and len(spec.label_names) == spec.num_labels else None
    config.id2label = {i: (names[i] if names else f"LABEL_{i}") for i in range(spec.num_labels)}
    config.label2id = {name: i for i, name in config.id2label.items()}
    # set either way: a checkpoint fine-tuned on the other kind of task (STS-B -> SST-2) brings its own, and a
    # "regression" left on a classifier makes the saved model a regressor (MSE loss, no entropy exit)
    config.problem_type = "regression" if spec.is_regression else "single_label_classification"
    if cfg.mode == "static":
        if cfg.num_layers is not None:
            config.num_hidden_layers = int(cfg.num_layers)
        config.num_output_layers = 1
        _set(config, "gradient_equilibrium", False)
    elif cfg.mode == "joint":
        exits = cfg.num_output_layers
        if exits is None:
            exits = default_exits(config, cfg.num_layers)
        if cfg.num_layers is not None:
            config.num_hidden_layers = int(cfg.num_layers)
        if not 1 <= exits <= config.num_hidden_layers:
            raise ValueError(f"--exits {exits}: the model has {config.num_hidden_layers} layers")
        config.num_output_layers = int(exits)
        _set(config, "gradient_equilibrium", bool(cfg.gradient_equilibrium))
    else:
        raise ValueError(f"unknown mode {cfg.mode!r}: joint or static")
    return config


def _warn_untrained_pooler(cfg: FinetuneConfig, log: Callable[[str], None]) -> None:
    """Static k takes layer k's pooler; a checkpoint with exits on other layers only has none to give."""
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig

    source = ElasticBertConfig.from_pretrained(cfg.model)
    k = int(cfg.num_layers or source.num_hidden_layers)
    trained = exit_layers(source)
    if k not in trained:
        log(
            f"warning: {cfg.model} has exits at layers {trained} only: layer {k}'s pooler starts from "
            "random weights (convert with --exits covering it to start from a copied one)"
        )


def _set(config, key: str, value: Any) -> None:
    setattr(config, key, value)


def exit_layers(config) -> list[int]:
    """1-based layer numbers that carry an exit: the top `num_output_layers` layers."""
    n = int(config.num_hidden_layers)
    k = int(getattr(config, "num_output_layers", 1) or 1)
    return list(range(n - k + 1, n + 1))
