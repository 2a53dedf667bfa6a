"""One helper around Hugging Face Accelerate's per-process state, shared by fine-tuning and pre-training."""

from __future__ import annotations

import os


def forget_single_process_state(mixed_precision: str | None, cpu: bool) -> None:
    """Let this process build an `Accelerator` with other settings than an earlier one.

    Accelerate keeps its state (mixed precision, device, ...) once per process and refuses a second
    `Accelerator` with other settings ("restart your runtime"). A user calling `finetune()` and then
    `pretrain(mixed_precision="bf16")` in one notebook should not have to. In a single process (not launched by
    torchrun/accelerate with WORLD_SIZE > 1), when the settings differ, the state is forgotten; with the same
    settings it is left alone (an `Accelerator` the caller made keeps working).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return  # a distributed launch: one run per process, and the state holds the process group
    from accelerate.state import AcceleratorState, GradientState

    current = AcceleratorState._shared_state
    if not current:
        return
    import torch

    wanted = mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # Accelerate's default
    on_cpu = cpu or not torch.cuda.is_available()
    device = current.get("device")
    same = current.get("_mixed_precision") == wanted and (
        device is None or (getattr(device, "type", None) == "cpu") == on_cpu
    )
    if not same:
        AcceleratorState._reset_state()  # also what Accelerate's own tests do between Accelerators
        GradientState._reset_state()


# Under torchrun, what a training function leaves behind (the Accelerator, the DDP model, the optimizer) is kept
# alive to the end of the process instead of being freed on return. Freeing the DDP model frees gloo's process
# group, whose destructor joins its worker threads while this thread holds the GIL; a worker thread still
# freeing its last collective's tensors needs the GIL: both wait for ever (a finished `elue finetune` under
# torchrun that never exited, seen under load; its stacks showed exactly this). The commands then end their
# process with `end_distributed_process`, which runs no destructors at all.
_HELD: list = []


def hold_until_exit(*objects: object) -> None:
    """Keep `objects` alive until the process ends, in a distributed launch (WORLD_SIZE > 1); else nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _HELD.extend(objects)


def end_distributed_process(code: int = 0) -> None:
    """In a process whose training objects are held (see `hold_until_exit`): flush the output and end the process
    with `code` at once, without the interpreter's teardown (it would free them, see above). Otherwise return."""
    if not _HELD:
        return
    import logging
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)
