"""ElasticBERT in PyTorch, Hugging Face style (spec §7).

Parameter names follow the released `fnlp/elasticbert-*` checkpoints, so their state dicts load as they are:

    elasticbert.embeddings.{word,position,token_type}_embeddings.weight, elasticbert.embeddings.LayerNorm.*
    elasticbert.encoder.layer.<i>.attention.self.{query,key,value}.*       (BERT layer naming)
    elasticbert.encoder.layer.<i>.attention.output.{dense,LayerNorm}.*
    elasticbert.encoder.layer.<i>.{intermediate,output}.dense.*, .output.LayerNorm.*
    elasticbert.encoder.pooler.<slot>.dense.*       slot = absolute 0-based layer index, max_output_layers slots
    classifier.*                                    one exit (num_output_layers == 1, static use)
    classifiers.<j>.*                               several exits; j-th exit sits on layer start_output_layer + j

Classes:
    ElasticBertModel                       embeddings + encoder + per-layer poolers; `ElasticBertModelOutput`
    ElasticBertForSequenceClassification   one classifier per exit; `ElasticBertSequenceClassifierOutput`

Layer indices: 0-based in code (`exit_layers`, `layer_forward(i, ...)`); 1-based only in ELUE traces
(`layer_<i>`, `exit_<i>`) and in early-exit results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_elasticbert import ElasticBertConfig
from .gradient_equilibrium import GradientEquilibrium

logger = logging.get_logger(__name__)

# --------------------------------------------------------------------------------------------------------------
# outputs


@dataclass
class ElasticBertModelOutput(ModelOutput):
    """Output of `ElasticBertModel`.

    last_hidden_state: (B, S, H) output of the last layer.
    pooler_output: (B, H) pooled output of the deepest exit (None when the model has no pooling layer).
    exit_hidden_states: tuple, one (B, S, H) per computed exit (lowest layer first): the hidden states feeding
        that exit. Under gradient equilibrium these are the rescaled branch tensors: put exit losses on these.
    exit_pooled_outputs: tuple, one (B, H) per computed exit: the exit's pooler output (or the [CLS] hidden
        state without pooling layers).
    hidden_states: with `output_hidden_states`, (embeddings, layer 1, ..., layer L), each (B, S, H).
    attentions: with `output_attentions`, one (B, heads, S, S) per layer (computed by eager attention, whatever
        `attn_implementation`: SDPA gives no weights).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    exit_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    exit_pooled_outputs: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ElasticBertSequenceClassifierOutput(ModelOutput):
    """Output of `ElasticBertForSequenceClassification`.

    loss: with `labels`, the unweighted sum of the per-exit losses (by `config.problem_type`, as BERT: cross-entropy,
        MSE for regression, BCE-with-logits for multi-label classification).
    logits: (B, C) logits of the deepest exit (the only exit in static use), so HF tooling works unchanged.
    exit_logits: (E, B, C) logits of every computed exit, lowest layer first (E = number of exits).
    exit_losses: with `labels`, (E,) the per-exit losses.
    hidden_states, attentions: as in `ElasticBertModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    exit_logits: torch.FloatTensor | None = None
    exit_losses: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------
# modules


class ElasticBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (BERT)."""

    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(
            torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_length = inputs_embeds.shape[-2]
        if position_ids is None:
            limit = self.position_embeddings.num_embeddings
            if seq_length > limit:  # else a shape error between two tensors ("size 600 ... 512")
                raise ValueError(
                    f"the input has {seq_length} positions, more than the model's {limit} "
                    f"(max_position_embeddings): truncate it, e.g. tokenizer(..., truncation=True, "
                    f"max_length={limit})"
                )
            position_ids = self.position_ids[:, :seq_length]
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        if token_type_ids is None:
            # all-zero segment ids: add row 0 of the table without materialising an index tensor
            embeddings = embeddings + self.token_type_embeddings.weight[0]
        else:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QKᵀ·scaling + mask)·V; q, k, v (B, heads, S, d); mask additive, broadcastable to (B, h, S, S)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class ElasticBertSelfAttention(nn.Module):
    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.scaling = self.attention_head_size**-0.5
        self.is_causal = False  # read by the SDPA interface
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, self.num_attention_heads, self.attention_head_size)  # no -1: batch 0
        query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)
        attention_interface: Callable = (
            # eager: the only one that computes the weights (same outputs as the others), and the only one that
            # takes an empty batch (transformers' SDPA wrapper reshapes with -1)
            eager_attention_forward
            if kwargs.get("output_attentions") or query.numel() == 0
            else ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.dropout.p,
            scaling=self.scaling,
            is_causal=False,
        )
        return attn_output.reshape(*input_shape, self.all_head_size).contiguous(), attn_weights


class ElasticBertSelfOutput(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm; also the FFN's output block (`ElasticBertOutput`)."""

    def __init__(self, config: ElasticBertConfig, input_size: int | None = None):
        super().__init__()
        self.dense = nn.Linear(input_size or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        # autocast runs LayerNorm in fp32; the output keeps the residual stream's dtype (see residual_in_fp32)
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor).to(input_tensor.dtype)


class ElasticBertAttention(nn.Module):
    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.self = ElasticBertSelfAttention(config)
        self.output = ElasticBertSelfOutput(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, **kwargs)
        return self.output(attn_output, hidden_states), attn_weights


class ElasticBertIntermediate(nn.Module):
    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = (
            ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class ElasticBertOutput(ElasticBertSelfOutput):
    """The FFN's output block: the same computation from the intermediate size (BERT's parameter names)."""

    def __init__(self, config: ElasticBertConfig):
        super().__init__(config, input_size=config.intermediate_size)


class ElasticBertLayer(GradientCheckpointingLayer):
    """One transformer layer. `layer(h)` works on its own (mask optional): an ELUE `layer_<i>` module."""

    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.attention = ElasticBertAttention(config)
        self.intermediate = ElasticBertIntermediate(config)
        self.output = ElasticBertOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        layer_output, _ = self.forward_with_attentions(hidden_states, attention_mask, **kwargs)
        return layer_output

    def forward_with_attentions(self, hidden_states, attention_mask=None, **kwargs):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, **kwargs)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attn_weights


class ElasticBertPooler(nn.Module):
    """tanh(dense(h[:, 0])): the pooler of one layer."""

    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.pool_cls(hidden_states[:, 0])

    def pool_cls(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        """Pool an already selected [CLS] hidden state, (..., H) -> (..., H)."""
        return self.activation(self.dense(cls_hidden))


class ElasticBertEncoder(nn.Module):
    """The layers, plus `pooler`: a ModuleList of `max_output_layers` slots holding a pooler at each exit layer
    and None elsewhere (so a slot's parameter name is its absolute layer index, as in the original)."""

    def __init__(self, config: ElasticBertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([ElasticBertLayer(config) for _ in range(config.num_hidden_layers)])
        self.add_pooling_layer = add_pooling_layer
        if add_pooling_layer:
            exit_set = set(config.exit_layers)
            self.pooler = nn.ModuleList(
                [
                    ElasticBertPooler(config) if i in exit_set else None
                    for i in range(config.max_output_layers)
                ]
            )
        else:
            self.pooler = None


class ElasticBertExit(nn.Module):
    """An exit as one module for ELUE traces (`exit_<i>`): [CLS] hidden (B, H) -> pooler -> classifier -> (B, C).

    It shares the parameters of the model it comes from (no copy).
    """

    def __init__(self, pooler: ElasticBertPooler | None, classifier: nn.Linear):
        super().__init__()
        self.pooler = pooler
        self.classifier = classifier

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        pooled = self.pooler.pool_cls(cls_hidden) if self.pooler is not None else cls_hidden
        return self.classifier(pooled)


# --------------------------------------------------------------------------------------------------------------
# pre-trained model base


def _index_alternation(indices: Sequence[int]) -> str:
    return "|".join(str(i) for i in sorted(indices)) or "(?!)"


class ElasticBertPreTrainedModel(PreTrainedModel):
    """Weight init, config class and the `elasticbert` prefix shared by every ElasticBERT model."""

    # Every ElasticBERT loss is a mean over its batch (examples, or masked tokens), never normalised by a
    # `num_items_in_batch`: HF `Trainer` must divide it by the gradient-accumulation steps itself, which it skips
    # for a forward taking **kwargs unless told so (the steps were twice as large at 2 accumulation steps).
    accepts_loss_kwargs = False

    config_class = ElasticBertConfig
    config: ElasticBertConfig
    base_model_prefix = "elasticbert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _no_split_modules = ["ElasticBertEmbeddings", "ElasticBertLayer"]
    # pre-training heads of the released checkpoints (MLM `cls.predictions.*`, sentence-order `cls.*`): expected
    # to be left out when a pre-trained checkpoint is loaded into the bare or the classification model
    _keys_to_ignore_on_load_unexpected = [r"^cls\."]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; a BERT checkpoint whose weights are named `bert.*` (any `BertFor*`
        model) is refused: none of them would load, and the model would be random with only a load report to say
        so. (A bare `BertModel` checkpoint, `embeddings.*`/`encoder.*`, loads its encoder; the poolers start
        fresh.) Convert BERT checkpoints first (`convert_bert_to_elasticbert`, `elue convert`)."""
        model_type = _checkpoint_model_type(pretrained_model_name_or_path, kwargs)
        if model_type in (None, ElasticBertConfig.model_type):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        if any(k.endswith("embeddings.word_embeddings.weight") for k in info.get("missing_keys", ())):
            raise ValueError(
                f"{pretrained_model_name_or_path} is a {model_type!r} checkpoint whose weights ElasticBERT does not "
                "find (none of its encoder loaded): convert a BERT checkpoint first (`elue convert`, or "
                "elue.elasticbert.convert.convert_bert_to_elasticbert)"
            )
        return (model, info) if want_info else model

    def save_pretrained(self, *args, **kwargs):
        """As `PreTrainedModel.save_pretrained`; refused when the config's layer or exit count was changed after
        the model was built (its config.json would describe another model than its weights)."""
        base = getattr(self, self.base_model_prefix, self)
        if isinstance(base, ElasticBertModel):
            base.check_layout()
        return super().save_pretrained(*args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)  # normal(0, initializer_range) linears/embeddings, LayerNorm 1/0
        if isinstance(module, ElasticBertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def _ignore_checkpoint_keys_outside(self, config: ElasticBertConfig, pooler_slots: Sequence[int]) -> None:
        """Make `from_pretrained` quiet about checkpoint weights a smaller config leaves out on purpose: layers
        at or above `num_hidden_layers` and pooler slots without a pooler here (static k-layer use of a full
        checkpoint). Call before `post_init()`."""
        ignore = set(self._keys_to_ignore_on_load_unexpected or [])
        ignore.add(rf"encoder\.layer\.(?!(?:{_index_alternation(range(config.num_hidden_layers))})\.)\d+\.")
        ignore.add(rf"encoder\.pooler\.(?!(?:{_index_alternation(pooler_slots)})\.)\d+\.")
        self._keys_to_ignore_on_load_unexpected = ignore


def _checkpoint_model_type(path, kwargs) -> str | None:  # noqa: ANN001
    """The `model_type` in the checkpoint's config.json, or None (no config there, or none named)."""
    from transformers.configuration_utils import PreTrainedConfig

    if path is None or kwargs.get("gguf_file"):
        return None
    try:
        raw, _ = PreTrainedConfig.get_config_dict(path, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    except (OSError, ValueError):
        return None  # transformers reports what it lacks
    return raw.get("model_type") or None


def _keep_exits_below_depth(path, kwargs) -> None:  # noqa: ANN001
    """`from_pretrained(path, num_hidden_layers=k)` without `num_output_layers`: the checkpoint's exit count
    stays, so a checkpoint with exits on more than k layers (one on every layer, say) was refused as more exits
    than layers. Then keep the checkpoint's exits that remain below the cut (as `elue finetune --num-layers`),
    in `kwargs` (a given config is copied). Layouts that are valid as they are stay as asked."""
    config = kwargs.get("config")
    if config is None:
        if "num_output_layers" in kwargs:
            return
        depth = kwargs.get("num_hidden_layers")
    elif isinstance(config, ElasticBertConfig):
        depth = config.num_hidden_layers
    else:
        return
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        return  # nothing asked, or `check_layers` says what is wrong
    try:
        saved = ElasticBertConfig.from_pretrained(path, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    except (OSError, ValueError):
        return
    if saved.num_output_layers <= depth or depth == saved.num_hidden_layers:
        return
    if config is not None and config.num_output_layers != saved.num_output_layers:
        return  # chosen, not kept from the checkpoint
    exits = max(1, min(depth, depth - (saved.num_hidden_layers - saved.num_output_layers)))
    if config is None:
        kwargs["num_output_layers"] = exits
    else:
        kwargs["config"] = config = copy.deepcopy(config)
        config.num_output_layers = exits


def refuse_head_mask(kwargs) -> None:  # noqa: ANN001
    """transformers 5's BERT takes `head_mask` into its **kwargs and ignores it; here it is refused, so a caller
    masking heads does not get unmasked outputs without a word."""
    if kwargs.get("head_mask") is not None:
        raise ValueError(
            "head_mask is not supported by ElasticBERT (transformers 5's BERT ignores it); to silence a head, "
            "zero its rows of the layer's attention.self.value weight and bias (its output is then 0, as under "
            "a head_mask of 0)"
        )


# --------------------------------------------------------------------------------------------------------------
# the bare model


class ElasticBertModel(ElasticBertPreTrainedModel):
    """Embeddings, `num_hidden_layers` BERT layers, a pooler on each exit layer (the top `num_output_layers`).

    `forward` runs every layer and returns `ElasticBertModelOutput`; gradient equilibrium is applied at the exit
    branches when `config.gradient_equilibrium` and more than one exit is computed. The step-wise helpers
    `embed`, `attention_bias`, `layer_forward` and `pool` let callers run layer by layer (early exit).
    """

    def __init__(self, config: ElasticBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        config.check_layers()
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("ElasticBERT supports only position_embedding_type='absolute'")
        self.config = config
        self.add_pooling_layer = add_pooling_layer
        self.embeddings = ElasticBertEmbeddings(config)
        self.encoder = ElasticBertEncoder(config, add_pooling_layer=add_pooling_layer)
        self._ignore_checkpoint_keys_outside(config, config.exit_layers if add_pooling_layer else [])
        # the layout this model was built with: `config` may be changed afterwards (`check_layout`)
        self._built_layout = (config.num_hidden_layers, config.num_output_layers)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `ElasticBertPreTrainedModel.from_pretrained`; `num_hidden_layers=k` alone keeps the checkpoint's
        exits below layer k (see `_keep_exits_below_depth`)."""
        _keep_exits_below_depth(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ---- HF plumbing -------------------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @property
    def exit_layers(self) -> list[int]:
        """0-based indices of the layers with an exit."""
        self.check_layout()
        return self.config.exit_layers

    def check_layout(self) -> None:
        """ValueError when `config.num_hidden_layers` / `num_output_layers` are no longer those the model was
        built with: the modules are made once (as BERT's), and exits read by the changed config would take
        other layers' classifiers."""
        built = getattr(self, "_built_layout", None)  # None: a model pickled before it was recorded
        if built is None:
            return
        layers, exits = built
        for name, built in (("num_hidden_layers", layers), ("num_output_layers", exits)):
            now = getattr(self.config, name)
            if now != built:
                raise ValueError(
                    f"config.{name} is {now!r}, but this model was built with {built} ({layers} layers, exits "
                    f"on the top {exits}): layer and exit counts are read when a model is built. For another "
                    f"layout, load it again: from_pretrained(path, num_hidden_layers=..., num_output_layers=...)"
                )

    # ---- step-wise API ----------------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) ids -> (B, S, H) embedding output (in the autocast dtype when `residual_in_fp32` is off)."""
        hidden = self.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
        )
        device = hidden.device.type
        if not self.config.residual_in_fp32 and torch.is_autocast_enabled(device):
            # the layers' LayerNorms write their output in their input's dtype: the whole stream stays bf16
            hidden = hidden.to(torch.get_autocast_dtype(device))
        return hidden

    @staticmethod
    def attention_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """(B, S) 1/0 mask -> (B, 1, 1, S) additive bias (0 keep, dtype-min drop) for eager and SDPA; None stays
        None. Callers that know there is no padding should pass None (lets SDPA take its fastest path)."""
        if attention_mask is None:
            return None
        if attention_mask.dim() == 4:
            return attention_mask.to(dtype)
        keep = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - keep) * torch.finfo(dtype).min

    def layer_forward(self, layer: int, hidden_states: torch.Tensor, bias: torch.Tensor | None = None):
        """Run layer `layer` (0-based) on (B, S, H) with an additive bias from `attention_bias`."""
        return self.encoder.layer[layer](hidden_states, bias)

    def pool(self, layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """The exit representation of layer `layer` (0-based): its pooler on [CLS], or [CLS] without poolers."""
        return self.pool_cls(layer, hidden_states[:, 0])

    def pool_cls(self, layer: int, cls_hidden: torch.Tensor) -> torch.Tensor:
        """`pool` of an already selected [CLS] hidden state (B, H)."""
        if self.encoder.pooler is None:
            return cls_hidden
        pooler = self.encoder.pooler[layer]
        if pooler is None:
            raise ValueError(f"layer {layer} (0-based) has no pooler; exit layers are {self.exit_layers}")
        return pooler.pool_cls(cls_hidden)

    # ---- forward ----------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        exit_layers: Sequence[int] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        exit_rows: torch.Tensor | None = None,
        **kwargs,
    ) -> ElasticBertModelOutput | tuple:
        r"""
        exit_layers (`Sequence[int]`, *optional*):
            0-based layers whose exits to compute (a subset of `config.exit_layers`; e.g. one group of grouped
            pre-training). Default: every exit layer. Gradient equilibrium counts only these exits.
        exit_rows (`(R,)` long, *optional*):
            flat indices into B·S of the positions the exits' heads read (pre-training: the masked tokens). Then
            each `exit_hidden_states` entry is the (R, H) rows of its branch there instead of (B, S, H), the
            pooled outputs come from the [CLS] rows, and each exit's backward pass is one fused buffer
            (`GradientEquilibrium.split_rows`) instead of dense scatters and rescales.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        refuse_head_mask(kwargs)
        output_attentions = (
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        if output_attentions and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True: {self.config._attn_implementation} attention computes no attention "
                "weights, so this forward falls back to eager attention (same outputs, slower); load the model "
                "with attn_implementation='eager' to make that the default"
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        if exit_layers is None:
            exit_layers = self.exit_layers
        else:
            exit_layers = sorted(set(int(i) for i in exit_layers))
            bad = [i for i in exit_layers if i not in set(self.exit_layers)]
            if bad:
                raise ValueError(
                    f"exit_layers {bad} have no exit; exit layers are {self.exit_layers} (0-based)"
                )
            if not exit_layers:
                raise ValueError(f"exit_layers is empty: name at least one of {self.exit_layers} (0-based)")

        hidden = self.embed(input_ids, token_type_ids, position_ids, inputs_embeds)
        if (
            attention_mask is not None
            and attention_mask.dim() == 2
            and attention_mask.shape != hidden.shape[:2]
        ):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, the input {tuple(hidden.shape[:2])} "
                "(batch, sequence length)"
            )
        if (
            attention_mask is not None
            and attention_mask.dim() == 2
            # a data-dependent branch: it would break a compiled graph, and torch.jit.trace would bake in the
            # example's answer (traced on an unpadded batch, the traced model ignored every mask after)
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
            and bool(attention_mask.all())
        ):
            attention_mask = None  # no padding: no bias, SDPA's fast path
        bias = self.attention_bias(attention_mask, hidden.dtype)

        ge = GradientEquilibrium(exit_layers, enabled=bool(self.config.gradient_equilibrium))
        all_hidden = (hidden,) if output_hidden_states else None
        all_attn = () if output_attentions else None
        exit_hidden: list[torch.Tensor] = []
        exit_pooled: list[torch.Tensor] = []
        if exit_rows is not None:  # the [CLS] rows first, then the asked-for ones: one gather per exit
            batch, length = hidden.shape[:2]
            cls_rows = torch.arange(0, batch * length, length, device=hidden.device)
            rows = torch.cat([cls_rows, exit_rows.to(device=hidden.device, dtype=torch.long)])
        for i, layer_module in enumerate(self.encoder.layer):
            if output_attentions:
                hidden, attn = layer_module.forward_with_attentions(hidden, bias, output_attentions=True)
                all_attn = all_attn + (attn,)
            else:
                hidden = layer_module(hidden, bias)
            if ge.is_exit(i) and exit_rows is None:
                branch, hidden = ge.split(i, hidden)
                exit_hidden.append(branch)
                exit_pooled.append(self.pool(i, branch))
            elif ge.is_exit(i):
                picked, hidden = ge.split_rows(i, hidden, rows)  # (B + R, H): [CLS] rows, then exit_rows
                exit_hidden.append(picked[batch:])
                exit_pooled.append(self.pool_cls(i, picked[:batch]))
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)

        pooled = exit_pooled[-1] if (exit_pooled and self.add_pooling_layer) else None
        out = ElasticBertModelOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            exit_hidden_states=tuple(exit_hidden),
            exit_pooled_outputs=tuple(exit_pooled),
            hidden_states=all_hidden,
            attentions=all_attn,
        )
        return out if return_dict else out.to_tuple()


# --------------------------------------------------------------------------------------------------------------
# sequence classification

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


def _saved_exit_config(path, kwargs) -> tuple[ElasticBertConfig, int, int] | None:
    """(the checkpoint's config, this load's layers, this load's exits), or None when there is no config to
    number the checkpoint's exits by."""
    config = kwargs.get("config")
    if path is None or not (config is None or isinstance(config, ElasticBertConfig)):
        return None
    try:
        saved = ElasticBertConfig.from_pretrained(path, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    except OSError:
        return None
    if isinstance(config, ElasticBertConfig):
        return saved, config.num_hidden_layers, config.num_output_layers
    # built from the checkpoint's config and the size arguments
    layers = kwargs.get("num_hidden_layers") or saved.num_hidden_layers
    return saved, layers, kwargs.get("num_output_layers") or saved.num_output_layers


_HEADS = ("classifier.", "classifiers.")  # parameter prefixes of the exits' classifiers (static, multi-exit)


def _classifier_names(layers: int, exits: int) -> dict[int, str]:
    """0-based layer -> the parameter prefix of its exit's classifier, for a model of `layers` layers with exits
    on the top `exits`: `classifier` for one exit (static), `classifiers.<j>` counted from the first exit."""
    if exits == 1:
        return {layers - 1: "classifier"}
    return {layers - exits + j: f"classifiers.{j}" for j in range(exits)}


def _static_classifier_mapping(path, kwargs) -> dict[str, str] | None:
    """`key_mapping` that loads a multi-exit checkpoint's classifier of layer k into a static k-layer model's
    `classifier`, or None. Poolers need none (a slot is named by its absolute layer); classifiers are numbered
    from the checkpoint's first exit layer. None when the model is not static, the checkpoint has a single
    `classifier` (`_classifier_renumbering`), or its layer k has no exit (then the head is reported missing)."""
    found = _saved_exit_config(path, kwargs)
    if found is None or found[2] != 1 or found[0].num_output_layers == 1:
        return None
    saved, layers, _ = found
    j = layers - 1 - saved.start_output_layer
    return {rf"^classifiers\.{j}\.": "classifier."} if 0 <= j < saved.num_output_layers else None


def _classifier_renumbering(path, kwargs) -> dict[str, str | None] | None:
    """Each classifier of the model -> the checkpoint's classifier of the same layer (None: that layer has none
    there), when some are not under the same name: several exits loaded from a checkpoint whose exits start on
    another layer, a static checkpoint's `classifier` (layer k, its depth) loaded with several exits, or into a
    static model of another depth. None when the names agree. (A `key_mapping` cannot do it: transformers loads
    a checkpoint key under its own name again when the renamed one is not in the model, so a dropped classifier
    would land on the exit of its position.)"""
    found = _saved_exit_config(path, kwargs)
    if found is None:
        return None
    saved, layers, exits = found
    if exits == 1 and saved.num_output_layers != 1:
        return None  # `_static_classifier_mapping`, or layer k has no exit there (reported missing)
    theirs = _classifier_names(saved.num_hidden_layers, saved.num_output_layers)
    renumber = {name: theirs.get(layer) for layer, name in _classifier_names(layers, exits).items()}
    return None if all(name == old for name, old in renumber.items()) else renumber


def _checkpoint_classifiers(path, kwargs) -> dict[str, torch.Tensor]:
    """The checkpoint's `classifier.*` / `classifiers.*` tensors: model.safetensors (sharded or not) or
    pytorch_model.bin."""
    import json

    from transformers.utils import cached_file

    hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}

    def find(name):  # noqa: ANN001, ANN202
        return cached_file(path, name, _raise_exceptions_for_missing_entries=False, **hub)

    if index := find("model.safetensors.index.json"):
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
        files = {f for k, f in weight_map.items() if k.startswith(_HEADS)}
        paths = [find(f) for f in sorted(files)]
    elif single := find("model.safetensors"):
        paths = [single]
    elif bin_file := find("pytorch_model.bin"):
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        return {k: v for k, v in state.items() if k.startswith(_HEADS)}
    else:
        return {}
    from safetensors import safe_open

    out = {}
    for file in paths:
        with safe_open(file, framework="pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys() if k.startswith(_HEADS)})  # noqa: SIM118
    return out


def _renumber_classifiers(loaded, renumber: dict[str, str | None], tensors: dict[str, torch.Tensor]) -> None:
    """After a load by name: give each classifier the checkpoint's classifier `renumber[name]` (that of its own
    layer), or a fresh one (and correct the loading info, when asked for, to name what was really used and what
    is new: fresh heads missing, heads of another shape mismatched)."""
    model, info = (loaded[0], loaded[1]) if isinstance(loaded, tuple) else (loaded, None)
    names = _classifier_names(model.config.num_hidden_layers, model.config.num_output_layers)
    fresh, reshaped = [], []
    with torch.no_grad():
        for layer, name in names.items():
            clf = model.get_submodule(name)
            old = renumber.get(name)
            w, b = tensors.get(f"{old}.weight"), tensors.get(f"{old}.bias")
            if old is not None and w is not None and b is not None and w.shape == clf.weight.shape:
                clf.weight.copy_(w)
                clf.bias.copy_(b)
                continue
            # the load may have put another layer's classifier here and marked it initialised: draw it anew
            for param in clf.parameters():
                param._is_hf_initialized = False
            model._init_weights(clf)
            if w is not None:
                reshaped.append((layer, name, w.shape, clf.weight.shape))
            else:
                fresh.append((layer, name))
    if fresh:
        logger.warning(
            "the checkpoint has no classifier for the exit(s) on layer(s) %s: initialised fresh (train them)",
            ", ".join(str(layer + 1) for layer, _ in fresh),
        )
    if reshaped:
        logger.warning(
            "the checkpoint's classifier(s) of layer(s) %s have another shape (%s, this model %s): initialised "
            "fresh (train them)",
            ", ".join(str(layer + 1) for layer, *_ in reshaped),
            tuple(reshaped[0][2]),
            tuple(reshaped[0][3]),
        )
    if isinstance(info, dict):

        def is_classifier(key) -> bool:  # noqa: ANN001
            return (key if isinstance(key, str) else key[0]).startswith(_HEADS)

        # the checkpoint's other exits are left out on purpose, as a static model leaves them
        info["unexpected_keys"] = {k for k in info.get("unexpected_keys", ()) if not is_classifier(k)}
        info["missing_keys"] = {k for k in info.get("missing_keys", ()) if not is_classifier(k)} | {
            f"{name}.{w}" for _, name in fresh for w in ("weight", "bias")
        }
        info["mismatched_keys"] = {k for k in info.get("mismatched_keys", ()) if not is_classifier(k)} | {
            (f"{name}.weight", old, new) for _, name, old, new in reshaped
        }


# set while `from_pretrained` loads classifiers by position that `_renumber_classifiers` then replaces by layer
_RENUMBERING: ContextVar[bool] = ContextVar("elasticbert_renumbering", default=False)


def forget_key_mapping(loaded, mapping: dict[str, str]):  # noqa: ANN001, ANN201
    """transformers keeps a `key_mapping` it used and undoes it on `save_pretrained`; a model whose own names are
    the mapped ones (a static `classifier`, a masked LM's one head) must save under them, or its next load would
    miss the head. `loaded`: what `from_pretrained` returned (the model, or a tuple starting with it)."""
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model._weight_conversions = [
        c for c in getattr(model, "_weight_conversions", []) if not set(c.source_patterns) <= set(mapping)
    ]
    return loaded


class ElasticBertForSequenceClassification(ElasticBertPreTrainedModel):
    """ElasticBERT with a classifier (or regressor, num_labels == 1) on each exit.

    One exit (`num_output_layers == 1`, static use): parameter `classifier`, the pooler of the last layer.
    Several exits: `classifiers[j]` for exit j on layer `start_output_layer + j`; training loss is the unweighted
    sum of exit losses, under gradient equilibrium (config.gradient_equilibrium).
    """

    def __init__(self, config: ElasticBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        config.check_layers()
        self.num_labels = config.num_labels
        self.config = config
        self.elasticbert = ElasticBertModel(config, add_pooling_layer=add_pooling_layer)
        dropout = (
            config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(dropout)
        if config.num_output_layers == 1:
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
            # a multi-exit checkpoint's other exits are left out on purpose, like its unused pooler slots (the one
            # on this model's exit layer is loaded as `classifier`, see `from_pretrained`)
            self._keys_to_ignore_on_load_unexpected = {
                *self._keys_to_ignore_on_load_unexpected,
                r"^classifiers\.",
            }
        else:
            self.classifiers = nn.ModuleList(
                [nn.Linear(config.hidden_size, config.num_labels) for _ in range(config.num_output_layers)]
            )

        self.post_init()

    @property
    def exit_layers(self) -> list[int]:
        """0-based indices of the layers with an exit."""
        return self.elasticbert.exit_layers

    @property
    def is_regression(self) -> bool:
        return self.config.num_labels == 1 or self.config.problem_type == "regression"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; each exit takes the checkpoint's classifier of its own layer, as
        it takes that layer's pooler: a static k-layer model (`num_output_layers=1`) loaded from a checkpoint with
        several exits gets the classifier of layer k (`classifiers.<j>` -> `classifier`); a model with several
        exits loaded from a static k-layer checkpoint gets its `classifier` on the exit of layer k; a model with
        fewer or more exits than the checkpoint gets them renumbered (`_classifier_renumbering`). An exit whose
        layer has no classifier in the checkpoint starts fresh and is reported missing."""
        _keep_exits_below_depth(pretrained_model_name_or_path, kwargs)
        mapping = renumber = None
        if "key_mapping" not in kwargs:
            mapping = _static_classifier_mapping(pretrained_model_name_or_path, kwargs)
            if mapping:
                kwargs["key_mapping"] = mapping
            else:
                renumber = _classifier_renumbering(pretrained_model_name_or_path, kwargs)
        token = _RENUMBERING.set(bool(renumber))
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        finally:
            _RENUMBERING.reset(token)
        if renumber:
            used = any(renumber.values())  # else nothing to read: every exit starts fresh
            tensors = _checkpoint_classifiers(pretrained_model_name_or_path, kwargs) if used else {}
            _renumber_classifiers(loaded, renumber, tensors)
        return forget_key_mapping(loaded, mapping) if mapping else loaded

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        super()._adjust_missing_and_unexpected_keys(loading_info)
        if _RENUMBERING.get():
            # transformers matched classifiers by position, so its load report named the wrong ones missing or
            # unexpected; `_renumber_classifiers` loads them by layer and names the fresh ones itself
            loading_info.missing_keys = {k for k in loading_info.missing_keys if not k.startswith(_HEADS)}
            loading_info.unexpected_keys = {
                k for k in loading_info.unexpected_keys if not k.startswith(_HEADS)
            }
            loading_info.mismatched_keys = {
                k for k in loading_info.mismatched_keys if not k[0].startswith(_HEADS)
            }

    def exit_classifier(self, layer: int) -> nn.Linear:
        """The classifier of the exit on layer `layer` (0-based)."""
        if layer not in set(self.exit_layers):
            raise ValueError(f"layer {layer} (0-based) has no exit; exit layers are {self.exit_layers}")
        if self.config.num_output_layers == 1:
            return self.classifier
        return self.classifiers[layer - self.config.start_output_layer]

    def exit_logits(self, layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of the exit on layer `layer` (0-based) from that layer's output (B, S, H)."""
        return self.exit_classifier(layer)(self.dropout(self.elasticbert.pool(layer, hidden_states)))

    def exit_module(self, layer: int) -> ElasticBertExit:
        """The exit on layer `layer` (0-based) as one module, [CLS] hidden (B, H) -> logits (B, C)."""
        pooler = (
            self.elasticbert.encoder.pooler[layer] if self.elasticbert.encoder.pooler is not None else None
        )
        return ElasticBertExit(pooler, self.exit_classifier(layer))

    def elue_modules(self) -> dict[str, nn.Module]:
        """ELUE `module_list` view: `emb`, `layer_<i>` (1..L), `exit_<i>` for each exit layer (1-based names).

        Inputs per call: emb (n,) token ids; layer_i (n, H) hidden states; exit_i (H,) the [CLS] hidden state.
        """
        modules: dict[str, nn.Module] = {"emb": self.elasticbert.embeddings}
        for i, layer in enumerate(self.elasticbert.encoder.layer):
            modules[f"layer_{i + 1}"] = layer
        for i in self.exit_layers:
            modules[f"exit_{i + 1}"] = self.exit_module(i)
        return modules

    def resolve_problem_type(self, labels: torch.Tensor) -> str:
        """`config.problem_type`, set from the labels when None, as `BertForSequenceClassification` does:
        regression for num_labels == 1, single-label classification for integer labels, multi-label
        classification (BCE) for float labels with num_labels > 1."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif not (labels.is_floating_point() or labels.is_complex()):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        return self.config.problem_type

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One exit's loss, by `config.problem_type` (see `resolve_problem_type`): MSE for regression,
        cross-entropy for single-label classification (integer labels of any dtype), BCE-with-logits for
        multi-label classification ((B, C) float 0/1 targets)."""
        problem = self.resolve_problem_type(labels)
        if problem == "regression":
            return MSELoss()(logits.view(-1), labels.reshape(-1).to(logits.dtype))
        if problem == "multi_label_classification":
            return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1).long())

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        exit_layers: Sequence[int] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ElasticBertSequenceClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            Class ids (cross-entropy); float targets when num_labels == 1 (regression, MSE); (B, C) float 0/1
            targets for multi-label classification (BCE). `config.problem_type`, when None, is set from the
            first labels seen, as in `BertForSequenceClassification`.
        exit_layers (`Sequence[int]`, *optional*):
            0-based exit layers to compute (default: all exits); the loss sums over these.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        refuse_head_mask(kwargs)
        outputs = self.elasticbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            exit_layers=exit_layers,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        layers = self.exit_layers if exit_layers is None else sorted(set(int(i) for i in exit_layers))
        per_exit = [
            self.exit_classifier(layer)(self.dropout(pooled))
            for layer, pooled in zip(layers, outputs.exit_pooled_outputs, strict=True)
        ]
        exit_logits = torch.stack(per_exit)
        loss = exit_losses = None
        if labels is not None:
            exit_losses = torch.stack([self.compute_loss(lg, labels) for lg in per_exit])
            loss = exit_losses.sum()
        out = ElasticBertSequenceClassifierOutput(
            loss=loss,
            logits=per_exit[-1],
            exit_logits=exit_logits,
            exit_losses=exit_losses,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict else out.to_tuple()


__all__ = [
    "ElasticBertExit",
    "ElasticBertForSequenceClassification",
    "ElasticBertModel",
    "ElasticBertModelOutput",
    "ElasticBertPreTrainedModel",
    "ElasticBertSequenceClassifierOutput",
]
