"""Stopping a training loop cleanly on SIGTERM / Ctrl-C (shared by fine-tuning and pre-training)."""

from __future__ import annotations

import signal
from typing import Any

import torch


class StopRequest:
    """SIGTERM (a cluster's pre-emption notice) or Ctrl-C during training asks the loop to finish its step, save a
    checkpoint and stop, so that nothing is lost; a second Ctrl-C interrupts at once. One process checks after
    every step; several agree every `every` steps (one small all-reduce, at steps where the loop syncs anyway),
    so that they all stop after the same step and save one consistent checkpoint.

        with StopRequest() as stop:
            for step in ...:
                ...
                if stop.agreed(step, every, accelerator):
                    save(); break
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

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

    def agreed(self, step: int, every: int, accelerator) -> bool:  # noqa: ANN001
        if accelerator.num_processes == 1:
            return self.requested is not None
        if step % max(every, 1):
            return False
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def exit_code(signal_name: str) -> int:
    """The exit status of a run a signal stopped: 128 + the signal's number, as shells report it (SIGINT 130,
    SIGTERM 143)."""
    return 128 + signal.Signals[signal_name].value
