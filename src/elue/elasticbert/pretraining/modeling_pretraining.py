"""ElasticBERT pre-training heads: `ElasticBertForPreTraining` (an MLM head and an SOP head at every exit) and
`ElasticBertForMaskedLM` (one MLM head, BERT naming, loads a pre-training checkpoint's head).

Loss (spec §7): L = Σ_l (MLM_l + SOP_l) over the active exits l (all of them, or one group of grouped
training), with gradient equilibrium at the exit branches (done by `ElasticBertModel`, which counts only the
active exits, so each layer receives the mean of the gradients of the active losses above it).

Head sharing (our decision; the original is silent): **no sharing across exits**. Each exit layer i has
    its own pooler               elasticbert.encoder.pooler.<i>.dense.*     (ElasticBERT's per-layer pooler)
    its own SOP classifier       cls.seq_relationship.<i>.*                 Linear(H, 2)
    its own MLM transform + bias cls.predictions.<i>.transform.{dense,LayerNorm}.*, cls.predictions.<i>.bias
and every exit's MLM decoder is the word-embedding matrix (tied, as in BERT). Why: the hidden states of
different depths have different statistics; a shared transform would have to compromise between them, and the
exits a fine-tuned ElasticBERT uses are per layer anyway (pooler per layer). The cost is small: H² + 2H + V
parameters per exit for MLM (≈0.62M at base size) and 2H + 2 for SOP.

`ElasticBertForMaskedLM` carries one head named as in `BertForMaskedLM` (`cls.predictions.transform.*`,
`cls.predictions.bias`); its `from_pretrained` maps the pre-training head of its top layer
(`cls.predictions.<num_hidden_layers - 1>.`) onto it, so a k-layer masked LM gets layer k's head.

MLM logits are computed only at the masked positions (a 15 % gather before the V-wide decoder): with 12 exits
the decoder would otherwise dominate the cost. They are computed one exit at a time with their gradients in the
forward pass (`linear_cross_entropy`), so the (E, M, V) logits of all exits are never in memory together.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from ..configuration_elasticbert import ElasticBertConfig
from ..modeling_elasticbert import (
    _HUB_KWARGS,
    ElasticBertModel,
    ElasticBertPreTrainedModel,
    forget_key_mapping,
    refuse_head_mask,
)
from . import triton_cross_entropy
from .config import CHECKPOINT_SIZES, CHOICES
from .dropout_masks import use_keep_mask_dropout
from .linear_cross_entropy import (
    linear_cross_entropy,
    softmax_cross_entropy_grad,
    softmax_cross_entropy_grad_fusable,
)

#: Who draws the hidden dropout masks under `compile_regions` (the `dropout_masks` setting's values)
DROPOUT_MASKS = CHOICES["dropout_masks"]
#: How one exit's MLM loss step is computed (`xent_step`): "auto" takes the Triton kernel where it runs (CUDA
#: with Triton installed), else torch ("compiled" under `compile_regions`, "eager" otherwise).
XENT_STEPS = ("auto", "triton", "compiled", "eager")


def xent_step(kind: str = "auto", compiled=None):
    """The MLM loss step for `LinearCrossEntropy`, `kind` one of XENT_STEPS. `compiled` is the torch.compile'd
    `softmax_cross_entropy_grad_fusable` ("compiled"; "auto" falls back to it, else to the eager torch step, where
    the Triton kernel cannot run, decided per call by the logits' device)."""
    if kind not in XENT_STEPS:
        raise ValueError(f"unknown xent step {kind!r}; choose one of {', '.join(XENT_STEPS)}")
    if kind == "compiled" and compiled is None:
        raise ValueError("xent step 'compiled' needs the compiled step (compile_regions makes it)")
    if kind == "triton":
        return triton_cross_entropy.softmax_cross_entropy_grad_triton
    if kind == "compiled":
        return compiled
    if kind == "eager":
        return softmax_cross_entropy_grad
    torch_step = compiled or softmax_cross_entropy_grad

    def step(logits, bias, targets, **kw):
        if triton_cross_entropy.available(logits.device):
            return triton_cross_entropy.softmax_cross_entropy_grad_triton(logits, bias, targets, **kw)
        return torch_step(logits, bias, targets, **kw)

    return step


def mlm_loss_engine(device: torch.device, n_exits: int, m: int, vocab: int, dtype: torch.dtype) -> dict:
    """LinearCrossEntropy's options by default: on CUDA the fastest measured on an H200 (docs/pretraining.md):
    the bias added in the logits GEMM, the (E, M, V) logit gradients kept for the backward pass when they take
    at most 1/16 of the GPU's memory (7.2 GB at 12 exits x 15 % of 128 x 512 tokens), and then the bias
    gradients taken from the backward weight GEMM. Elsewhere (CPU) none: the plain formulation."""
    if device.type != "cuda":
        return {}
    size = n_exits * m * vocab * dtype.itemsize
    keep = size <= torch.cuda.get_device_properties(device).total_memory / 16
    return {"bias_in_gemm": True, "keep_logit_grads": True if keep else None, "bias_grad_in_gemm": keep}


def find_mlm_positions(labels: torch.Tensor) -> torch.Tensor:
    """(M,) flat indices into (B, S) of the positions to predict (labels != -100). On a GPU tensor this makes the
    host wait for the GPU; the collator calls it on the CPU and passes the result as `mlm_positions=`."""
    return (labels.reshape(-1) != -100).nonzero().squeeze(1)


@dataclass
class ElasticBertForPreTrainingOutput(ModelOutput):
    """loss: Σ over active exits of (mean MLM loss + sop_weight · mean SOP loss) of this batch.
    exit_layers: the active exits, 0-based, lowest first.
    mlm_loss_sums, sop_loss_sums: (E,) summed (not averaged) per-exit losses, so that a trainer can divide by a
        token count taken over processes and accumulation steps.
    mlm_correct, sop_correct: (E,) numbers of correct predictions.
    num_masked, num_sop: the counts that turn the sums into means.
    hidden_states, attentions: with `output_hidden_states` / `output_attentions`, as in `ElasticBertModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    exit_layers: tuple[int, ...] | None = None
    mlm_loss_sums: torch.FloatTensor | None = None
    sop_loss_sums: torch.FloatTensor | None = None
    mlm_correct: torch.Tensor | None = None
    sop_correct: torch.Tensor | None = None
    num_masked: torch.Tensor | None = None
    num_sop: torch.Tensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ElasticBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = (
            ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class ElasticBertLMPredictionHead(nn.Module):
    """transform -> logits over the vocabulary with the (tied) word-embedding matrix + own bias."""

    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        self.transform = ElasticBertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden_states), decoder_weight, self.bias)


class ElasticBertPreTrainingHeads(nn.Module):
    """`predictions[i]` and `seq_relationship[i]` for every layer i (0-based) that carries an exit."""

    def __init__(self, config: ElasticBertConfig):
        super().__init__()
        exits = set(config.exit_layers)
        n = config.num_hidden_layers
        self.predictions = nn.ModuleList(
            [ElasticBertLMPredictionHead(config) if i in exits else None for i in range(n)]
        )
        self.seq_relationship = nn.ModuleList(
            [nn.Linear(config.hidden_size, 2) if i in exits else None for i in range(n)]
        )


class _HeadInit(ElasticBertPreTrainedModel):
    """What the pre-training and masked-LM models share: head initialisation, the tied input embeddings."""

    def get_input_embeddings(self):
        return self.elasticbert.embeddings.word_embeddings

    def _resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True):
        """The decoder is the word-embedding matrix itself, so transformers resizes it with the embeddings; the
        heads' vocabulary biases are resized here (kept rows as they were; new ones the old biases' mean with
        `mean_resizing`, as transformers sets a resized LM head's bias, else 0), or the forward fails."""
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        size = embeddings.weight.shape[0]
        predictions = self.cls.predictions
        heads = predictions if isinstance(predictions, nn.ModuleList) else [predictions]
        with torch.no_grad():
            for head in heads:
                if head is None or head.bias.shape[0] == size:
                    continue
                old = head.bias
                fill = old.float().mean() if mean_resizing and len(old) else 0.0
                new = torch.full((size,), fill, dtype=old.dtype, device=old.device)
                keep = min(size, len(old))
                new[:keep] = old[:keep]
                head.bias = nn.Parameter(new, requires_grad=old.requires_grad)
        return embeddings

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ElasticBertLMPredictionHead):
            init.zeros_(module.bias)


class ElasticBertForPreTraining(_HeadInit):
    """ElasticBERT with an MLM head and an SOP head at each exit (see the module docstring)."""

    _keys_to_ignore_on_load_unexpected = [r"^classifiers?\."]

    def __init__(self, config: ElasticBertConfig):
        super().__init__(config)
        config.check_layers()
        self.elasticbert = ElasticBertModel(config, add_pooling_layer=True)
        self.cls = ElasticBertPreTrainingHeads(config)
        self.sop_weight = 1.0
        # the MLM loss step: Triton on CUDA; compile_regions may put a compiled torch fallback here
        self._xent_step = xent_step("auto")
        # the encoder hands the heads only the masked rows of each exit (ElasticBertModel's `exit_rows`); False:
        # full (B, S, H) exit states, gathered here (the earlier way, kept for the benchmark's comparison)
        self.gather_exit_rows = True
        # LinearCrossEntropy's engine options (same numbers, other kernels); None: `mlm_loss_engine`'s by device
        self.mlm_loss_options: dict | None = None
        self.post_init()

    @property
    def exit_layers(self) -> list[int]:
        return self.config.exit_layers

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        sop_labels: torch.Tensor | None = None,
        exit_layers: Sequence[int] | None = None,
        mlm_positions: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ElasticBertForPreTrainingOutput | tuple:
        r"""
        labels (`(B, S)`): token ids to predict, -100 elsewhere. sop_labels (`(B,)`): 1 = segments swapped.
        exit_layers: 0-based active exits (one group of grouped training); default all.
        mlm_positions (`(M,)`): the flat indices (into B·S) where `labels` != -100, as the collator found them on
            the CPU; without them the model finds them itself, which makes the host wait for the GPU once a step.
        position_ids, inputs_embeds, output_attentions, output_hidden_states, return_dict: as in BERT. Any other
        keyword is refused (TypeError), e.g. BERT's `next_sentence_label`: it was ignored without a word.
        """
        refuse_head_mask(kwargs)
        unknown = sorted(k for k in kwargs if k != "head_mask")
        if unknown:
            hint = (
                " (the sentence-order labels are `sop_labels`, 1 = segments swapped)"
                if "next_sentence_label" in unknown
                else ""
            )
            raise TypeError(
                f"ElasticBertForPreTraining.forward() got unexpected keyword argument(s) {', '.join(unknown)}{hint}"
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        layers = self.exit_layers if exit_layers is None else sorted({int(i) for i in exit_layers})
        picked = None
        if labels is not None:
            # the masked positions, found once (at most one host sync per step, not one per exit)
            picked = mlm_positions if mlm_positions is not None else find_mlm_positions(labels)
        out = self.elasticbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            exit_layers=layers,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            exit_rows=picked if self.gather_exit_rows else None,  # exit states at the masked rows: (M, H)
        )
        result = ElasticBertForPreTrainingOutput(
            exit_layers=tuple(layers), hidden_states=out.hidden_states, attentions=out.attentions
        )
        loss = None
        if labels is not None:
            targets = labels.reshape(-1).index_select(0, picked)
            hiddens = out.exit_hidden_states
            if not self.gather_exit_rows:
                hiddens = [h.reshape(-1, h.shape[-1]).index_select(0, picked) for h in hiddens]
            result.mlm_loss_sums, result.mlm_correct = self._mlm(layers, hiddens, targets)
            # counts made on the device (torch.full), not copied to it: a copy from the host would wait for the GPU
            result.num_masked = torch.full((), picked.numel(), device=labels.device)
            loss = result.mlm_loss_sums.sum() / max(picked.numel(), 1)
        if sop_labels is not None:
            result.sop_loss_sums, result.sop_correct = self._sop(layers, out.exit_pooled_outputs, sop_labels)
            result.num_sop = torch.full((), sop_labels.numel(), device=sop_labels.device)
            sop = self.sop_weight * result.sop_loss_sums.sum() / max(sop_labels.numel(), 1)
            loss = sop if loss is None else loss + sop
        result.loss = loss
        if return_dict:
            return result
        # the fields in their declared order (loss first, as BERT's tuple), not in the order they were set
        return tuple(v for v in (getattr(result, f.name) for f in fields(result)) if v is not None)

    # The heads of all active exits run as one batched computation (their weights stacked per step): a few
    # large kernels instead of a dozen small ones per exit, so that on a GPU the heads do not leave it waiting
    # for kernel launches. Same numbers as running each exit's modules in turn (tested).
    def _mlm_transform(self, layers, picked_hiddens) -> torch.Tensor:
        """(E, M, H): every active exit's MLM transform (dense, activation, LayerNorm) of its (M, H) hidden
        states at the masked positions."""
        heads = [self.cls.predictions[i] for i in layers]
        t0 = heads[0].transform
        size = picked_hiddens[0].shape[-1]
        x = torch.stack(list(picked_hiddens))  # (E, M, H)
        w = torch.stack([p.transform.dense.weight for p in heads])  # (E, H, H)
        b = torch.stack([p.transform.dense.bias for p in heads])  # (E, H)
        x = t0.transform_act_fn(torch.baddbmm(b[:, None, :], x, w.transpose(1, 2)))
        ln_w = torch.stack([p.transform.LayerNorm.weight for p in heads])[:, None, :]
        ln_b = torch.stack([p.transform.LayerNorm.bias for p in heads])[:, None, :]
        return F.layer_norm(x, (size,), eps=t0.LayerNorm.eps) * ln_w + ln_b

    def _mlm(self, layers, picked_hiddens, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """(E,) summed MLM losses and (E,) correct counts of the exits `layers` from their (M, H) hidden states
        at the masked positions."""
        x = self._mlm_transform(layers, picked_hiddens)  # (E, M, H)
        decoder = self.elasticbert.embeddings.word_embeddings.weight  # tied, (V, H)
        bias = torch.stack([self.cls.predictions[i].bias for i in layers]).float()  # (E, V)
        # Pad the vocabulary to a multiple of 64 (zero decoder rows, -inf bias: probability 0, gradient 0). With
        # V = 30,522 the logits' rows are not 16-byte aligned and cuBLAS falls back to slower pre-Hopper GEMMs;
        # this GEMM is the largest of the step (12 exits x 15 % of the tokens x V).
        pad = -decoder.shape[0] % 64
        if pad:
            decoder = F.pad(decoder, (0, 0, 0, pad))
            bias = F.pad(bias, (0, pad), value=float("-inf"))
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        # one exit at a time, gradients in the forward pass: no (E, M, V) logits in memory (linear_cross_entropy)
        options = self.mlm_loss_options
        if options is None:
            options = mlm_loss_engine(x.device, len(layers), len(targets), decoder.shape[0], dtype)
        return linear_cross_entropy(x.to(dtype), decoder.to(dtype), bias, targets, self._xent_step, **options)

    def _sop(self, layers, pooled, sop_labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(E,) summed SOP losses and (E,) correct counts of the exits `layers`."""
        heads = [self.cls.seq_relationship[i] for i in layers]
        x = torch.stack(list(pooled))  # (E, B, H)
        w = torch.stack([h.weight for h in heads])  # (E, 2, H)
        b = torch.stack([h.bias for h in heads])[:, None, :]  # (E, 1, 2)
        logits = torch.baddbmm(b, x, w.transpose(1, 2)).float()  # (E, B, 2)
        e, n, _ = logits.shape
        losses = F.cross_entropy(logits.reshape(e * n, 2), sop_labels.repeat(e), reduction="none")
        return losses.view(e, n).sum(1), (logits.argmax(-1) == sop_labels).sum(1)

    def head_parameters(self, layer: int) -> dict[str, nn.Parameter]:
        """The parameters that belong to the exit on `layer` (0-based) alone: pooler, SOP, MLM transform+bias."""
        named = dict(self.named_parameters())
        prefixes = (
            f"elasticbert.encoder.pooler.{layer}.",
            f"cls.predictions.{layer}.",
            f"cls.seq_relationship.{layer}.",
        )
        return {k: v for k, v in named.items() if k.startswith(prefixes)}


def _check_exit_layer(exit_layer: object, num_layers: int) -> None:
    """A head that does not exist would be initialised at random, with only a load report to say so."""
    if not (
        isinstance(exit_layer, int) and not isinstance(exit_layer, bool) and 1 <= exit_layer <= num_layers
    ):
        raise ValueError(f"exit_layer must be in 1..{num_layers}, got {exit_layer!r}")


def _depth_conflict(exit_layer: int, layers: int) -> ValueError:
    """Head k on layer n's states, which it never saw in training: refused."""
    return ValueError(
        f"exit_layer {exit_layer} is the head of layer {exit_layer}, num_hidden_layers {layers}: "
        "give one of them (the masked LM of an exit runs the layers up to it)"
    )


def _masked_lm_config(
    path, config: ElasticBertConfig, exit_layer: int | None, hub: dict
) -> ElasticBertConfig:
    """A given config made fit for the masked LM, the rules of `from_pretrained` without one: `AutoModelForMaskedLM`
    always passes one, the checkpoint's with the size arguments set, so `num_hidden_layers=k` kept the
    checkpoint's exit count (refused as more exits than layers) and `exit_layer=k` kept its depth (head k ran on
    the top layer's states). A copy when changed. `hub`: where the checkpoint's config is (subfolder, revision...)."""
    if exit_layer is not None and config.num_hidden_layers != exit_layer:
        if config.num_hidden_layers != ElasticBertConfig.from_pretrained(path, **hub).num_hidden_layers:
            raise _depth_conflict(exit_layer, config.num_hidden_layers)
        _check_exit_layer(exit_layer, config.num_hidden_layers)
        config = copy.deepcopy(config)
        config.num_hidden_layers = exit_layer  # the checkpoint's depth: not chosen, the exit's is meant
    if config.num_output_layers > config.num_hidden_layers:
        config = copy.deepcopy(config)
        config.num_output_layers = 1  # one head, on the top layer
    return config


class ElasticBertForMaskedLM(_HeadInit):
    """ElasticBERT (`num_hidden_layers` layers) with one MLM head on its top layer, BERT naming
    (`cls.predictions.transform.*`, `cls.predictions.bias`; decoder tied to the word embeddings).

    `from_pretrained(path)` on an `ElasticBertForPreTraining` checkpoint loads the head of layer
    `num_hidden_layers` (so `from_pretrained(path, num_hidden_layers=6)` is a 6-layer masked LM with the head
    pre-trained at layer 6); `exit_layer=k` (1-based) is the same as `num_hidden_layers=k`: the masked LM of
    exit k, its k layers under its head (a head is trained on its own layer's states only).
    """

    _keys_to_ignore_on_load_unexpected = [
        r"^cls\.predictions\.\d+\.",
        r"^cls\.seq_relationship\.",
        r"^classifiers?\.",
        r"encoder\.pooler\.",
        r"^cls\.predictions\.decoder\.",  # BERT checkpoints: the decoder is the (tied) embedding matrix
    ]

    def __init__(self, config: ElasticBertConfig):
        super().__init__(config)
        self.elasticbert = ElasticBertModel(config, add_pooling_layer=False)
        self.cls = nn.Module()
        self.cls.predictions = ElasticBertLMPredictionHead(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, exit_layer: int | None = None, **kwargs):
        config = kwargs.pop("config", None)
        # the checkpoint's own config, where transformers finds its weights (a subfolder, a revision...)
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        if config is None:
            sizes = {k: kwargs.pop(k) for k in ("num_hidden_layers", "num_output_layers") if k in kwargs}
            if exit_layer is not None:  # the checkpoint's layers: the heads there are
                _check_exit_layer(
                    exit_layer,
                    ElasticBertConfig.from_pretrained(pretrained_model_name_or_path, **hub).num_hidden_layers,
                )
                layers = sizes.setdefault("num_hidden_layers", exit_layer)
                if layers != exit_layer:  # head k on layer n's states, which it never saw in training
                    raise _depth_conflict(exit_layer, layers)
            config = ElasticBertConfig.from_pretrained(pretrained_model_name_or_path, **sizes, **hub)
            if "num_output_layers" not in sizes:
                config.num_output_layers = 1  # one head, on the top layer
        else:
            config = _masked_lm_config(pretrained_model_name_or_path, config, exit_layer, hub)
        kwargs["config"] = config
        if exit_layer is not None:
            _check_exit_layer(exit_layer, config.num_hidden_layers)
        if "key_mapping" in kwargs:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        layer = (exit_layer or config.num_hidden_layers) - 1
        mapping = kwargs["key_mapping"] = {rf"^cls\.predictions\.{layer}\.": "cls.predictions."}
        return forget_key_mapping(
            super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs), mapping
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """As `BertForMaskedLM.forward`: `MaskedLMOutput` (loss, logits, hidden_states, attentions), or its
        tuple with `return_dict=False`."""
        from transformers.modeling_outputs import MaskedLMOutput

        refuse_head_mask(kwargs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        top = self.config.num_hidden_layers - 1
        out = self.elasticbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            exit_layers=[top] if top in self.elasticbert.exit_layers else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.cls.predictions(
            out.last_hidden_state, self.elasticbert.embeddings.word_embeddings.weight
        )
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1))
        result = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return result if return_dict else result.to_tuple()


# --------------------------------------------------------------------------------------------------------------
# starting from a BERT checkpoint


def bert_state_dict_to_pretraining(
    state: dict[str, torch.Tensor], num_layers: int
) -> dict[str, torch.Tensor]:
    """Rename a BERT state dict (`bert.*` or bare `embeddings.*`/`encoder.*`, `cls.predictions.*`) to
    `ElasticBertForPreTraining`: encoder as is under `elasticbert.`, BERT's pooler to the top layer's pooler,
    BERT's MLM head (if any) copied to every exit. Other exits' poolers and heads are left to initialise."""
    out: dict[str, torch.Tensor] = {}
    top = num_layers - 1
    for key, value in state.items():
        k = key[len("bert.") :] if key.startswith("bert.") else key
        if k.startswith("pooler.dense."):
            out[f"elasticbert.encoder.pooler.{top}.{k[len('pooler.') :]}"] = value
        elif k.startswith(("embeddings.", "encoder.layer.")):
            if k.endswith("position_ids"):
                continue
            out[f"elasticbert.{k}"] = value
        elif k.startswith("cls.predictions.") and not k.startswith("cls.predictions.decoder."):
            rest = k[len("cls.predictions.") :]
            for layer in range(num_layers):
                out[f"cls.predictions.{layer}.{rest}"] = value.clone()
    return out


def raise_recompile_limit(limit: int = 256) -> None:
    """Layer instances compiled one by one guard separately on one code object: dynamo's default recompile
    limit (8) would silently send the layers after the 8th back to eager."""
    import torch._dynamo as dynamo

    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, max(getattr(dynamo.config, name), limit))


def resolve_dropout_masks(choice: str, device: torch.device | str) -> str:
    """The `dropout_masks` setting for a compiled step on `device`: "auto" is "aten" on CUDA (measured faster on
    an H200, docs/pretraining.md) and "inductor" elsewhere (on the CPU inductor's random numbers are not the
    bottleneck, and its fused kernels keep the masks out of memory)."""
    if choice not in DROPOUT_MASKS:
        raise ValueError(f"dropout_masks {choice!r}: one of {', '.join(DROPOUT_MASKS)}")
    if choice == "auto":
        return "aten" if torch.device(device).type == "cuda" else "inductor"
    return choice


def compile_regions(
    model: ElasticBertForPreTraining,
    backend: str = "inductor",
    mode: str | None = None,
    embeddings: bool = True,
    xent: str = "auto",
    dropout_masks: str = "auto",
    device: torch.device | str | None = None,
) -> ElasticBertForPreTraining:
    """torch.compile the embeddings, each encoder layer, the exits' MLM transforms and the MLM loss step, in
    place (regional compilation).

    The layers share one compiled code object (compiled once, not 12 times); the loss step fuses softmax -
    onehot, the loss and the argmax of one exit's logits (`softmax_cross_entropy_grad_fusable`). Parameter names
    and checkpoints are unchanged (no `_orig_mod.` prefix). Measured on an H200, bf16, base size, length 512:
    34.5 % MFU at batch 64, 36.1 % at 128 (docs/pretraining.md). `embeddings=False` leaves them eager.
    `xent` (XENT_STEPS): "auto" keeps the Triton loss step where it runs and compiles the torch one for the
    rest; "compiled" always uses the compiled torch step. `dropout_masks` (DROPOUT_MASKS): "inductor" lets the
    compiled layers draw their hidden dropout as inductor does; "aten" draws the masks with torch's bernoulli
    kernel (`dropout_masks.use_keep_mask_dropout`: a quarter of the random-number work; on an H200 1.5-3 ms of a
    140 ms step faster); "auto" is "aten" where the model will run on a GPU (`device`, by default where its parameters are now),
    "inductor" elsewhere (`resolve_dropout_masks`)."""
    device = next(model.parameters()).device if device is None else device
    if resolve_dropout_masks(dropout_masks, device) == "aten":
        use_keep_mask_dropout(model)
    raise_recompile_limit()
    extra = {"mode": mode} if mode else {}  # e.g. "max-autotune-no-cudagraphs" (inductor only)
    if embeddings:
        model.elasticbert.embeddings.compile(backend=backend, **extra)
    for layer in model.elasticbert.encoder.layer:
        layer.compile(backend=backend, **extra)
    model._mlm_transform = torch.compile(model._mlm_transform, backend=backend, **extra)
    compiled = torch.compile(softmax_cross_entropy_grad_fusable, backend=backend, **extra)
    model._xent_step = xent_step(xent, compiled=compiled)
    return model


def load_pretraining_model(
    name_or_path: str | None, model_config: dict | None = None
) -> tuple[ElasticBertForPreTraining, list[str]]:
    """A pre-training model: new (from `model_config`), from an ElasticBERT checkpoint, or from a BERT one.

    Returns (model, notes). A BERT checkpoint is converted by renaming (`bert_state_dict_to_pretraining`);
    layer_norm_eps is kept from the BERT config.
    """
    model_config = dict(model_config or {})
    model_config.setdefault("num_output_layers", None)
    notes: list[str] = []
    if name_or_path is None:
        n = model_config.get("num_hidden_layers", 12)
        model_config.update(num_output_layers=n, max_output_layers=n)
        config = ElasticBertConfig(**model_config)
        return ElasticBertForPreTraining(config), notes
    from transformers import AutoConfig

    raw = AutoConfig.from_pretrained(name_or_path)
    if raw.model_type == "elasticbert":
        config = ElasticBertConfig.from_pretrained(name_or_path)
        _keep_sizes(name_or_path, config, model_config)
        for k, v in model_config.items():
            if v is not None:
                setattr(config, k, v)
        config.num_output_layers = config.num_hidden_layers
        model = ElasticBertForPreTraining.from_pretrained(name_or_path, config=config)
        return model, notes
    if raw.model_type != "bert":
        raise ValueError(f"{name_or_path}: model_type {raw.model_type!r}, expected elasticbert or bert")
    from ..convert import elasticbert_config_from_bert

    config = elasticbert_config_from_bert(raw)  # the source's sizes, an exit on every layer
    _keep_sizes(name_or_path, config, model_config)
    for k, v in model_config.items():
        if v is not None:
            setattr(config, k, v)
    n = config.num_hidden_layers
    config.num_output_layers = config.max_output_layers = n
    model = ElasticBertForPreTraining(config)
    state = _read_state_dict(Path(name_or_path))
    converted = bert_state_dict_to_pretraining(state, n)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    notes.append(
        f"converted BERT checkpoint {name_or_path}: {len(converted)} tensors loaded, "
        f"{len(missing)} initialised fresh (exit poolers/heads), {len(unexpected)} unexpected"
    )
    if unexpected:
        raise ValueError(f"unexpected tensors converting {name_or_path}: {unexpected[:5]}")
    return model, notes


def _keep_sizes(name_or_path: str, config, model_config: dict) -> None:  # noqa: ANN001
    changed = [
        f"{k}={model_config[k]!r} (the checkpoint has {getattr(config, k)!r})"
        for k in CHECKPOINT_SIZES
        if model_config.get(k) is not None and model_config[k] != getattr(config, k)
    ]
    if changed:
        raise ValueError(
            f"model_config changes the sizes of the checkpoint {name_or_path}: {', '.join(changed)}; a loaded "
            "model keeps its sizes (model_config may change e.g. dropout there); leave out model_name_or_path "
            "for a new model of other sizes"
        )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path}")


__all__ = [
    "ElasticBertForMaskedLM",
    "ElasticBertForPreTraining",
    "ElasticBertForPreTrainingOutput",
    "bert_state_dict_to_pretraining",
    "find_mlm_positions",
    "load_pretraining_model",
]
