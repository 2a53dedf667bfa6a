"""One helper around Hugging Face Accelerate's per-process state, shared by fine-tuning and pre-training."""

from __future__ import annotations

import os


def forget_single_process_state() -> None:
    """Let this process build an `Accelerator` with new settings.

    Accelerate keeps its state (mixed precision, device, gradient accumulation) once per process and refuses a
    second `Accelerator` with other settings ("restart your runtime"). A user calling `finetune()` and then
    `pretrain(mixed_precision="bf16")` in one notebook should not have to. In a single process (not launched
    by torchrun/accelerate with WORLD_SIZE > 1) the state is forgotten; the process group, if any, is kept.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return  # a distributed launch: one run per process, and the state holds the process group
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()  # also what Accelerate's own tests do between Accelerators
    GradientState._reset_state()
