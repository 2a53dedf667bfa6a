"""The options of a fine-tuning run (`FinetuneConfig`, what `elue finetune` sets), their checks and the
exit the best checkpoint is chosen by. RUN/config.json holds them; `finetune_checkpoints.check_resume` compares
a resumed run's with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FinetuneConfig:
    task: str
    model: str  # ElasticBERT (or converted) checkpoint folder
    output_dir: str
    source: str = "elue"  # "elue" (ELUE-layout folder) | "hub" (ELUE task from the HF hub) | "glue"
    data_dir: str | None = None  # ELUE layout root (source=elue); defaults to $ELUE_DATA_DIR
    hub_path: str | None = None  # local copy / override of the hub dataset (source=hub|glue)
    train_split: str = "train"
    dev_split: str = "dev"
    mode: str = "joint"  # "joint" (every exit) | "static" (first `num_layers`, one exit)
    num_layers: int | None = None  # static: k; joint: truncate the encoder to this many layers
    num_output_layers: int | None = None  # joint: exits on the top layers only (default: all)
    gradient_equilibrium: bool = True  # joint only
    max_length: int = 128
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # overrides warmup_ratio
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    eval_every: int | None = None  # steps between evaluations (default: once per epoch)
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    select: str = "auto"  # best checkpoint by "last" exit, "mean" over exits, or "auto"
    seed: int = 42
    cpu: bool = False
    mixed_precision: str | None = None  # "fp16" | "bf16" on GPU
    resume: bool = False
    overwrite: bool = False  # start over in an output folder that holds a run (best/, last/, log.jsonl)
    stop_after: int | None = None  # end this session at this global step (last/ saved; --resume later)
    train_limit: int | None = None  # use only N training rows, drawn at random (quick runs, tests)
    dev_limit: int | None = None
    progress: bool = True
    dataloader_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ValueError for values that cannot mean anything (0 is never "not given": None is)."""

        def at_least(name: str, value, low) -> None:
            if value is not None and not value >= low:
                raise ValueError(f"{name} must be >= {low}, got {value}")

        def finite_at_least(name: str, value, low) -> None:  # inf passes `>= low` and trains to NaN
            if value is not None and not (math.isfinite(value) and value >= low):
                raise ValueError(f"{name} must be a finite number >= {low}, got {value}")

        for name in (
            "batch_size",
            "eval_batch_size",
            "max_length",
            "num_layers",
            "num_output_layers",
            "max_steps",
            "eval_every",
            "train_limit",
            "dev_limit",
            "early_stopping_patience",
            "stop_after",
        ):
            at_least(name, getattr(self, name), 1)
        at_least("warmup_steps", self.warmup_steps, 0)
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm"):
            finite_at_least(name, getattr(self, name), 0)
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if self.mode not in ("joint", "static"):
            raise ValueError(f"unknown mode {self.mode!r}: joint or static")
        if self.mode == "static" and self.num_output_layers is not None:
            raise ValueError(
                "static training has one exit: num_output_layers (--exits) is for joint training"
            )
        if self.select not in ("auto", "last", "mean"):
            raise ValueError(f"select must be auto, last or mean, got {self.select!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        for name in (
            "train_split",
            "dev_split",
        ):  # a test split has no labels (GLUE's hub test labels are -1)
            split = getattr(self, name)
            if split.strip().lower().startswith("test"):
                raise ValueError(
                    f"{name} {split!r}: a test split has no labels to train on or choose by; "
                    "use labelled splits (train, dev)"
                )

    def selection(self) -> str:
        if self.select != "auto":
            return self.select
        return "mean" if self.mode == "joint" else "last"
