"""Batched early-exit inference for multi-exit ElasticBERT (spec §7), and ELUE traces of its runs.

The engine runs one layer at a time on the whole batch. After a layer with an exit, the exit rule decides per
example; the examples that are done leave (their prediction, exit layer and logits are stored) and the rest are
regrouped with `index_select` and their padding trimmed to the longest remaining example, so the batch never
waits for its slowest member and never pays for padding that only departed examples needed.

Exit rules (an exit is evaluated on every layer that carries one; the last computed layer always exits):

- ``entropy`` τ: exit when the entropy of the exit's softmax is below τ (DeeBERT). Entropy is computed from
  `log_softmax` (stable for large logits). Refused for a 1-output regression head (its entropy is always 0,
  which in the original sent every STS-B example out at layer 1).
- ``patience`` t: exit when the prediction has stayed the same for t consecutive exits (PABEE): the counter
  starts at 0 at the first exit, +1 when the prediction equals the previous exit's, reset to 0 otherwise;
  exit when counter >= t (t = 0 exits at the first exit). Regression: "the same" is |change| < threshold.
- ``fixed`` k (aliases ``static``, ``depth``): every example exits at layer k (1-based); only exit k is evaluated.

Public API:

    early_exit(model, input_ids, attention_mask=None, token_type_ids=None, *, rule, threshold=None,
               regression_threshold=0.1) -> EarlyExitResult                          # one padded batch
    early_exit_reference(...same...) -> EarlyExitResult    # example by example at batch size 1 (for tests)
    run_early_exit(model, features, *, rule, threshold=None, batch_size=32, ...) -> EarlyExitResult
                                                           # a list of tokenised examples, batched by length
    entropy_from_logits(logits) -> Tensor
    build_trace(exit_layer, num_tokens, hidden_size, *, mode="dynamic", exit_layers=None) -> str

`EarlyExitResult` fields (CPU tensors, one entry per example, input order): `predictions` (long class ids, or
float for regression), `exit_layers` (long, 1-based), `token_counts` (long: unpadded length, special tokens
included), `logits` (float (N, C), the logits of the exit taken).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from elue.trace import format_trace

from .modeling_elasticbert import ElasticBertForSequenceClassification
from .padding import padding_mask, right_pad

# --------------------------------------------------------------------------------------------------------------
# results and traces


@dataclass
class EarlyExitResult:
    """Per-example results of an early-exit run (CPU tensors, input order)."""

    predictions: torch.Tensor  # (N,) long class ids, or float values for regression
    exit_layers: torch.Tensor  # (N,) long, 1-based layer of the exit taken
    token_counts: torch.Tensor  # (N,) long, unpadded length incl. special tokens
    logits: torch.Tensor  # (N, C) float, logits of the exit taken

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def mean_exit_layer(self) -> float:
        return float(self.exit_layers.float().mean()) if len(self) else 0.0

    def traces(
        self, hidden_size: int, *, exit_layers: Iterable[int] | None = None, mode: str = "dynamic"
    ) -> list[str]:
        """The ELUE `modules` value of every example (see `build_trace`).

        The result does not know the model's exits: the default traces an exit on *every* layer up to the one
        taken, right only for a model with an exit per layer under the entropy or patience rule. Otherwise pass
        them, or the traces charge exits that never ran:
        - exits on the top layers only (`num_output_layers` < `num_hidden_layers`): `exit_layers=` the 1-based
          exit layers (`[i + 1 for i in model.exit_layers]`);
        - a static model (one exit), or the fixed rule (only exit k is evaluated): `mode="static"`.
        """
        return [
            build_trace(int(e), int(n), hidden_size, mode=mode, exit_layers=exit_layers)
            for e, n in zip(self.exit_layers.tolist(), self.token_counts.tolist(), strict=True)
        ]

    @staticmethod
    def concatenate(parts: Sequence[EarlyExitResult]) -> EarlyExitResult:
        return EarlyExitResult(
            predictions=torch.cat([p.predictions for p in parts]),
            exit_layers=torch.cat([p.exit_layers for p in parts]),
            token_counts=torch.cat([p.token_counts for p in parts]),
            logits=torch.cat([p.logits for p in parts]),
        )

    def take(self, order: torch.Tensor) -> EarlyExitResult:
        return EarlyExitResult(
            self.predictions[order], self.exit_layers[order], self.token_counts[order], self.logits[order]
        )


def build_trace(
    exit_layer: int,
    num_tokens: int,
    hidden_size: int,
    *,
    mode: str = "dynamic",
    exit_layers: Iterable[int] | None = None,
) -> str:
    """The ELUE `modules` trace of one example (module names `emb`, `layer_<i>`, `exit_<i>`, 1-based).

    dynamic: every layer up to `exit_layer`, each followed by its exit when the layer carries one
        (`exit_layers`, 1-based; default every layer): ``(n),emb; (n,H),layer_1; (H),exit_1; ...;
        (n,H),layer_e; (H),exit_e``.
    static: layers 1..k and only exit k (k = `exit_layer`): ``(n),emb; (n,H),layer_1; ...; (n,H),layer_k;
        (H),exit_k``.
    """
    n, h, e = int(num_tokens), int(hidden_size), int(exit_layer)
    if n < 1 or h < 1 or e < 1:
        raise ValueError(f"need positive exit layer, token count and hidden size, got {e}, {n}, {h}")
    calls: list[tuple[str, tuple[int, ...]]] = [("emb", (n,))]
    if mode == "static":
        calls += [(f"layer_{i}", (n, h)) for i in range(1, e + 1)]
        calls.append((f"exit_{e}", (h,)))
    elif mode == "dynamic":
        exits = None if exit_layers is None else {int(x) for x in exit_layers}
        if exits is not None and e not in exits:
            raise ValueError(f"exit layer {e} carries no exit (exits: {sorted(exits)})")
        for i in range(1, e + 1):
            calls.append((f"layer_{i}", (n, h)))
            if exits is None or i in exits:
                calls.append((f"exit_{i}", (h,)))
    else:
        raise ValueError(f"mode must be 'dynamic' or 'static', got {mode!r}")
    return format_trace(calls)


# --------------------------------------------------------------------------------------------------------------
# rules


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dim, from log_softmax (no overflow, no log(0))."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _entropy_exits(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,) bool: which rows the entropy rule sends out. The engine and the reference both decide here, so an
    entropy equal to the threshold (a quantile of observed entropies, say) goes the same way in both."""
    return entropy_from_logits(logits) < threshold


@dataclass(frozen=True)
class _Rule:
    kind: str  # "entropy" | "patience" | "fixed"
    threshold: float
    regression_threshold: float


def _as_real(value) -> float:
    """A real number as float; anything else (a string, a bool, a tensor) as NaN, which every threshold check
    refuses: float("0.3") would accept a string, and int(inf) / int(nan) raise before the check can."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _make_rule(
    rule: str, threshold, regression_threshold: float, regression: bool, num_layers: int, exits
) -> _Rule:
    kind = {"static": "fixed", "depth": "fixed"}.get(rule, rule)
    if kind not in ("entropy", "patience", "fixed"):
        raise ValueError(f"unknown exit rule {rule!r}: entropy, patience or fixed")
    if threshold is None:
        raise ValueError(f"rule {rule!r} needs a threshold (entropy τ, patience t, or fixed layer k)")
    if kind == "entropy" and regression:
        raise ValueError(
            "the entropy rule needs a classification head: a 1-output regression head has softmax entropy 0, "
            "so every example would exit at the first exit; use the patience rule for regression"
        )
    t, rt = _as_real(threshold), _as_real(regression_threshold)
    if kind == "entropy" and not (math.isfinite(t) and t >= 0):
        raise ValueError(f"entropy threshold must be a finite number >= 0 (nats), got {threshold!r}")
    if not (math.isfinite(rt) and rt >= 0):
        raise ValueError(f"regression_threshold must be a finite number >= 0, got {regression_threshold!r}")
    if kind == "patience" and not (math.isfinite(t) and t >= 0 and t == int(t)):
        raise ValueError(f"patience must be a non-negative integer, got {threshold!r}")
    if kind == "fixed" and not (
        math.isfinite(t) and t == int(t) and 1 <= t <= num_layers and int(t) - 1 in exits
    ):
        raise ValueError(
            f"fixed depth {threshold!r}: must be a 1-based exit layer, one of {[x + 1 for x in exits]}"
        )
    return _Rule(kind, t, rt)


def _classifier(model) -> ElasticBertForSequenceClassification:
    if not isinstance(model, ElasticBertForSequenceClassification):
        raise TypeError(
            f"early exit needs an ElasticBertForSequenceClassification, got {type(model).__name__}"
        )
    if model.config.problem_type == "multi_label_classification":
        raise ValueError(
            "early exit needs a single-label classification or regression head: the exit rules read one "
            "prediction per example (softmax entropy, argmax), which a multi-label head does not give"
        )
    if model.is_regression and model.config.num_labels != 1:
        raise ValueError(
            f"early exit needs one prediction per example: this regression head has {model.config.num_labels} "
            "outputs (problem_type='regression'), and the exit rules and results hold one value per example"
        )
    return model


# --------------------------------------------------------------------------------------------------------------
# the batched engine


def early_exit(
    model: ElasticBertForSequenceClassification,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    *,
    rule: str,
    threshold: float | None = None,
    regression_threshold: float = 0.1,
) -> EarlyExitResult:
    """Early-exit inference on one padded batch (B, S). Returns an `EarlyExitResult` in batch order.

    `rule`: "entropy" (threshold τ), "patience" (threshold = t; `regression_threshold` for regression heads),
    or "fixed"/"static" (threshold = 1-based layer k). Each row's tokens (where the mask is 1; padding on
    either side) go through the engine of `run_early_exit` with the batch as one pool and one sub-batch, on the
    model's device (the inputs may be on another: a tokenizer's CPU tensors for a model on a GPU).
    """
    _check_batch(input_ids, attention_mask, token_type_ids)
    keep = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool().cpu()
    _refuse_empty(keep.sum(1).numpy(), "rows", "attention_mask all 0")
    fields = {"input_ids": input_ids.cpu()}
    if token_type_ids is not None:
        fields["token_type_ids"] = token_type_ids.cpu()
    features = [{k: v[b][keep[b]].numpy() for k, v in fields.items()} for b in range(input_ids.shape[0])]
    size = max(len(features), 1)
    return run_early_exit(
        model,
        features,
        rule=rule,
        threshold=threshold,
        regression_threshold=regression_threshold,
        batch_size=size,
        pool_size=size,
        device=None,  # the model's: the rows are copied to the host here anyway, so inputs may be anywhere
    )


def _refuse_empty(lengths: np.ndarray, what: str, why: str) -> None:
    """An example without tokens has no [CLS] to exit on: the engine would give it a made-up prediction (and a
    `(0),emb` trace), the reference a reshape error. Refuse it by index instead."""
    empty = np.flatnonzero(lengths == 0).tolist()
    if empty:
        shown = str(empty) if len(empty) <= 10 else f"{str(empty[:10])[:-1]}, ... ({len(empty)} in all)]"
        raise ValueError(f"{what} {shown} have no tokens ({why})")


def _check_token_types(features, lengths: np.ndarray) -> None:  # noqa: ANN001
    """token_type_ids on every example or on none, each as long as its input_ids: a batch takes the fields of
    its first (shortest) example, so token types of some examples only were dropped without a word, or failed
    with a KeyError, depending on the examples' lengths."""
    has = np.fromiter(("token_type_ids" in f for f in features), bool, count=len(features))
    if has.any() and not has.all():
        without = np.flatnonzero(~has).tolist()
        raise ValueError(
            f"examples {without[:10]}{' ...' if len(without) > 10 else ''} have no token_type_ids, others "
            "have: give them to every example or to none"
        )
    if has.any():
        tts = np.fromiter((len(f["token_type_ids"]) for f in features), np.int64, count=len(features))
        bad = np.flatnonzero(tts != lengths).tolist()
        if bad:
            raise ValueError(
                f"examples {bad[:10]}{' ...' if len(bad) > 10 else ''}: token_type_ids of another length than "
                f"input_ids (example {bad[0]}: {tts[bad[0]]} and {lengths[bad[0]]})"
            )


def _decide(r: _Rule, logits: torch.Tensor, regression: bool, prev_pred, counter, is_last: bool):
    """(pred, done, prev_pred, counter) for the rows of one exit evaluation; state tensors row-aligned."""
    pred = logits[:, 0] if regression else logits.argmax(-1)
    if r.kind == "patience":
        if prev_pred is None:
            counter = torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device)
        else:
            same = (pred - prev_pred).abs() < r.regression_threshold if regression else pred == prev_pred
            counter = torch.where(same, counter + 1, torch.zeros_like(counter))
        prev_pred = pred
    if is_last or r.kind == "fixed":
        done = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
    elif r.kind == "entropy":
        done = _entropy_exits(logits, r.threshold)
    else:
        done = counter >= int(r.threshold)
    return pred, done, prev_pred, counter


def _empty_result(regression: bool, num_labels: int) -> EarlyExitResult:
    return EarlyExitResult(
        predictions=torch.empty(0, dtype=torch.float32 if regression else torch.long),
        exit_layers=torch.empty(0, dtype=torch.long),
        token_counts=torch.empty(0, dtype=torch.long),
        logits=torch.empty(0, num_labels),
    )


# --------------------------------------------------------------------------------------------------------------
# the reference path: example by example, batch size 1, plain Python decisions


def _check_batch(input_ids: torch.Tensor, attention_mask=None, token_type_ids=None) -> None:  # noqa: ANN001
    if input_ids.dim() != 2:  # one example's (S,) ids would be read as S rows of one token
        raise ValueError(f"input_ids must be a padded batch (B, S), got shape {tuple(input_ids.shape)}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and tuple(t.shape) != tuple(
            input_ids.shape
        ):  # else an IndexError of boolean indexing
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}, input_ids {tuple(input_ids.shape)}: they must be the same "
                "(batch, sequence length)"
            )


@torch.inference_mode()
def early_exit_reference(
    model: ElasticBertForSequenceClassification,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    *,
    rule: str,
    threshold: float | None = None,
    regression_threshold: float = 0.1,
) -> EarlyExitResult:
    """The same rules, one example at a time (batch size 1, its unpadded tokens: where the mask is 1, padding on
    either side, as `early_exit`).

    Slow by design (as the original ElasticBERT code): it is the yardstick for `early_exit`.
    """
    _check_batch(input_ids, attention_mask, token_type_ids)
    clf = _classifier(model)
    base = clf.elasticbert
    regression = clf.is_regression
    exits = set(clf.exit_layers)
    r = _make_rule(rule, threshold, regression_threshold, regression, clf.config.num_hidden_layers, exits)
    was_training = clf.training
    clf.eval()
    preds, layers, counts, all_logits = [], [], [], []
    keep = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool()
    lengths = keep.sum(1).tolist()
    _refuse_empty(np.array(lengths, dtype=np.int64), "rows", "attention_mask all 0")
    try:
        for b, n in enumerate(lengths):
            ids = input_ids[b][keep[b]][None]
            tts = token_type_ids[b][keep[b]][None] if token_type_ids is not None else None
            hidden = base.embed(ids, tts)
            prev, count = None, 0
            candidates = [int(r.threshold) - 1] if r.kind == "fixed" else sorted(exits)
            for i in range(max(candidates) + 1):
                hidden = base.layer_forward(i, hidden, None)
                if i not in candidates:
                    continue
                logits = clf.exit_logits(i, hidden)[0].float()
                value = float(logits[0]) if regression else int(torch.argmax(logits))
                if r.kind == "entropy":
                    stop = bool(_entropy_exits(logits[None], r.threshold)[0])
                elif r.kind == "patience":
                    if prev is not None:
                        same = abs(value - prev) < r.regression_threshold if regression else value == prev
                        count = count + 1 if same else 0
                    prev = value
                    stop = count >= int(r.threshold)
                else:
                    stop = True
                if stop or i == max(candidates):
                    break
            preds.append(value)
            layers.append(i + 1)
            counts.append(n)
            all_logits.append(logits)
    finally:
        clf.train(was_training)
    # made as ordinary tensors, as `early_exit`'s: inference tensors refuse in-place edits outside inference mode
    with torch.inference_mode(False):
        if not preds:
            return _empty_result(regression, clf.config.num_labels)
        return EarlyExitResult(
            predictions=torch.tensor(preds, dtype=torch.float32 if regression else torch.long),
            exit_layers=torch.tensor(layers, dtype=torch.long),
            token_counts=torch.tensor(counts, dtype=torch.long),
            logits=torch.stack([lg.clone() for lg in all_logits]).cpu(),
        )


# --------------------------------------------------------------------------------------------------------------
# a whole data set


def pad_batch(
    features: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int = 0
) -> dict[str, torch.Tensor]:
    """Right-pad tokenised examples ({"input_ids": [...], "token_type_ids": [...]?}) into tensors (lists or
    numpy arrays per example; vectorised, see `right_pad`)."""
    keep = padding_mask(np.fromiter((len(f["input_ids"]) for f in features), np.int64, count=len(features)))
    out = {"input_ids": right_pad([f["input_ids"] for f in features], keep, pad_token_id)}
    out["attention_mask"] = torch.from_numpy(keep.astype(np.int64))
    if "token_type_ids" in features[0]:
        out["token_type_ids"] = right_pad([f["token_type_ids"] for f in features], keep, 0)
    return out


class _Group:
    """A sub-batch of active examples: right-padded hidden states and their attention bias."""

    __slots__ = ("pos", "lengths", "hidden", "bias")

    def __init__(self, pos, lengths, hidden, lengths_dev: torch.Tensor | None = None):
        self.pos = pos  # np.ndarray: positions in the pool
        self.lengths = lengths  # np.ndarray: unpadded lengths
        self.hidden = hidden  # (g, L, H), L = max(lengths)
        self.bias = _length_bias(lengths, hidden, lengths_dev)


def _length_bias(
    lengths: np.ndarray, hidden: torch.Tensor, lengths_dev: torch.Tensor | None = None
) -> torch.Tensor | None:
    """(g, 1, 1, L) additive bias for right padding, or None without padding. `lengths_dev`: the same lengths
    already on the device (saves a host->device copy, which on a GPU waits for the stream)."""
    width = hidden.shape[1]
    if (lengths == width).all():
        return None  # no padding: no mask at all
    lens = lengths_dev if lengths_dev is not None else torch.from_numpy(lengths).to(hidden.device)
    keep = (torch.arange(width, device=hidden.device)[None, :] < lens[:, None]).to(hidden.dtype)
    return ((1.0 - keep) * torch.finfo(hidden.dtype).min)[:, None, None, :]


def _fit_width(t: torch.Tensor, width: int) -> torch.Tensor:
    """Trim or zero-pad dim 1 of a (g, L, H) tensor to `width` (the cut/added positions are padding)."""
    if t.shape[1] >= width:
        return t[:, :width]
    return torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1]))


def _regroup(survivors: list[tuple[_Group, np.ndarray]], batch_size: int, device) -> list[_Group]:
    """Re-batch the survivors of every group (kept in length order) into groups of at most `batch_size`.

    The new groups, concatenated, hold the survivors in the order of the old groups concatenated (pool-level
    state such as the patience counters stays aligned by filtering it with the same keep mask). Host work is
    vectorised and every gather index goes to the device in one copy."""
    src = [(g, rows) for g, rows in survivors if len(rows)]
    if not src:
        return []
    gid = np.concatenate([np.full(len(rows), k) for k, (_, rows) in enumerate(src)])  # source group per row
    row = np.concatenate([rows for _, rows in src])  # row in its source group
    lengths = np.concatenate([g.lengths[rows] for g, rows in src])
    pos = np.concatenate([g.pos[rows] for g, rows in src])
    n = len(row)
    on_device = torch.from_numpy(np.concatenate([row, lengths])).to(device)
    row_dev, lengths_dev = on_device[:n], on_device[n:]
    # as few sub-batches as batch_size allows, of balanced sizes (no tiny remainder call)
    n_chunks = -(-n // batch_size)
    bounds = [round(k * n / n_chunks) for k in range(n_chunks + 1)]
    groups = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        width = int(lengths[start:stop].max())
        # contiguous runs from the same source group -> one index_select each
        cuts = start + 1 + np.flatnonzero(gid[start + 1 : stop] != gid[start : stop - 1])
        edges = [start, *cuts.tolist(), stop]
        pieces = [
            _fit_width(src[gid[a]][0].hidden.index_select(0, row_dev[a:b]), width)
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ]
        hidden = pieces[0].contiguous() if len(pieces) == 1 else torch.cat(pieces)
        groups.append(_Group(pos[start:stop], lengths[start:stop], hidden, lengths_dev[start:stop]))
    return groups


@torch.inference_mode()
def _run_pool(clf, features, r: _Rule, regression, exit_set, last, batch_size, pad_token_id, device):
    """Early exit over a pool of tokenised examples (sorted by length): each layer runs on sub-batches of up
    to `batch_size` active examples; after an exit layer the survivors of all sub-batches are re-batched, so
    layer calls stay full while examples leave. Result in `features` order."""
    base = clf.elasticbert
    n = len(features)
    num_labels = clf.config.num_labels
    pred_store = torch.empty(n, dtype=torch.float32 if regression else torch.long, device=device)
    layer_store = torch.empty(n, dtype=torch.long, device=device)
    logit_store = torch.empty(n, num_labels, dtype=torch.float32, device=device)
    lengths_all = np.array([len(f["input_ids"]) for f in features], dtype=np.int64)

    groups = []
    for start in range(0, n, batch_size):
        batch = pad_batch(features[start : start + batch_size], pad_token_id)
        tts = batch.get("token_type_ids")
        hidden = base.embed(batch["input_ids"].to(device), tts.to(device) if tts is not None else None)
        groups.append(
            _Group(
                np.arange(start, min(start + batch_size, n)), lengths_all[start : start + batch_size], hidden
            )
        )

    prev = counter = None  # patience state, aligned with the groups' rows concatenated
    for i in range(last + 1):
        for g in groups:
            g.hidden = base.layer_forward(i, g.hidden, g.bias)
        if i not in exit_set:
            continue
        # One exit call for the whole pool: an exit reads only [CLS], so the groups' widths do not matter, and
        # on a GPU a few kernels for the pool cost far less than a few per group (small calls are launch-bound).
        cls = torch.cat([g.hidden[:, :1] for g in groups]) if len(groups) > 1 else groups[0].hidden[:, :1]
        logits = clf.exit_logits(i, cls).float()  # (P, C), P = active examples in the pool
        pred, done, prev, counter = _decide(r, logits, regression, prev, counter, i == last)
        done_host = done.cpu().numpy()  # the one host sync per exit layer: who leaves
        if not done_host.any():
            continue
        rows = np.flatnonzero(done_host)
        keep_all = np.flatnonzero(~done_host)
        pos = np.concatenate([g.pos for g in groups])
        # one host->device copy per exit layer (on a GPU a pageable copy waits for the stream)
        k = len(rows)
        idx = torch.from_numpy(np.concatenate([rows, pos[rows], keep_all])).to(device)
        sel, targets, keep_idx = idx[:k], idx[k : 2 * k], idx[2 * k :]
        pred_store[targets] = pred.index_select(0, sel).to(pred_store.dtype)
        layer_store[targets] = i + 1
        logit_store[targets] = logits.index_select(0, sel)
        if prev is not None and len(keep_all):
            prev, counter = prev.index_select(0, keep_idx), counter.index_select(0, keep_idx)
        survivors, offset = [], 0
        for g in groups:
            keep = np.flatnonzero(~done_host[offset : offset + len(g.pos)])
            offset += len(g.pos)
            survivors.append((g, keep))
        groups = _regroup(survivors, batch_size, device)
        if not groups:
            break

    return EarlyExitResult(
        predictions=pred_store.cpu(),
        exit_layers=layer_store.cpu(),
        token_counts=torch.from_numpy(lengths_all),
        logits=logit_store.cpu(),
    )


def run_early_exit(
    model: ElasticBertForSequenceClassification,
    features: Sequence[Mapping[str, Sequence[int]]],
    *,
    rule: str,
    threshold: float | None = None,
    regression_threshold: float = 0.1,
    batch_size: int = 32,
    pool_size: int | None = None,
    pad_token_id: int | None = None,
    device: torch.device | str | None = None,
    reference: bool = False,
    progress: bool = False,
    desc: str = "early exit",
) -> EarlyExitResult:
    """Early exit over tokenised examples (dicts with `input_ids`, optional `token_type_ids`; unpadded).

    Examples are sorted by length and taken in pools of `pool_size` (default 16 × `batch_size`). Within a
    pool every layer runs on sub-batches of at most `batch_size` examples; after each exit layer the examples
    still running are re-batched across the pool (so a layer call stays full while examples leave, and each
    sub-batch is padded only to its own longest member). `pool_size=batch_size` gives plain per-batch early
    exit. `reference=True`: the example-by-example path instead. Result in input order. `progress`: a bar of the
    examples done, labelled `desc`.
    """
    clf = _classifier(model)
    if isinstance(features, Mapping):
        raise TypeError(
            "run_early_exit takes a sequence of examples (dicts with input_ids, or a tokenised datasets.Dataset), "
            "got one mapping of columns (a tokenizer's output?): for a padded batch call "
            "early_exit(model, **tokenizer(texts, padding=True, return_tensors='pt'), rule=..., threshold=...)"
        )
    regression = clf.is_regression
    exits = clf.exit_layers
    r = _make_rule(
        rule, threshold, regression_threshold, regression, clf.config.num_hidden_layers, set(exits)
    )
    exit_set = {int(r.threshold) - 1} if r.kind == "fixed" else set(exits)
    last = max(exit_set)
    if pad_token_id is None:
        pad_token_id = clf.config.pad_token_id or 0
    device = torch.device(device) if device is not None else next(clf.parameters()).device
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pool_size = max(int(pool_size or 16 * batch_size), batch_size)
    lengths = np.fromiter((len(f["input_ids"]) for f in features), np.int64, count=len(features))
    _refuse_empty(lengths, "examples", "empty input_ids")
    _check_token_types(features, lengths)
    order = np.argsort(lengths, kind="stable").tolist()
    if not order:
        return _empty_result(regression, clf.config.num_labels)
    from tqdm.auto import tqdm

    parts = []
    was_training = clf.training
    bar = tqdm(total=len(order), desc=desc, unit="ex", leave=False, disable=not progress)
    clf.eval()
    try:
        if reference:
            for i in order:
                bar.update(1)
                batch = {k: v.to(device) for k, v in pad_batch([features[i]], pad_token_id).items()}
                parts.append(
                    early_exit_reference(
                        clf,
                        **batch,
                        rule=rule,
                        threshold=threshold,
                        regression_threshold=regression_threshold,
                    )
                )
        else:
            for start in range(0, len(order), pool_size):
                pool = [features[i] for i in order[start : start + pool_size]]
                parts.append(
                    _run_pool(clf, pool, r, regression, exit_set, last, batch_size, pad_token_id, device)
                )
                bar.update(len(pool))
    finally:
        bar.close()
        clf.train(was_training)
    merged = EarlyExitResult.concatenate(parts)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return merged.take(inverse)


__all__ = [
    "EarlyExitResult",
    "build_trace",
    "early_exit",
    "early_exit_reference",
    "entropy_from_logits",
    "pad_batch",
    "run_early_exit",
]
