"""Stopping a training loop cleanly on SIGTERM / Ctrl-C (shared by fine-tuning and pre-training)."""

from __future__ import annotations

import signal
from typing import Any

import torch


class StopRequest:
    """SIGTERM (a cluster's pre-emption notice) or Ctrl-C during training asks the loop to finish its step, save a
    checkpoint and stop, so that nothing is lost; a second Ctrl-C interrupts at once. One process checks after
    every step. Several agree after every step too, so that they all stop after the same step and save one
    consistent checkpoint within a step or two of the signal (torchrun kills its workers 30 s after passing a
    signal on): each step starts an all-reduce of a one-number flag on a CPU (gloo) group, without waiting, and
    the next step reads it; so the GPU never waits for it, and the stop comes one step after the signal.

        with StopRequest() as stop:
            for step in ...:
                ...
                if stop.agreed(accelerator):
                    save(); break
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}
        self._group = None  # the CPU process group the flags travel on
        self._pending = None  # (work, flag) of the all-reduce started at the previous step

    def __enter__(self) -> StopRequest:
        import threading

        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:  # noqa: ANN001
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C
        self.requested = signal.Signals(signum).name

    def agreed(self, accelerator) -> bool:  # noqa: ANN001
        """Call once per step on every process: True on all of them at the same step once any was signalled."""
        if accelerator.num_processes == 1:
            return self.requested is not None
        import torch.distributed as dist

        if self._group is None:  # every process gets here at its first step: a collective call, in step
            self._group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        stop = False
        if self._pending is not None:
            work, flag = self._pending
            work.wait()
            stop = bool(flag.item() > 0)
        flag = torch.tensor([1.0 if self.requested else 0.0])
        self._pending = (dist.all_reduce(flag, group=self._group, async_op=True), flag)
        return stop

    def __exit__(self, kind, err, tb) -> None:  # noqa: ANN001
        if self._pending is not None and kind is None:
            self._pending[0].wait()  # every process started it: none is left in flight at shutdown
        self._pending = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def exit_code(signal_name: str) -> int:
    """The exit status of a run a signal stopped: 128 + the signal's number, as shells report it (SIGINT 130,
    SIGTERM 143)."""
    return 128 + signal.Signals[signal_name].value
