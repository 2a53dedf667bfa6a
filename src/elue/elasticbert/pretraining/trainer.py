"""The pre-training loop on Hugging Face Accelerate.

One script for one CPU, one GPU, 8 GPUs or several nodes: launch it plainly, or under `torchrun` /
`accelerate launch` (DDP; `distributed: fsdp` for FSDP). bf16 autocast on GPUs that support it.

A step (one optimiser update):
  1. the exit group of this step: groups[step % len(groups)] (or every exit);
  2. `gradient_accumulation_steps` micro-batches of `per_device_batch_size` examples per process;
  3. the numbers of masked tokens and of SOP pairs over all micro-batches and all processes are summed first,
     and each micro-batch's loss is its summed per-exit losses divided by those global counts (times the
     number of processes, which DDP's gradient mean divides out). So the update is the same for any split of
     the same global batch into processes and micro-batches: 2 processes × b = 1 process × 2b = 1 × b × 2 steps
     of accumulation, up to float rounding;
  4. clip, optimiser and scheduler step, gradients set to None (exits outside the group keep no gradient and
     AdamW/LAMB leave them as they are).

Checkpoints: `output_dir/checkpoints/step-XXXXXXX/` holds `accelerator.save_state` (model, optimiser,
scheduler, every process's RNG states), each process's data position (`data-rank<r>.json`), `trainer_state.json`,
and the model in Hugging Face format (`model/`, loadable by `ElasticBertForPreTraining.from_pretrained` and, its
top MLM head, by `ElasticBertForMaskedLM`). `resume_from_checkpoint: latest` continues from the newest complete
one; the per-step log is cut back to that step, so a killed and resumed run writes the same log as an
uninterrupted one.

Logs: `train_log.csv` (per step: group, lr, loss, grad norm, tokens/s, per-exit MLM and SOP losses),
`eval_log.csv` (per exit: MLM loss/accuracy, SOP loss/accuracy on a fixed held-out set), TensorBoard events
with `report_to: [tensorboard]`, a tqdm progress bar on the main process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..accelerate_state import forget_single_process_state
from ..stopping import StopRequest
from .config import TWO_TYPES, NoUsableDocument, PretrainConfig, SettingsError

CHECKPOINT_PREFIX = "step-"
COMPLETE_MARKER = "COMPLETE"


def _mixed_precision(cfg: PretrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if not cfg.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: PretrainConfig, grouped: bool):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    kwargs: dict[str, Any] = {}
    if cfg.distributed == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["ElasticBertLayer"],
            reshard_after_forward=True,
        )
    elif cfg.distributed != "ddp":
        raise ValueError(f"distributed must be ddp or fsdp, not {cfg.distributed!r}")
    # grouped training leaves the other group's heads out of the graph: DDP must look for unused parameters
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=grouped)]
    # without a GPU, Accelerate only sets up a multi-process (gloo) group when told it runs on the CPU
    cpu = cfg.cpu or not torch.cuda.is_available()
    precision = _mixed_precision(cfg)
    forget_single_process_state(precision, cpu)
    return Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=handlers, **kwargs)


def describe_engine(num_processes: int, distributed_type: str, mixed_precision: str) -> tuple[str, str]:
    """The start-up line's words for the processes and the precision: "1 process" / "2 processes (MULTI_CPU)"
    (Accelerate's distributed type, named only where there is one: "NO" says nothing to a user), and
    "mixed precision bf16" / "fp32 (no mixed precision)"."""
    procs = f"{num_processes} process{'es' if num_processes != 1 else ''}"
    if distributed_type != "NO":
        procs += f" ({distributed_type})"
    precision = (
        "fp32 (no mixed precision)" if mixed_precision == "no" else f"mixed precision {mixed_precision}"
    )
    return procs, precision


def find_checkpoint(output_dir: Path, which: str | None) -> Path | None:
    if not which:
        return None
    if which != "latest":
        path = Path(which)
        if not (path / COMPLETE_MARKER).exists():
            raise SettingsError(
                f"resume_from_checkpoint: {path} is not a complete checkpoint (no {COMPLETE_MARKER})"
            )
        return path
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def checkpoint_step(path: Path) -> int:
    """The step of a `step-NNNNNNN` folder (-1 for a name that is not one)."""
    digits = path.name[len(CHECKPOINT_PREFIX) :]
    return int(digits) if path.name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else -1


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints under `output_dir/checkpoints`, oldest step first."""
    root = output_dir / "checkpoints"
    done = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if checkpoint_step(p) >= 0]
    return sorted((p for p in done if (p / COMPLETE_MARKER).exists()), key=checkpoint_step)


def incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """The `step-NNNNNNN` folders under `output_dir/checkpoints` without their COMPLETE marker (a run killed while
    saving), oldest step first. Never resumed from; removed once a complete checkpoint of a later step is saved."""
    root = output_dir / "checkpoints"
    found = [
        p
        for p in root.glob(f"{CHECKPOINT_PREFIX}*")
        if checkpoint_step(p) >= 0
        and p.is_dir()
        and not p.is_symlink()
        and not (p / COMPLETE_MARKER).exists()
    ]
    return sorted(found, key=checkpoint_step)


def check_output_dir(output_dir: Path, ckpt: Path | None) -> None:
    """A run never shares its checkpoint folder with newer checkpoints than its own: `save_total_limit` would
    rotate its new checkpoints away (they are older), and `latest` would later resume from the wrong run."""
    existing = complete_checkpoints(output_dir)
    if not existing:
        return
    newest = existing[-1]
    if ckpt is None:
        raise SettingsError(
            f"output_dir {output_dir} already holds checkpoints (newest {newest.name}) and "
            "resume_from_checkpoint is null: resume with resume_from_checkpoint=latest, or pick a new output_dir"
        )
    if checkpoint_step(newest) > checkpoint_step(ckpt) and newest.resolve() != ckpt.resolve():
        raise SettingsError(
            f"resume_from_checkpoint: {ckpt} is older than {newest} in output_dir {output_dir}: resume with "
            "resume_from_checkpoint=latest, or pick a new output_dir for a run from the older checkpoint"
        )


class _Logs:
    """CSV (and TensorBoard) writers on the main process; cut back to `start_step` when resuming."""

    def __init__(self, cfg: PretrainConfig, layers: int, start_step: int, main: bool):
        self.main = main
        self.dir = Path(cfg.output_dir)
        self.layers = layers
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
        for path, fields, keep in (
            (self.train_path, self.train_fields, lambda r: int(r["step"]) <= start_step),
            (self.eval_path, self.eval_fields, lambda r: int(r["step"]) <= start_step),
        ):
            rows = []
            if path.exists() and start_step > 0:
                with path.open() as f:
                    rows = [r for r in csv.DictReader(f) if keep(r)]
            if start_step == 0 and path.exists() and path == self.eval_path:
                rows = []
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


def batch_to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The batch on `device`, without an attention mask that masks nothing (checked here on the host: the model
    would have to ask the GPU, and SDPA runs its fastest kernels without a mask)."""
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        batch = {k: v for k, v in batch.items() if k != "attention_mask"}
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, batches: list[dict[str, torch.Tensor]], device) -> list[dict[str, Any]]:
    """Per-exit MLM and SOP loss/accuracy of every exit on fixed batches (means over tokens / pairs)."""
    was_training = model.training
    model.eval()
    tot = None
    for b in batches:
        out = model(**batch_to_device(b, device))
        part = [
            out.mlm_loss_sums.float(),
            out.mlm_correct.float(),
            out.sop_loss_sums.float(),
            out.sop_correct.float(),
        ]
        counts = [out.num_masked.float(), out.num_sop.float()]
        tot = [*part, *counts] if tot is None else [a + c for a, c in zip(tot, [*part, *counts], strict=True)]
    model.train(was_training)
    if tot is None:
        return []
    mlm, mlm_ok, sop, sop_ok, n_mask, n_sop = (t.cpu() for t in tot)
    return [
        {
            "exit": layer + 1,
            "mlm_loss": float(mlm[j] / n_mask),
            "mlm_accuracy": float(mlm_ok[j] / n_mask),
            "sop_loss": float(sop[j] / n_sop),
            "sop_accuracy": float(sop_ok[j] / n_sop),
        }
        for j, layer in enumerate(model.exit_layers)
    ]


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run (or resume) a pre-training job. Returns a summary dict (steps, final losses, output paths).

    Everything that can be checked is checked before anything is written to `output_dir`: settings, files,
    model and tokenizer, the checkpoint to resume and its settings, and the first batch of every data stream."""
    from accelerate.utils import set_seed

    from .data import PretrainingBatches, eval_batches, load_documents, rows_per_stream
    from .modeling_pretraining import compile_regions, load_pretraining_model
    from .optim import build_optimizer, build_scheduler

    cfg.check_types()
    cfg.check_files()
    # absolute paths: a resume from another working directory, or spelling the path another way, is the same data
    cfg.train_files, cfg.eval_files = _absolute(cfg.train_files), _absolute(cfg.eval_files)
    # `~` is the home folder in the other paths too (a literal `~` folder, or a bad hub id, otherwise)
    for key in ("output_dir", "resume_from_checkpoint", "model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(cfg, key)
        if isinstance(value, str) and value.startswith("~"):
            setattr(cfg, key, str(Path(value).expanduser()))
    out_dir = Path(cfg.output_dir)
    _check_folder_path(out_dir)
    if cfg.mixed_precision == "fp16" and (cfg.cpu or not torch.cuda.is_available()):
        raise SettingsError("mixed_precision fp16 needs a GPU; on the CPU use bf16 (autocast) or no")
    set_seed(cfg.seed)
    if not cfg.progress_bar:  # before the model loads: its "Loading weights" bar too
        _quiet_transformers_bars()
    _check_local_path("model_name_or_path", cfg.model_name_or_path)
    try:
        model, notes = load_pretraining_model(cfg.model_name_or_path, cfg.model_config)
    except (OSError, ValueError, RuntimeError) as err:  # a missing checkpoint, inconsistent sizes
        source = cfg.model_name_or_path or "a new model from model_config"
        raise SettingsError(f"cannot build {source}: {_one_line(err)}") from err
    if cfg.max_seq_length > model.config.max_position_embeddings:
        raise SettingsError(
            f"max_seq_length {cfg.max_seq_length} is above the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}"
        )
    # a loaded checkpoint's (a new model's model_config was checked with the settings)
    if model.config.type_vocab_size < 2:
        raise SettingsError(
            f"{cfg.model_name_or_path} has type_vocab_size {model.config.type_vocab_size}: {TWO_TYPES}"
        )
    model.sop_weight = cfg.sop_weight
    model.config.gradient_equilibrium = bool(cfg.gradient_equilibrium)
    if cfg.trainable == "heads":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("cls.") or ".encoder.pooler." in name)
        if cfg.model_name_or_path is None:  # allowed (a test of the heads), but rarely what is meant
            notes.append("trainable=heads on a new model: the encoder stays at its random initialisation")
    num_layers = model.config.num_hidden_layers
    groups = cfg.resolved_exit_groups(num_layers)
    tokenizer = _load_tokenizer(cfg, model)
    accelerator = make_accelerator(cfg, grouped=groups is not None)
    main = accelerator.is_main_process
    if cfg.distributed == "fsdp" and accelerator.distributed_type.value != "FSDP":
        how = (
            f"running DDP ({accelerator.distributed_type.value})"
            if accelerator.num_processes > 1
            else "running one plain process"
        )
        notes.append(f"distributed=fsdp is not available here: {how}")
    untrained = cfg.untrained_exits(num_layers)
    if untrained:
        notes.append(
            f"warning: no exit group holds exit(s) {', '.join(map(str, untrained))}: their heads (and, above the "
            "highest exit trained, the encoder layers) are not trained"
        )
    world, rank = accelerator.num_processes, accelerator.process_index
    shards = cfg.num_data_shards or world
    rows_per_stream(shards, world, cfg.per_device_batch_size)  # checked before anything is read or written

    ckpt = find_checkpoint(out_dir, cfg.resume_from_checkpoint)
    check_output_dir(out_dir, ckpt)
    state: dict[str, Any] = {}
    if ckpt is not None:
        state = _read_json(ckpt, "trainer_state.json")
        if not isinstance(state.get("step"), int):
            raise SettingsError(f"checkpoint {ckpt}: trainer_state.json has no step")
        check_resume(cfg, ckpt, state, world, num_layers)
        if state["step"] >= cfg.max_steps:  # nothing to train: no logs rewritten, no evaluation repeated
            accelerator.print(
                f"{ckpt} is at step {state['step']} = max_steps: nothing to do (raise max_steps to train on)"
            )
            accelerator.end_training()
            return _summary(ckpt / "model", state["step"], main, {}, out_dir, None)

    if cfg.compile:
        _check_compiler(cfg, accelerator.device)
        # the model moves to the device in `prepare` below: its device is named here for dropout_masks: auto
        compile_regions(
            model, backend=cfg.compile_backend, dropout_masks=cfg.dropout_masks, device=accelerator.device
        )
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the scheduler is stepped once per update here (Accelerate's wrapper would step it once per process)
    accelerator.register_for_checkpointing(scheduler)
    raw_model = accelerator.unwrap_model(model)
    # the heads outside each group: their gradients are dropped before the optimiser step, so that no engine
    # (FSDP may hand unused sharded parameters a zero gradient) lets AdamW/LAMB move them
    idle_heads = {
        gi: [
            p
            for layer in range(num_layers)
            if layer not in g
            for p in raw_model.head_parameters(layer).values()
        ]
        for gi, g in enumerate(groups or [])
    }

    # from here on a process may find an error the others do not (its own data streams, their positions, its
    # RNG state file): they agree before anything is written, so the first process reports it in one line and
    # none waits in a collective for one that has left
    start_up_error: SettingsError | None = None
    try:
        sources = ", ".join([*cfg.train_files, *(str(h) for h in cfg.hub_datasets)])
        read = f"the training data ({sources})"
        with _reading(read):
            documents = load_documents(cfg.train_files, cfg.hub_datasets, cfg.text_column)
        max_width = raw_model.config.max_position_embeddings  # the padded width's cap
        data = PretrainingBatches(
            documents,
            tokenizer,
            cfg,
            cfg.per_device_batch_size,
            num_shards=shards,
            rank=rank,
            world_size=world,
            max_width=max_width,
        )
        evals = []
        if cfg.eval_files and (cfg.eval_steps or cfg.eval_examples):
            with _reading(f"the evaluation data ({', '.join(cfg.eval_files)})"):
                eval_docs = load_documents(cfg.eval_files, None, cfg.text_column)
                evals = eval_batches(
                    eval_docs,
                    tokenizer,
                    cfg,
                    cfg.eval_examples,
                    cfg.per_device_batch_size,
                    max_width=max_width,
                )

        start_step = 0
        if ckpt is not None:
            start_step = int(state["step"])
            _load_state(accelerator, ckpt)
            _follow_schedule(optimizer, scheduler)
            positions: dict[str, list[int]] = {}
            versions: set[int] = set()
            for f in sorted(ckpt.glob("data-rank*.json")):  # keyed by stream: any world size dividing them
                version, found = _data_positions(ckpt, f.name)
                versions.add(version)
                positions.update(found)
            missing = [s for s in data.streams if str(s) not in positions]
            if missing:
                raise SettingsError(
                    f"checkpoint {ckpt}: no data position for stream(s) {missing} (a data-rank*.json is missing): "
                    "it cannot resume where the data left off"
                )
            with _reading(read):
                notes.extend(check_data_version(cfg, ckpt, versions))
            data.load_state_dict(positions)
            notes.append(f"resumed from {ckpt} at step {start_step}")
        # the first step's batches now: an unreadable or empty corpus is reported before output_dir is written
        A = cfg.gradient_accumulation_steps
        first = None
        if start_step < cfg.max_steps:
            with _reading(read):
                first = [data.next_batch() for _ in range(A)]
    except SettingsError as err:
        start_up_error = err
    _agree_on_start_up(accelerator, start_up_error)

    logs = _Logs(cfg, num_layers, start_step, main)
    if main:
        (out_dir / "pretrain_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        for n in notes:
            accelerator.print(n)
        procs, precision = describe_engine(
            world, accelerator.distributed_type.value, f"{accelerator.mixed_precision}"
        )
        accelerator.print(
            f"pre-training: {procs}, {shards} data stream{'s' if shards != 1 else ''}, global batch "
            f"{cfg.per_device_batch_size * world * cfg.gradient_accumulation_steps}, groups "
            f"{[[i + 1 for i in g] for g in groups] if groups else 'none (every exit)'}, "
            f"{precision}, device {accelerator.device}"
        )

    # evaluation runs on every process (FSDP gathers parameters collectively); only the main one writes
    if evals and start_step == 0:
        logs.eval(0, evaluate(raw_model, evals, accelerator.device))

    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.max_steps,
        initial=start_step,
        disable=not (main and cfg.progress_bar),
        desc="pretrain",
        dynamic_ncols=True,
    )
    kill_after = int(os.environ.get("ELUE_PRETRAIN_KILL_AFTER_STEP", "0"))  # tests: die like kill -9
    model.train()
    t0 = time.perf_counter()
    step = start_step
    last_row: dict[str, Any] = {}
    steps_this_run = 0
    stopped_by = None
    device = accelerator.device
    # the logging window (the steps since the last log): per exit, the sum of its per-step mean losses and the
    # number of steps it was active; the summed total loss. Local sums over global counts, reduced at logging.
    win = torch.zeros(2, num_layers, device=device)
    win_active = [0] * num_layers
    win_loss = torch.zeros((), device=device)
    # each group's exits as an index on the device, made once: indexing `win` with a Python list would copy an
    # index from the host every step, and that copy makes the host wait for the GPU
    exit_index: dict[tuple[int, ...], torch.Tensor] = {}
    win_steps = 0

    def window_sums() -> (
        torch.Tensor
    ):  # (2L + 1,) on the CPU: per-exit MLM and SOP sums, total loss; all processes
        return accelerator.reduce(torch.cat([win.flatten(), win_loss.view(1)]), reduction="sum").cpu()

    saved_window = state.get("window") if ckpt is not None else None
    if isinstance(saved_window, dict):  # a checkpoint between two logging steps: the window goes on
        if main:  # the global sums, once: the other processes' shares start at 0 (they are summed at logging)
            sums = torch.tensor(saved_window["sums"], device=device)
            win.copy_(sums[:-1].view(2, num_layers))
            win_loss.copy_(sums[-1])
        win_active, win_steps = list(saved_window["active"]), int(saved_window["steps"])
    with StopRequest() as stop:  # SIGTERM / Ctrl-C: finish the step, save, stop
        while step < cfg.max_steps:
            layers = groups[step % len(groups)] if groups else list(range(num_layers))
            if first is not None:
                micro, first = first, None
            else:
                try:
                    with _reading(read):
                        micro = [data.next_batch() for _ in range(A)]
                except SettingsError as err:  # this process alone may have found it (its own streams)
                    err.mid_run_process = rank  # the command line reports it from whichever process it is
                    raise
            # counted on the host, copied without waiting for the GPU to finish the previous step
            counts = torch.tensor(
                [
                    float(sum(len(b["mlm_positions"]) for b in micro)),
                    float(sum(len(b["sop_labels"]) for b in micro)),
                ],
            ).to(device, non_blocking=True)
            tokens = torch.tensor(float(sum(int(b["attention_mask"].sum()) for b in micro)))
            tokens = tokens.to(device, non_blocking=True)
            counts = accelerator.reduce(counts, reduction="sum")
            n_mask, n_sop = counts[0].clamp(min=1), counts[1].clamp(min=1)
            mlm_sum = torch.zeros(len(layers), device=device)
            sop_sum = torch.zeros(len(layers), device=device)
            for i, b in enumerate(micro):
                b = batch_to_device(b, device)
                sync = nullcontext() if i == A - 1 else accelerator.no_sync(model)
                with sync:
                    out = model(**b, exit_layers=layers)
                    loss = (
                        out.mlm_loss_sums.sum() / n_mask + cfg.sop_weight * out.sop_loss_sums.sum() / n_sop
                    ) * world
                    accelerator.backward(loss)
                mlm_sum += out.mlm_loss_sums.detach().float()
                sop_sum += out.sop_loss_sums.detach().float()
            grad_norm = None
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            for p in idle_heads.get(step % len(groups), []) if groups else []:
                p.grad = None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_run += 1
            step_mlm, step_sop = mlm_sum / n_mask, sop_sum / n_sop  # this process's share of the global means
            index = exit_index.get(tuple(layers))
            if index is None:
                index = exit_index[tuple(layers)] = torch.tensor(layers, device=device)
            win[0].index_add_(0, index, step_mlm)
            win[1].index_add_(0, index, step_sop)
            win_loss += step_mlm.sum() + cfg.sop_weight * step_sop.sum()
            for layer in layers:
                win_active[layer] += 1
            win_steps += 1

            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                sums = window_sums()
                tokens = accelerator.reduce(tokens, reduction="sum")
                mlm, sop = sums[:num_layers].tolist(), sums[num_layers : 2 * num_layers].tolist()
                elapsed = time.perf_counter() - t0
                row: dict[str, Any] = {
                    "step": step,
                    "group": (step - 1) % len(groups) + 1 if groups else 0,
                    "lr": f"{lr:.6g}",
                    "loss": f"{float(sums[-1]) / win_steps:.6f}",
                    "grad_norm": "" if grad_norm is None else f"{float(grad_norm):.6f}",
                    "tokens": int(tokens),
                    "tokens_per_s": f"{_rate(float(tokens), elapsed, steps_this_run):.1f}",
                    "elapsed_s": f"{elapsed:.2f}",
                }
                for i in range(num_layers):  # each exit: the mean over the window's steps it was active in
                    n = win_active[i]
                    row[f"mlm_{i + 1}"] = f"{mlm[i] / n:.6f}" if n else ""
                    row[f"sop_{i + 1}"] = f"{sop[i] / n:.6f}" if n else ""
                win.zero_()
                win_loss.zero_()
                win_active = [0] * num_layers
                win_steps = 0
                logs.train(row)
                last_row = row
                bar.set_postfix(loss=row["loss"], group=row["group"])
            bar.update(1)

            if evals and cfg.eval_steps and step % cfg.eval_steps == 0:
                logs.eval(step, evaluate(raw_model, evals, device))
            stopping = cfg.stop_after_steps is not None and steps_this_run >= cfg.stop_after_steps
            if stop.agreed(accelerator):
                stopping = stopped_by = stop.requested or "SIGTERM"  # (another process's signal)
            if (cfg.save_steps and step % cfg.save_steps == 0) or step == cfg.max_steps or stopping:
                # saved between two logging steps: the window's sums, so a resume logs the same row
                window = None
                if win_steps:
                    window = {"sums": window_sums().tolist(), "active": win_active, "steps": win_steps}
                save_checkpoint(accelerator, model, tokenizer, data, cfg, step, window=window)
            if kill_after and step >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if stopping:
                break
    bar.close()
    if evals and step == cfg.max_steps and not (cfg.eval_steps and step % cfg.eval_steps == 0):
        logs.eval(step, evaluate(raw_model, evals, device))
    logs.close()
    accelerator.wait_for_everyone()
    final = out_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}" / "model"
    summary = _summary(final, step, main, last_row, out_dir, stopped_by)
    accelerator.end_training()
    return summary


def _summary(
    model_dir: Path, step: int, main: bool, last_log: dict, out_dir: Path, stopped_by
) -> dict[str, Any]:  # noqa: ANN001
    """What `pretrain` returns (the CLI prints it)."""
    return {
        "saved": model_dir.is_dir(),
        "step": step,
        "main": main,
        "last_log": last_log,
        "model_dir": str(model_dir),
        "output_dir": str(out_dir),
        "stopped_by": stopped_by,
    }


# settings a resumed run may change: how long it runs, what it logs and saves, and the engine (not the state);
# the batch split and the number of streams are compared as the global batch and the resolved stream count
CHANGEABLE_ON_RESUME = frozenset(
    {
        "max_steps",
        "stop_after_steps",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "progress_bar",
        "report_to",
        "output_dir",
        "resume_from_checkpoint",
        "eval_files",
        "eval_examples",
        "tokenize_batch_docs",
        "compile",
        "compile_backend",
        "dropout_masks",
        "mixed_precision",
        "cpu",
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "num_data_shards",
    }
)


def check_resume(
    cfg: PretrainConfig, ckpt: Path, state: dict[str, Any], world: int, num_layers: int | None = None
) -> None:
    """A resumed run keeps the checkpoint's settings except those in CHANGEABLE_ON_RESUME: one SettingsError
    lists every other difference (old -> new). `max_steps` may grow, never fall below the checkpoint's step."""
    step = int(state["step"])
    if cfg.max_steps < step:
        raise SettingsError(
            f"max_steps {cfg.max_steps} is below the step of the checkpoint to resume ({ckpt}, step {step}): "
            "raise max_steps, or pick a new output_dir to start afresh"
        )
    saved = state.get("settings")
    if saved is None:  # older checkpoints: the run's pretrain_config.json, if it is there
        path = ckpt.parent.parent / "pretrain_config.json"
        try:
            saved = json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            saved = None
    if not isinstance(saved, dict):
        return
    if isinstance(saved.get("train_files"), list):  # runs before paths were stored absolute
        saved = {**saved, "train_files": _absolute(saved["train_files"])}
    new = cfg.to_dict()
    diffs = [
        f"{k}: {saved.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(saved) | set(new))
        if k not in CHANGEABLE_ON_RESUME
        and saved.get(k) != new.get(k)
        and not (k == "exit_groups" and _same_groups(saved.get(k), new.get(k), num_layers))
    ]
    saved_world = int(state.get("world_size", 1))
    try:
        old_batch = saved["per_device_batch_size"] * saved_world * saved["gradient_accumulation_steps"]
        old_streams = saved.get("num_data_shards") or saved_world
    except (KeyError, TypeError):
        old_batch = old_streams = None
    new_batch = cfg.per_device_batch_size * world * cfg.gradient_accumulation_steps
    new_streams = cfg.num_data_shards or world
    if old_batch is not None and old_batch != new_batch:
        diffs.append(
            f"global batch (per_device_batch_size x processes x accumulation): {old_batch} -> {new_batch}"
        )
    if old_streams is not None and old_streams != new_streams:
        diffs.append(f"data streams (num_data_shards): {old_streams} -> {new_streams}")
    if diffs:
        raise SettingsError(
            f"resuming from {ckpt} with other settings than it was trained with: {'; '.join(diffs)}. "
            "Only these may change on resume: " + ", ".join(sorted(CHANGEABLE_ON_RESUME - {
                "per_device_batch_size", "gradient_accumulation_steps", "num_data_shards"}))
            + " (and the batch split, keeping the global batch); start a new output_dir for other settings"
        )  # fmt: skip


def _same_groups(old: Any, new: Any, num_layers: int | None) -> bool:
    """Two spellings of the same exit groups (null / none / [] / false; default / its lists; a group's layers in
    another order): the same training, so a resume may spell them either way."""
    if num_layers is None:
        return False
    try:
        return PretrainConfig(exit_groups=old).resolved_exit_groups(num_layers) == PretrainConfig(
            exit_groups=new
        ).resolved_exit_groups(num_layers)
    except SettingsError:
        return False


def _absolute(paths: list[str]) -> list[str]:
    return [str(Path(p).expanduser().resolve()) for p in paths]


def _one_line(err: BaseException) -> str:
    """The first line of an error's message (with its type, unless a plain ValueError)."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return (first if type(err) is ValueError else f"{type(err).__name__}: {first}")[:400]


def _read_json(ckpt: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads((ckpt / name).read_text())
    except (OSError, ValueError) as err:
        raise SettingsError(f"checkpoint {ckpt}: {name} cannot be read ({_one_line(err)})") from err
    if not isinstance(value, dict):
        raise SettingsError(f"checkpoint {ckpt}: {name} is not a JSON object")
    return value


def _data_positions(ckpt: Path, name: str) -> tuple[int, dict[str, list[int]]]:
    """A checkpoint's data-rank<r>.json: its data version (1 where none is saved) and, per stream ("0", "1",
    ...), its position [epoch, documents, examples]."""
    positions = _read_json(ckpt, name)
    version = positions.pop("data_version", 1)
    if type(version) is not int or version < 1:
        raise SettingsError(f"checkpoint {ckpt}: {name}: data_version {version!r} is not a version number")
    for stream, pos in positions.items():
        counts = isinstance(pos, list) and len(pos) == 3
        if not (stream.isdigit() and counts and all(type(n) is int and n >= 0 for n in pos)):
            raise SettingsError(
                f"checkpoint {ckpt}: {name}: stream {stream}'s position {pos!r} is not [epoch, documents, "
                "examples] (three counts)"
            )
    return version, positions


def check_data_version(cfg: PretrainConfig, ckpt: Path, versions: set[int]) -> list[str]:
    """A checkpoint's data positions count documents as the data pipeline of their version did (data.py,
    DATA_VERSION). One of another version would resume at another place in the data, silently: refused, except
    a version-1 position on a corpus that versions 1 and 2 split into the same documents (no local file with a
    line of only spaces or tabs inside a paragraph; hub corpora did not change), accepted with a note."""
    from .data import DATA_VERSION, documents_split_differently

    newer = sorted(v for v in versions if v > DATA_VERSION)
    if newer:
        raise SettingsError(
            f"checkpoint {ckpt}: its data positions are of data version {newer[-1]}, newer than this code's "
            f"{DATA_VERSION}: resume it with the elue that saved it"
        )
    old = sorted(v for v in versions if v < DATA_VERSION)
    if not old:
        return []
    # version 1 is the only older one: it did not end a document at a line of only spaces or tabs
    changed = documents_split_differently(cfg.train_files) if cfg.train_files else None
    if changed is not None:
        raise SettingsError(
            f"checkpoint {ckpt}: its data positions are of data version 1, from before a line of only spaces or "
            f"tabs ended a document (version {DATA_VERSION}), and {changed} has such lines: its documents are "
            "counted otherwise now, so the run would go on at another place in the data. Finish the run with the "
            f"elue that started it, or start a new output_dir from its weights (model_name_or_path={ckpt / 'model'})"
        )
    return [
        f"checkpoint {ckpt}: data positions of data version 1 (before lines of only spaces or tabs ended "
        "documents): no training file has such a line, so they point at the same place in the data"
    ]


def _load_state(accelerator, ckpt: Path) -> None:
    """accelerator.load_state, with a damaged file named in one line (found by loading the files one by one,
    only after a failure)."""
    state_dir = ckpt / "state"
    try:
        accelerator.load_state(str(state_dir))
    except Exception as err:  # noqa: BLE001 (any damage: truncated pickles, bad safetensors headers...)
        culprit = state_dir
        for f in sorted(state_dir.iterdir()) if state_dir.is_dir() else []:
            try:
                if f.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    load_file(f)
                elif f.suffix in (".bin", ".pt", ".pth", ".pkl"):
                    torch.load(f, map_location="cpu", weights_only=False)
            except Exception:  # noqa: BLE001
                culprit = f
                break
        raise SettingsError(f"checkpoint {ckpt}: {culprit} cannot be loaded ({_one_line(err)})") from err


def _agree_on_start_up(accelerator, error: SettingsError | None) -> None:  # noqa: ANN001
    """Every process raises the start-up error of the lowest-numbered process that found one (the CLI prints the
    first process's), or none raises: an error one process alone found stopped only that one."""
    if accelerator.num_processes == 1:
        if error is not None:
            raise error
        return
    from accelerate.utils import gather_object

    found = gather_object([None if error is None else str(error)])
    first = next((message for message in found if message is not None), None)
    if first is None:
        return
    if error is not None and str(error) == first:
        raise error
    raise SettingsError(first) from error


def _follow_schedule(optimizer, scheduler) -> None:
    """After a resume, the learning rate of the resumed step under this run's schedule (a larger max_steps
    changes the schedule: the restored lr would be the old schedule's, 0 at its end)."""
    fns = getattr(scheduler, "lr_lambdas", None)
    if not fns:
        return
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, fns, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


class _reading:
    """Errors reading a source (missing or unreachable files, bytes that are not UTF-8, an empty corpus)
    become a SettingsError naming it."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if isinstance(err, NoUsableDocument):  # which corpus: the training or the evaluation data
            raise SettingsError(f"{self.what}: {err}") from err
        if err is None or isinstance(err, SettingsError):
            return False
        if isinstance(err, (OSError, UnicodeError)):
            raise SettingsError(f"cannot read {self.what}: {_one_line(err)}") from err
        return False


def _check_folder_path(out_dir: Path) -> None:
    """output_dir, or a folder above it, is not a file: found here, not when the logs are first written after
    the whole start-up (a FileExistsError traceback)."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise SettingsError(f"output_dir {out_dir}: {folder} is a file, not a folder")
            return


def _check_local_path(key: str, path: str | None) -> None:
    """A setting that cannot be a hub id names a local folder: say so when there is none (transformers would
    report a bad repo id)."""
    from ..hub_ids import could_be_hub_id

    if path is not None and not could_be_hub_id(path) and not Path(path).expanduser().is_dir():
        raise SettingsError(f"{key}: no such folder {path}")


def _load_tokenizer(cfg: PretrainConfig, model):
    from transformers import AutoTokenizer

    tok_path = cfg.tokenizer_name_or_path or cfg.model_name_or_path
    if tok_path is None:
        raise SettingsError("tokenizer_name_or_path is needed for a new model")
    _check_local_path("tokenizer_name_or_path", tok_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    except (OSError, ValueError) as err:  # not a folder with tokenizer files, and no hub (offline, bad id)
        raise SettingsError(f"cannot load the tokenizer {tok_path!r}: {_one_line(err)}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise SettingsError(f"{tok_path}: a fast tokenizer is needed")
    # an SOP pair is [CLS] A [SEP] B [SEP], masked with [MASK] and padded with [PAD]: without one of them
    # the first batch would fail deep in numpy
    missing = [
        n
        for n in ("cls_token", "sep_token", "mask_token", "pad_token")
        if getattr(tokenizer, f"{n}_id") is None
    ]
    if missing:
        raise SettingsError(
            f"tokenizer {tok_path} has no {', '.join(missing)}: pre-training needs a BERT-style tokenizer "
            "([CLS], [SEP], [MASK] and [PAD] tokens)"
        )
    if len(tokenizer) > model.config.vocab_size:
        raise SettingsError(
            f"tokenizer has {len(tokenizer)} tokens, model vocab_size {model.config.vocab_size}"
        )
    return tokenizer


def _quiet_transformers_bars() -> None:
    """progress_bar false: no "Loading weights" bar, nor "Writing model shards" bars on every save, from
    transformers either."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _rate(tokens: float, elapsed: float, steps: int) -> float:
    return tokens / max(elapsed / max(steps, 1), 1e-9)


def _check_compiler(cfg: PretrainConfig, device) -> None:
    """inductor builds C++ for the CPU: say so up front instead of failing deep inside the first step."""
    if cfg.compile_backend == "inductor" and device.type == "cpu":
        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            raise SettingsError(
                "compile: true on the CPU needs a C++ compiler for torch's inductor backend (none on PATH): "
                "install g++, or set compile_backend: eager, or compile: false"
            )


def save_checkpoint(
    accelerator,  # noqa: ANN001
    model,  # noqa: ANN001
    tokenizer,  # noqa: ANN001
    data,  # noqa: ANN001
    cfg: PretrainConfig,
    step: int,
    window: dict[str, Any] | None = None,
) -> Path:
    """A complete checkpoint of `step` (marked COMPLETE once every file is written). `window`: the logging
    window's global sums when the step is not a logging step."""
    root = Path(cfg.output_dir) / "checkpoints"
    path = root / f"{CHECKPOINT_PREFIX}{step:07d}"
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path / "state"))
    (path / f"data-rank{accelerator.process_index}.json").write_text(json.dumps(data.state_dict()))
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(path / "model", state_dict=state_dict)
        tokenizer.save_pretrained(path / "model")
        (path / "trainer_state.json").write_text(
            json.dumps(
                {
                    "step": step,
                    "world_size": accelerator.num_processes,
                    "settings": cfg.to_dict(),
                    "window": window,
                }
            )
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / COMPLETE_MARKER).write_text(str(step))
        if cfg.save_total_limit:  # the oldest steps go; never the checkpoint just saved
            done = [p for p in complete_checkpoints(Path(cfg.output_dir)) if p != path]
            for old in done[: max(len(done) - cfg.save_total_limit + 1, 0)]:
                shutil.rmtree(old, ignore_errors=True)
        # what a run killed while saving left behind, at an earlier step than this complete one: never resumed
        # from, and no save of this run will replace it (a later step's incomplete folder is left: the run may
        # still save that step, which replaces it)
        for old in incomplete_checkpoints(Path(cfg.output_dir)):
            if checkpoint_step(old) < step:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


__all__ = [
    "check_data_version",
    "check_output_dir",
    "complete_checkpoints",
    "evaluate",
    "find_checkpoint",
    "incomplete_checkpoints",
    "pretrain",
    "save_checkpoint",
]
