"""Turn a BERT checkpoint into an ElasticBERT one (a starting point for multi-exit training without the
original pre-trained weights, e.g. from `all-MiniLM-L6-v2`).

    convert_bert_to_elasticbert(src, dst, num_output_layers=None, num_hidden_layers=None, pooler_init="copy")

- embeddings and the first `num_hidden_layers` encoder layers are copied as they are (same names under
  ElasticBERT: `embeddings.*`, `encoder.layer.<i>.*`), so hidden states equal the source BERT's;
- a pooler is created on each exit layer (the top `num_output_layers`; default every layer, `max_output_layers`
  = number of layers). `pooler_init="copy"` copies BERT's pooler (trained on the top layer) into every slot
  when the source has one, `"random"` draws them from the initializer (normal(0, initializer_range)); a
  source without pooler weights (a `BertForMaskedLM` checkpoint, a BertModel saved without pooling layer)
  gets fresh poolers too, and `convert_bert_to_elasticbert` says so (`log`);
- BERT's `layer_norm_eps` is kept (not ElasticBERT's 1e-8), so the converted model computes what BERT computes;
- the tokenizer files of `src` (or `tokenizer=`) are saved next to the model.

The result is a bare `ElasticBertModel` checkpoint (config `model_type: elasticbert`); load it with
`ElasticBertForSequenceClassification.from_pretrained(dst, num_labels=...)` (new classifiers are initialised)
or with a smaller config for static use (see docs/elasticbert.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_elasticbert import ElasticBertConfig
from .modeling_elasticbert import ElasticBertModel

logger = logging.get_logger(__name__)

# BERT config fields carried over unchanged
_BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


def elasticbert_config_from_bert(
    bert_config, *, num_hidden_layers: int | None = None, num_output_layers: int | None = None
) -> ElasticBertConfig:
    """An ElasticBertConfig with the source BERT's sizes; exits on the top `num_output_layers` layers."""
    if getattr(bert_config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ValueError("only absolute position embeddings can be converted")
    total = int(bert_config.num_hidden_layers)
    layers = int(num_hidden_layers if num_hidden_layers is not None else total)
    if not 1 <= layers <= total:
        raise ValueError(f"--layers {layers}: the source has {total} layers (give 1 to {total})")
    exits = int(num_output_layers if num_output_layers is not None else layers)
    if not 1 <= exits <= layers:
        raise ValueError(f"--exits {exits}: the converted model has {layers} layers (give 1 to {layers})")
    kwargs = {f: getattr(bert_config, f) for f in _BERT_FIELDS if getattr(bert_config, f, None) is not None}
    config = ElasticBertConfig(
        **kwargs,
        num_hidden_layers=layers,
        max_output_layers=layers,
        num_output_layers=exits,
    )
    config.check_layers()
    return config


@torch.no_grad()
def bert_to_elasticbert_model(
    bert,
    *,
    num_hidden_layers: int | None = None,
    num_output_layers: int | None = None,
    pooler_init: str = "copy",
    seed: int = 0,
) -> ElasticBertModel:
    """An `ElasticBertModel` holding the weights of a transformers `BertModel` (or a model with `.bert`)."""
    if pooler_init not in ("copy", "random"):
        raise ValueError(f"pooler_init must be 'copy' or 'random', got {pooler_init!r}")
    bert = getattr(bert, "bert", bert)
    config = elasticbert_config_from_bert(
        bert.config, num_hidden_layers=num_hidden_layers, num_output_layers=num_output_layers
    )
    torch.manual_seed(seed)
    model = ElasticBertModel(config)
    source = bert.state_dict()
    target = model.state_dict()
    for name in target:
        if name.startswith("encoder.pooler."):
            continue
        if name not in source:
            raise KeyError(f"source BERT has no {name!r}")
        if source[name].shape != target[name].shape:
            raise ValueError(f"{name}: shape {tuple(source[name].shape)} != {tuple(target[name].shape)}")
        target[name].copy_(source[name])
    bert_pooler = getattr(bert, "pooler", None)
    if pooler_init == "copy" and bert_pooler is not None:
        for slot in config.exit_layers:
            model.encoder.pooler[slot].dense.weight.copy_(bert_pooler.dense.weight)
            model.encoder.pooler[slot].dense.bias.copy_(bert_pooler.dense.bias)
    return model.eval()


def convert_bert_to_elasticbert(
    src: str | Path,
    dst: str | Path,
    *,
    num_output_layers: int | None = None,
    num_hidden_layers: int | None = None,
    pooler_init: str = "copy",
    tokenizer: str | Path | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Read the BERT checkpoint at `src` (any BertModel / BertFor* folder), write an ElasticBERT checkpoint
    (config.json + weights + tokenizer) at `dst`, return `dst`. A source without a tokenizer gives a checkpoint
    without one (copy the weights' tokenizer into `dst`, or pass `tokenizer=`, which must have one). A source
    without pooler weights (e.g. BertForMaskedLM: transformers would draw BertModel's pooler at random) gets
    fresh poolers whatever `pooler_init`, and `log` (default: a warning) says so."""
    from transformers import AutoConfig, AutoTokenizer, BertModel

    model_type = getattr(AutoConfig.from_pretrained(str(src)), "model_type", None)
    if model_type == "elasticbert":
        raise ValueError(
            f"{src} is already an ElasticBERT checkpoint: use it as it is (`elue finetune --model {src}`); "
            "converting would replace its trained poolers"
        )
    if model_type != "bert":
        raise ValueError(
            f"{src} is a {model_type!r} checkpoint: convert takes a BERT checkpoint (model_type bert)"
        )
    bert, info = BertModel.from_pretrained(str(src), output_loading_info=True)
    if any(key.startswith("pooler.") for key in info["missing_keys"]):
        bert.pooler = None  # drawn at random by transformers, not BERT's: nothing to copy
        if pooler_init == "copy":
            (log or logger.warning)(
                f"{src} has no pooler weights (e.g. a masked-LM checkpoint): the exits' poolers start from "
                "random weights, not copied from BERT's pooler"
            )
    model = bert_to_elasticbert_model(
        bert,
        num_hidden_layers=num_hidden_layers,
        num_output_layers=num_output_layers,
        pooler_init=pooler_init,
        seed=seed,
    )
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dst))
    tok_src = tokenizer if tokenizer is not None else src
    try:
        tok = AutoTokenizer.from_pretrained(str(tok_src))
        # transformers 5 builds a tokenizer of the special tokens alone for a folder without tokenizer files:
        # saved, it would turn every word into [UNK]
        if len(tok) <= len(set(tok.all_special_ids)):
            raise OSError(f"{tok_src}: no tokenizer files (a vocabulary of special tokens only)")
        tok.save_pretrained(str(dst))
    except (OSError, ValueError):
        if tokenizer is not None:
            raise  # asked for explicitly: a missing tokenizer is an error
    return dst


__all__ = ["bert_to_elasticbert_model", "convert_bert_to_elasticbert", "elasticbert_config_from_bert"]
