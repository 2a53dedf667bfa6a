"""The operating points of an ELUE submission from ElasticBERT (`static k`, `entropy τ`, `patience t`): their
names, the checks against a model's exits, and the exit rules replayed on every exit's logits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------------------------------
# operating points


@dataclass(frozen=True)
class Point:
    kind: str  # "static" | "entropy" | "patience"
    value: float  # k, threshold τ, or patience t

    @property
    def name(self) -> str:
        if self.kind == "static":
            return f"static_k{int(self.value)}"
        if self.kind == "patience":
            return f"patience_t{int(self.value)}"
        return f"entropy_{_fmt(self.value)}"


def _fmt(v: float) -> str:
    s = f"{v:.6g}"
    if float(s) != v:  # more digits than 6 tell two thresholds apart: all of them (the shortest exact form)
        s = repr(float(v))
    return s.replace("-", "m")


def make_points(
    static: Sequence[int] = (), entropy: Sequence[float] = (), patience: Sequence[int] = ()
) -> list[Point]:
    for k in static:
        if int(k) != k or k < 1:
            raise ValueError(f"static k={k}: must be a layer number >= 1")
    for t in entropy:
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"entropy threshold {t}: must be a finite number >= 0 (nats)")
    for t in patience:
        if int(t) != t or t < 1:
            raise ValueError(f"patience {t}: must be an integer >= 1")
    pts = [Point("static", int(k)) for k in static]
    pts += [Point("entropy", float(t)) for t in entropy]
    pts += [Point("patience", int(t)) for t in patience]
    if not pts:
        raise ValueError("no operating point: give at least one static k, entropy threshold or patience")
    names = [p.name for p in pts]
    repeated = sorted({n for n in names if names.count(n) > 1}, key=names.index)
    if repeated:  # named alone: the whole list hid which one it was ('--static 1-6 --static 6')
        raise ValueError(
            "operating points given more than once: "
            + ", ".join(f"{n} ({names.count(n)} times)" for n in repeated)
        )
    return pts


def check_points(
    points: Sequence[Point],
    config,
    *,
    regression: bool,
    regression_threshold: float | None = None,
    log=print,
) -> None:
    """Refuse points the model cannot serve, before any model pass: a static k without an exit, a dynamic
    point on a one-exit model, entropy on a regression head, a patience the exits cannot reach. A regression
    threshold given (not None) where no point uses it is named in a note."""
    exits = exit_layer_numbers(config)
    num_labels = int(getattr(config, "num_labels", 2))
    if regression_threshold is not None:
        if not (math.isfinite(regression_threshold) and regression_threshold >= 0):
            raise ValueError(f"regression threshold {regression_threshold}: must be a finite number >= 0")
        if not regression:
            log(
                f"note: --regression-threshold is for patience on a regression task (STS-B); this task has "
                f"{num_labels} classes, so it is ignored"
            )
        elif not any(p.kind == "patience" for p in points):
            log("note: --regression-threshold is for --patience points; there are none, so it is ignored")
    for p in points:
        if p.kind == "static":
            if int(p.value) not in exits:
                raise ValueError(
                    f"static k={int(p.value)}: the model has {config.num_hidden_layers} layers "
                    f"with exits at layers {exits} only"
                )
            continue
        option = f"--{p.kind} {_fmt(p.value) if p.kind == 'entropy' else int(p.value)}"
        if len(exits) < 2:
            raise ValueError(
                f"{option}: the model has a single exit (layer {exits[0]}), so a dynamic exit always leaves "
                f"there; use --static {exits[0]}"
            )
        if p.kind == "entropy":
            if regression:
                raise ValueError(
                    f"{option}: entropy exit needs a classifier (a 1-output regression head has entropy 0); "
                    "use --patience"
                )
            top = math.log(num_labels)
            if p.value > top:
                log(
                    f"warning: {option} is above the largest possible entropy ln({num_labels}) = {top:.3f}: "
                    "every example leaves at the first exit"
                )
        elif p.kind == "patience" and int(p.value) > len(exits) - 1:
            raise ValueError(
                f"{option}: the model has {len(exits)} exits, so patience can be at most {len(exits) - 1} "
                f"(patience t leaves at exit t+1 at the earliest: t = {len(exits) - 1} already always runs to "
                "full depth)"
            )


def exit_layer_numbers(config) -> list[int]:
    """1-based numbers of the layers that carry an exit (the top `num_output_layers`)."""
    n = int(config.num_hidden_layers)
    k = int(getattr(config, "num_output_layers", None) or n)
    return list(range(n - k + 1, n + 1))


# --------------------------------------------------------------------------------------------------
# exit rules, replayed on the logits of every exit


def entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of softmax(logits) along the last axis: the early-exit engine's own computation, so that
    an entropy equal to τ goes the same way in a replay and in the engine (a formula of our own differed from
    it in the last bit for about half of the values)."""
    import torch

    from .early_exit import entropy_from_logits

    return entropy_from_logits(torch.as_tensor(np.asarray(logits))).numpy()


def replay_exits(
    logits: np.ndarray,
    point: Point,
    exits: Sequence[int],
    regression: bool = False,
    regression_threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, exit layer) per example from every exit's logits [E, N, C].

    entropy τ: the first exit whose softmax entropy is below τ (else the last). patience t: the first
    exit at which the prediction has stayed the same for t consecutive exits after its first appearance
    (PABEE; regression: changed by less than `regression_threshold`), else the last.
    """
    exits = list(exits)
    e_count, n = logits.shape[0], logits.shape[1]
    if e_count != len(exits):
        raise ValueError(f"{e_count} exits of logits, {len(exits)} exit layers")
    preds_all = logits[..., 0] if regression else logits.argmax(-1)  # [E, N]
    if point.kind == "static":
        k = int(point.value)
        if k not in exits:
            raise ValueError(f"static k={k}: the model has exits at layers {exits} only")
        e = exits.index(k)
        return preds_all[e], np.full(n, k, dtype=np.int64)
    chosen = np.full(n, e_count - 1, dtype=np.int64)
    decided = np.zeros(n, dtype=bool)
    if point.kind == "entropy":
        if regression:
            raise ValueError("entropy exit needs a classifier: a 1-output regression head has entropy 0")
        ent = entropy(logits)  # [E, N]
        for e in range(e_count):
            hit = ~decided & (ent[e] < point.value)
            chosen[hit] = e
            decided |= hit
    elif point.kind == "patience":
        t = int(point.value)
        count = np.zeros(n, dtype=np.int64)
        for e in range(e_count):
            if e > 0:
                if regression:
                    same = np.abs(preds_all[e] - preds_all[e - 1]) < regression_threshold
                else:
                    same = preds_all[e] == preds_all[e - 1]
                count = np.where(same, count + 1, 0)
            hit = ~decided & (count >= t)
            chosen[hit] = e
            decided |= hit
    else:
        raise ValueError(f"unknown point kind {point.kind!r}")
    pred = preds_all[chosen, np.arange(n)]
    return pred, np.asarray(exits, dtype=np.int64)[chosen]
