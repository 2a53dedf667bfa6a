"""Optimisers and learning-rate schedules for pre-training: AdamW (torch) or LAMB, warm-up then decay.

LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes") is
written here (a few lines; no extra dependency): Adam's bias-corrected update u = m̂ / (√v̂ + ε) + λ·w,
scaled per tensor by the trust ratio ‖w‖ / ‖u‖ (1 where either norm is 0), w ← w − lr · ratio · u.
A parameter group with `layer_adaptation: False` takes the Adam step itself (ratio 1): `parameter_groups` puts
biases and LayerNorm weights there, which are excluded from weight decay and from layer adaptation alike, as in
the LAMB of the paper's BERT runs (ALBERT's and TF-Addons' `exclude_from_layer_adaptation`, which defaults to the
weight-decay exclusions; NVIDIA's FusedLAMB without `use_nvlamb`). Adapted, a bias that starts at 0 moves by
lr · ‖b‖ a step, a small fraction of Adam's step, for thousands of steps.
Parameters without a gradient are skipped, so exits left out of a grouped step are not touched.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Lamb(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.0,
        max_trust_ratio=10.0,
        layer_adaptation=True,
    ):
        if lr < 0 or eps < 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError("invalid LAMB hyper-parameters")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            max_trust_ratio=max_trust_ratio,
            layer_adaptation=layer_adaptation,
        )
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict):
        """Groups saved before `layer_adaptation` existed take this optimiser's (the saved groups replace these)."""
        adapt = [group["layer_adaptation"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, value in zip(self.param_groups, adapt, strict=True):
            group.setdefault("layer_adaptation", value)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                t = state["step"]
                update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt().add_(group["eps"]))
                w = p.float()
                if group["weight_decay"]:
                    update.add_(w, alpha=group["weight_decay"])
                if not group["layer_adaptation"]:
                    p.add_(update.to(p.dtype), alpha=-group["lr"])
                    continue
                w_norm, u_norm = w.norm(), update.norm()
                ratio = torch.where(
                    (w_norm > 0) & (u_norm > 0),
                    (w_norm / u_norm).clamp(max=group["max_trust_ratio"]),
                    torch.ones_like(w_norm),
                )
                p.add_((update * ratio).to(p.dtype), alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices, not on biases, LayerNorm weights or embeddings' padding (1-d tensors); LAMB's
    layer adaptation likewise (`layer_adaptation`, a key AdamW keeps and ignores)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "layer_adaptation": True},
        {"params": no_decay, "weight_decay": 0.0, "layer_adaptation": False},
    ]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    name = cfg.optimizer.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, eps=cfg.adam_epsilon)
    if name == "lamb":
        return Lamb(groups, lr=cfg.learning_rate, betas=betas, eps=cfg.adam_epsilon)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: adamw or lamb")


def fill_lazy_state(optimizer: torch.optim.Optimizer) -> int:
    """Give each parameter that has no optimiser state yet (an exit that no step trained so far) the state the
    optimiser would make at its first update: AdamW's and LAMB's are zeros and step 0, shaped here after a
    parameter that has one (same keys, dtypes and devices; DTensors stay DTensors). The updates do not change.
    Why: Accelerate loads an FSDP optimiser checkpoint into a template with a state for every parameter, so one
    saved without the idle exits' states cannot be resumed ("Missing key in checkpoint state_dict"). Returns how
    many parameters were given a state (0 when none has one yet: nothing to copy the form of)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model = next((p for p in params if optimizer.state.get(p)), None)
    if model is None:
        return 0
    form = optimizer.state[model]
    filled = 0
    for p in params:
        if not optimizer.state.get(p):
            optimizer.state[p] = {k: _first_state(v, p, model) for k, v in form.items()}
            filled += 1
    return filled


def _first_state(value, p: torch.Tensor, model: torch.Tensor):  # noqa: ANN001, ANN202
    """A state entry before the first update, in the form of `value` (the entry of parameter `model`) for `p`."""
    if isinstance(value, torch.Tensor):
        if value.ndim > 0 and value.shape == model.shape:  # a moment, one per element
            return torch.zeros_like(p, dtype=value.dtype)
        return torch.zeros(
            (), dtype=value.dtype, device=value.device if value.device.type == "cpu" else p.device
        )
    return type(value)(0)  # a Python step count


def warmup_length(cfg) -> int:
    """The warm-up in steps: `warmup_steps`, else `warmup_ratio` of `max_steps` (rounded up)."""
    return cfg.warmup_steps or int(math.ceil(cfg.warmup_ratio * cfg.max_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg):
    from transformers import get_scheduler

    from .config import POLYNOMIAL_LR_END

    warmup = warmup_length(cfg)
    total = cfg.max_steps
    extra = None
    if cfg.lr_scheduler == "polynomial":
        # the end the settings' check compares learning_rate with (transformers refuses a start at or below it)
        extra = {"lr_end": POLYNOMIAL_LR_END}
        # transformers divides by (total - warm-up) from step `total` on: with a warm-up of max_steps the
        # scheduler's step after the last update raised ZeroDivisionError (before the final checkpoint). Every
        # step before max_steps is in the warm-up either way, so this changes no learning rate that is used.
        total = max(total, warmup + 1)
    return get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total,
        scheduler_specific_kwargs=extra,
    )


def schedule_notes(cfg) -> list[str]:
    """Warnings about a schedule that does not do what its settings suggest (printed at start)."""
    warmup = warmup_length(cfg)
    if not warmup:
        return []
    if cfg.lr_scheduler == "constant":
        return [
            f"warning: lr_scheduler constant has no warm-up: the warm-up of {warmup} steps is ignored "
            "(constant_with_warmup has one)"
        ]
    if warmup >= cfg.max_steps:
        return [
            f"warning: the warm-up ({warmup} steps) is not shorter than max_steps {cfg.max_steps}: the learning "
            f"rate rises to {(cfg.max_steps - 1) / warmup:.3g} x learning_rate at most and never decays"
        ]
    return []
