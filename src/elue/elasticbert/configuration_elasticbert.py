"""ElasticBERT configuration (`model_type="elasticbert"`), compatible with the `fnlp/elasticbert-*` config.json.

ElasticBERT is a BERT encoder with a pooler per layer and classification exits on the top
`num_output_layers` layers (spec §7):

- static use, the first k layers and one exit: `num_hidden_layers=k, num_output_layers=1` (the pooler of
  layer k is used: slot k-1 of the `max_output_layers` pooler slots);
- dynamic use, an exit on every layer: `num_output_layers=num_hidden_layers`.

`ElasticBertConfig.from_pretrained(path, num_output_layers=1)` (the original documented usage) works because
`from_pretrained` sets the keyword arguments as attributes; the model checks the layer counts with
`check_layers()` when it is built, not here, since attributes may change after construction.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


@strict
class ElasticBertConfig(PreTrainedConfig):
    r"""Configuration of an ElasticBERT model. BERT fields, plus:

    Args:
        max_output_layers (`int`, *optional*, defaults to `num_hidden_layers`):
            Number of pooler slots in the checkpoint (one per layer of the full pre-trained model). Pooler
            parameters are named `elasticbert.encoder.pooler.<slot>.dense.*` with the absolute 0-based layer index
            as the slot, so a model with fewer layers still finds its pooler.
        num_output_layers (`int`, *optional*, defaults to `num_hidden_layers`):
            Number of exits, on the top layers: 1 for static use (exit on the last layer), `num_hidden_layers` for
            dynamic use (an exit per layer). Values in between put exits on the top `num_output_layers` layers.
        gradient_equilibrium (`bool`, defaults to `True`):
            With more than one exit, rescale gradients at every exit branch so that each layer receives the mean
            of the gradients of the exit losses at or above it (spec §7, `gradient_equilibrium.py`). Forward values
            are unchanged; it only acts when autograd is recording.
        layer_norm_eps (`float`, defaults to 1e-8):
            As in the released `fnlp/elasticbert-*` checkpoints (BERT uses 1e-12).
        classifier_dropout (`float`, *optional*):
            Dropout before each exit's classifier; `hidden_dropout_prob` when None.
        residual_in_fp32 (`bool`, defaults to `True`):
            Under autocast, keep the residual stream (embedding and LayerNorm outputs) in float32, as plain
            autocast does. `False` keeps it in the autocast dtype (bf16): LayerNorm still computes in float32
            but writes bf16, which halves the memory traffic of the element-wise work around every layer
            (Megatron-LM's default, `fp32_residual_connection=False`). No effect without autocast.
    """

    model_type = "elasticbert"
    # outputs that HF `Trainer` leaves out of `predictions` (it concatenates every output along dim 0, the batch
    # dim, but `exit_logits` is (E, B, C) and `exit_losses` (E,)): its predictions are `logits`, as for BERT
    keys_to_ignore_at_inference = ["exit_logits", "exit_losses"]

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_output_layers: int | None = None
    num_output_layers: int | None = None
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-8
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    gradient_equilibrium: bool = True
    residual_in_fp32: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.max_output_layers is None:
            self.max_output_layers = self.num_hidden_layers
        if self.num_output_layers is None:
            self.num_output_layers = self.num_hidden_layers
        # keys of the original config.json that this implementation does not use
        kwargs.pop("gradient_checkpointing", None)
        super().__post_init__(**kwargs)

    # ---- helpers -------------------------------------------------------------------------------------------
    @property
    def start_output_layer(self) -> int:
        """0-based index of the lowest layer that carries an exit."""
        return self.num_hidden_layers - self.num_output_layers

    @property
    def exit_layers(self) -> list[int]:
        """0-based indices of the layers that carry an exit (the top `num_output_layers` layers)."""
        return list(range(self.start_output_layer, self.num_hidden_layers))

    def check_layers(self) -> None:
        """Raise ValueError when the layer / exit / pooler-slot counts are inconsistent."""
        # (the @strict field types are not enforced for these: a "2" from a hand-edited config.json got as far as
        # a TypeError about '<=' between int and str)
        for name in (
            "num_hidden_layers",
            "num_output_layers",
            "max_output_layers",
            "hidden_size",
            "num_attention_heads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if self.num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers must be >= 1, got {self.num_hidden_layers}")
        if not 1 <= self.num_output_layers <= self.num_hidden_layers:
            raise ValueError(
                f"num_output_layers ({self.num_output_layers}) must be between 1 and "
                f"num_hidden_layers ({self.num_hidden_layers})"
            )
        if self.max_output_layers < self.num_hidden_layers:
            raise ValueError(
                f"max_output_layers ({self.max_output_layers}) must be >= num_hidden_layers "
                f"({self.num_hidden_layers}): there is one pooler slot per layer"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )


__all__ = ["ElasticBertConfig"]
