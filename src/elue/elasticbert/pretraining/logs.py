"""The run's logs: `train_log.csv` (per logging step: group, lr, loss, grad norm, tokens/s, per-exit MLM and SOP
losses), `eval_log.csv` (per exit: MLM loss/accuracy, SOP loss/accuracy), TensorBoard events with
`report_to: [tensorboard]`; and the window of losses summed between two rows of the training log."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from .config import PretrainConfig


class Logs:
    """CSV (and TensorBoard) writers on the main process; cut back to `start_step` when resuming."""

    def __init__(self, cfg: PretrainConfig, layers: int, start_step: int, main: bool):
        self.main = main
        self.dir = Path(cfg.output_dir)
        self.train_fields = [
            "step",
            "group",
            "lr",
            "loss",
            "grad_norm",
            "tokens",
            "tokens_per_s",
            "elapsed_s",
        ]
        self.train_fields += [f"mlm_{i + 1}" for i in range(layers)] + [f"sop_{i + 1}" for i in range(layers)]
        self.eval_fields = ["step", "exit", "mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy"]
        self.tb = None
        if not main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.train_path = self.dir / "train_log.csv"
        self.eval_path = self.dir / "eval_log.csv"
        for path, fields in ((self.train_path, self.train_fields), (self.eval_path, self.eval_fields)):
            rows = []
            if path.exists() and start_step > 0:  # a resume keeps the rows up to its step
                with path.open() as f:
                    rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
        if "tensorboard" in cfg.report_to:
            from torch.utils.tensorboard import SummaryWriter

            if start_step == 0:  # a fresh start: an earlier attempt's events would show next to this run's
                for old in (self.dir / "tensorboard").glob("events.out.tfevents.*"):
                    old.unlink()

            self.tb = SummaryWriter(
                str(self.dir / "tensorboard"), purge_step=start_step + 1 if start_step else None
            )

    def train(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        with self.train_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.train_fields).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "group") and v != "":
                    self.tb.add_scalar(f"train/{k}", float(v), row["step"])

    def eval(self, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.main:
            return
        with self.eval_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.eval_fields)
            for r in rows:
                w.writerow({"step": step, **r})
        if self.tb is not None:
            for r in rows:
                for k in ("mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy"):
                    self.tb.add_scalar(f"eval/{k}/exit_{r['exit']}", r[k], step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def eval_line(step: int, rows: list[dict[str, Any]]) -> str:
    """An evaluation in one console line (eval_log.csv has it all): each exit's held-out MLM loss and SOP
    accuracy, lowest exit first."""
    exits = [r["exit"] for r in rows]
    mlm = " ".join(f"{r['mlm_loss']:.3f}" for r in rows)
    sop = " ".join(f"{100 * r['sop_accuracy']:.1f}" for r in rows)
    span = f"exit {exits[0]}" if len(exits) == 1 else f"exits {exits[0]}–{exits[-1]}" if exits else "no exits"
    return f"eval at step {step} ({span}): MLM loss {mlm} | SOP accuracy % {sop}"


class LossWindow:
    """The logging window (the steps since the last log): per exit, the sum of its per-step mean losses and the
    number of steps it was active; the summed total loss. Local sums over global counts, reduced at logging."""

    def __init__(self, num_layers: int, device, saved: Any = None, main: bool = True):  # noqa: ANN001
        self.num_layers = num_layers
        self.device = device
        self.sums = torch.zeros(2, num_layers, device=device)  # per exit: MLM, SOP
        self.loss = torch.zeros((), device=device)
        self.active = [0] * num_layers
        self.steps = 0
        # each group's exits as an index on the device, made once: indexing `sums` with a Python list would copy
        # an index from the host every step, and that copy makes the host wait for the GPU
        self.exit_index: dict[tuple[int, ...], torch.Tensor] = {}
        if isinstance(saved, dict):  # a checkpoint between two logging steps: the window goes on
            # the global sums, once: the other processes' shares start at 0 (they are summed at logging)
            if main:
                sums = torch.tensor(saved["sums"], device=device)
                self.sums.copy_(sums[:-1].view(2, num_layers))
                self.loss.copy_(sums[-1])
            self.active, self.steps = list(saved["active"]), int(saved["steps"])

    def add(self, layers: list[int], mlm: torch.Tensor, sop: torch.Tensor, sop_weight: float) -> None:
        """One step's per-exit mean losses of the exits in `layers` (this process's share)."""
        index = self.exit_index.get(tuple(layers))
        if index is None:
            index = self.exit_index[tuple(layers)] = torch.tensor(layers, device=self.device)
        self.sums[0].index_add_(0, index, mlm)
        self.sums[1].index_add_(0, index, sop)
        self.loss += mlm.sum() + sop_weight * sop.sum()
        for layer in layers:
            self.active[layer] += 1
        self.steps += 1

    def reduced(self, accelerator) -> torch.Tensor:  # noqa: ANN001
        """(2L + 1,) on the CPU: per-exit MLM and SOP sums, total loss; all processes."""
        return accelerator.reduce(torch.cat([self.sums.flatten(), self.loss.view(1)]), reduction="sum").cpu()

    def exit_means(self, sums: torch.Tensor) -> dict[str, str]:
        """The log row's per-exit losses from the reduced sums: each exit's mean over the window's steps it was
        active in ("" where it was not)."""
        n_layers = self.num_layers
        mlm, sop = sums[:n_layers].tolist(), sums[n_layers : 2 * n_layers].tolist()
        row = {}
        for i in range(n_layers):
            n = self.active[i]
            row[f"mlm_{i + 1}"] = f"{mlm[i] / n:.6f}" if n else ""
            row[f"sop_{i + 1}"] = f"{sop[i] / n:.6f}" if n else ""
        return row

    def reset(self) -> None:
        self.sums.zero_()
        self.loss.zero_()
        self.active = [0] * self.num_layers
        self.steps = 0

    def state(self, accelerator) -> dict[str, Any] | None:  # noqa: ANN001
        """What a checkpoint saves of the window: its global sums, when it holds steps not logged yet (a resume
        then logs the same row); None right after a log row."""
        if not self.steps:
            return None
        return {"sums": self.reduced(accelerator).tolist(), "active": self.active, "steps": self.steps}


__all__ = ["Logs", "LossWindow"]
