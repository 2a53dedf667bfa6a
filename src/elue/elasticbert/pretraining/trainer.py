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

Checkpoints (checkpoints.py): `output_dir/checkpoints/step-XXXXXXX/`, with the model in Hugging Face format under
`model/`. `resume_from_checkpoint: latest` continues from the newest complete one; the per-step log is cut back
to that step, so a killed and resumed run writes the same log as an uninterrupted one.

Logs (logs.py): `train_log.csv` (per logging step), `eval_log.csv` (per exit, on a fixed held-out set),
TensorBoard events with `report_to: [tensorboard]`; a tqdm progress bar on the main process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..accelerate_state import forget_single_process_state, hold_until_exit
from ..stopping import StopRequest
from .checkpoints import (
    CHECKPOINT_PREFIX,
    check_data_version,
    check_engine,
    check_output_dir,
    check_resume,
    find_checkpoint,
    load_state,
    not_a_model_folder,
    read_data_positions,
    read_trainer_state,
    save_checkpoint,
)
from .config import (
    TWO_TYPES,
    NoUsableDocument,
    PretrainConfig,
    SettingsError,
    absolute_hub_files,
    absolute_paths,
    one_line,
)
from .logs import Logs, LossWindow, eval_line


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

        # no wrapping by Accelerate: the trainer shards the model itself (fsdp.py says why)
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="no_wrap", reshard_after_forward=True
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

    from .data import rows_per_stream
    from .fsdp import fully_shard_with_plugin
    from .modeling_pretraining import compile_regions
    from .optim import build_optimizer, build_scheduler, fill_lazy_state

    _check_settings(cfg)
    out_dir = Path(cfg.output_dir)
    set_seed(cfg.seed)
    if not cfg.progress_bar:  # before the model loads: its "Loading weights" bar too
        _quiet_transformers_bars()
    model, notes = _build_model(cfg)
    num_layers = model.config.num_hidden_layers
    groups = cfg.resolved_exit_groups(num_layers)
    tokenizer = _load_tokenizer(cfg, model)
    accelerator = make_accelerator(cfg, grouped=groups is not None)
    main = accelerator.is_main_process
    notes.extend(_setup_notes(cfg, accelerator, num_layers))
    world, rank = accelerator.num_processes, accelerator.process_index
    shards = cfg.num_data_shards or world
    rows_per_stream(shards, world, cfg.per_device_batch_size)  # checked before anything is read or written

    fsdp = accelerator.distributed_type.value == "FSDP"
    ckpt, ckpt_error = None, None
    try:
        ckpt = find_checkpoint(out_dir, cfg.resume_from_checkpoint)
    except SettingsError as e:  # said in the agreement below: a process leaving alone left the others waiting
        ckpt_error = e
    _agree_on_checkpoint(accelerator, out_dir, ckpt, error=ckpt_error)
    check_output_dir(out_dir, ckpt)
    state: dict[str, Any] = {}
    if ckpt is not None:
        state = read_trainer_state(ckpt)
        check_resume(cfg, ckpt, state, world, num_layers)
        check_engine(ckpt, fsdp, _engine(accelerator))
        if state["step"] >= cfg.max_steps:  # nothing to train: no logs rewritten, no evaluation repeated
            accelerator.print(
                f"{ckpt} is at step {state['step']} = max_steps: nothing to do (raise max_steps to train on)"
            )
            accelerator.end_training()
            return _summary(ckpt / "model", state["step"], main, {}, out_dir, None, trained=False)

    if cfg.compile:
        _check_compiler(cfg, accelerator.device)
        # the model moves to the device in `prepare` below: its device is named here for dropout_masks: auto
        compile_regions(
            model, backend=cfg.compile_backend, dropout_masks=cfg.dropout_masks, device=accelerator.device
        )
    if fsdp:
        # our units, not Accelerate's carving (see fsdp.py); before the optimizer, which then holds the shards
        fully_shard_with_plugin(model, accelerator.state.fsdp_plugin)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the scheduler is stepped once per update here (Accelerate's wrapper would step it once per process)
    accelerator.register_for_checkpointing(scheduler)
    raw_model = accelerator.unwrap_model(model)
    idle_heads = _idle_heads(raw_model, groups, num_layers)

    # from here on a process may find an error the others do not (its own data streams, their positions, its
    # RNG state file): they agree before anything is written, so the first process reports it in one line and
    # none waits in a collective for one that has left
    start_up_error: SettingsError | None = None
    try:
        data, evals, read = _load_data(
            cfg, tokenizer, raw_model.config.max_position_embeddings, shards, rank, world
        )
        start_step = 0
        if ckpt is not None:
            start_step = int(state["step"])
            notes.extend(_resume(accelerator, ckpt, cfg, optimizer, scheduler, data, read))
            notes.append(f"resumed from {ckpt} at step {start_step}")
        # the first step's batches now: an unreadable or empty corpus is reported before output_dir is written
        A = cfg.gradient_accumulation_steps
        first = _next_batches(data, read, A) if start_step < cfg.max_steps else None
    except SettingsError as err:
        start_up_error = err
    _agree_on_start_up(accelerator, start_up_error)

    logs = Logs(cfg, num_layers, start_step, main)
    if main:
        (out_dir / "pretrain_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        for n in notes:
            accelerator.print(n)
        accelerator.print(_start_line(cfg, accelerator, shards, groups))

    # evaluation runs on every process (FSDP gathers parameters collectively); only the main one writes
    if evals and start_step == 0:
        rows = evaluate(raw_model, evals, accelerator.device)
        logs.eval(0, rows)
        accelerator.print(eval_line(0, rows))  # (the main process prints)

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
    window = LossWindow(num_layers, device, state.get("window") if ckpt is not None else None, main)
    with StopRequest() as stop:  # SIGTERM / Ctrl-C: finish the step, save, stop
        while step < cfg.max_steps:
            layers = groups[step % len(groups)] if groups else list(range(num_layers))
            if first is not None:
                micro, first = first, None
            else:
                try:
                    micro = _next_batches(data, read, A)
                except SettingsError as err:  # this process alone may have found it (its own streams)
                    err.mid_run_process = rank  # the command line reports it from whichever process it is
                    raise
            idle = idle_heads.get(step % len(groups), []) if groups else []
            step_mlm, step_sop, tokens, grad_norm, lr = _train_step(
                accelerator, model, optimizer, scheduler, cfg, micro, layers, idle
            )
            step += 1
            steps_this_run += 1
            window.add(layers, step_mlm, step_sop, cfg.sop_weight)

            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                sums = window.reduced(accelerator)
                tokens = accelerator.reduce(tokens, reduction="sum")
                elapsed = time.perf_counter() - t0
                row: dict[str, Any] = {
                    "step": step,
                    "group": (step - 1) % len(groups) + 1 if groups else 0,
                    "lr": f"{lr:.6g}",
                    "loss": f"{float(sums[-1]) / window.steps:.6f}",
                    "grad_norm": "" if grad_norm is None else f"{float(grad_norm):.6f}",
                    "tokens": int(tokens),
                    "tokens_per_s": f"{_rate(float(tokens), elapsed, steps_this_run):.1f}",
                    "elapsed_s": f"{elapsed:.2f}",
                    **window.exit_means(sums),
                }
                window.reset()
                logs.train(row)
                last_row = row
                bar.set_postfix(loss=row["loss"], group=row["group"])
            bar.update(1)

            # the last step's evaluation too, before its checkpoint: a run killed once that is saved would
            # resume as "nothing to do" and never write it
            if evals and ((cfg.eval_steps and step % cfg.eval_steps == 0) or step == cfg.max_steps):
                rows = evaluate(raw_model, evals, device)
                logs.eval(step, rows)
                if main:
                    bar.write(eval_line(step, rows))  # above the bar, which stays
            stopping = cfg.stop_after_steps is not None and steps_this_run >= cfg.stop_after_steps
            if stop.agreed(accelerator):
                stopping = stopped_by = stop.requested or "SIGTERM"  # (another process's signal)
            if (cfg.save_steps and step % cfg.save_steps == 0) or step == cfg.max_steps or stopping:
                if fsdp:  # every parameter's state saved, or the checkpoint does not load (see there)
                    fill_lazy_state(optimizer.optimizer)
                # saved between two logging steps: the window's sums, so a resume logs the same row
                save_checkpoint(
                    accelerator, model, tokenizer, data, cfg, step, window=window.state(accelerator)
                )
            if kill_after and step >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if stopping:
                break
    bar.close()
    logs.close()
    accelerator.wait_for_everyone()
    final = out_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}" / "model"
    summary = _summary(final, step, main, last_row, out_dir, stopped_by)
    accelerator.end_training()
    hold_until_exit(accelerator, model, optimizer)  # (freed here, they could hang the process: see there)
    return summary


def _setup_notes(cfg: PretrainConfig, accelerator, num_layers: int) -> list[str]:  # noqa: ANN001
    """The start-up notes on the engine (FSDP asked for, not available), the schedule and untrained exits."""
    from .optim import schedule_notes

    notes = []
    if cfg.distributed == "fsdp" and accelerator.distributed_type.value != "FSDP":
        notes.append(f"distributed=fsdp is not available here: running {_engine(accelerator)}")
    notes.extend(schedule_notes(cfg))
    untrained = cfg.untrained_exits(num_layers)
    if untrained:
        notes.append(
            f"warning: no exit group holds exit(s) {', '.join(map(str, untrained))}: their heads (and, above the "
            "highest exit trained, the encoder layers) are not trained"
        )
    return notes


def _engine(accelerator) -> str:  # noqa: ANN001
    """What a run without FSDP runs, in words: "one plain process" or "DDP (MULTI_GPU)"."""
    if accelerator.num_processes > 1:
        return f"DDP ({accelerator.distributed_type.value})"
    return "one plain process"


def _start_line(cfg: PretrainConfig, accelerator, shards: int, groups) -> str:  # noqa: ANN001
    """The line that opens a run: processes, data streams, global batch, exit groups, precision, device."""
    world = accelerator.num_processes
    procs, precision = describe_engine(
        world, accelerator.distributed_type.value, f"{accelerator.mixed_precision}"
    )
    return (
        f"pre-training: {procs}, {shards} data stream{'s' if shards != 1 else ''}, global batch "
        f"{cfg.per_device_batch_size * world * cfg.gradient_accumulation_steps}, groups "
        f"{[[i + 1 for i in g] for g in groups] if groups else 'none (every exit)'}, "
        f"{precision}, device {accelerator.device}"
    )


def _idle_heads(raw_model, groups, num_layers: int) -> dict[int, list[torch.nn.Parameter]]:  # noqa: ANN001
    """The heads outside each group (by group index): their gradients are dropped before the optimiser step, so
    that no engine (FSDP may hand unused sharded parameters a zero gradient) lets AdamW/LAMB move them."""
    return {
        gi: [
            p
            for layer in range(num_layers)
            if layer not in g
            for p in raw_model.head_parameters(layer).values()
        ]
        for gi, g in enumerate(groups or [])
    }


def _next_batches(data, read: str, count: int) -> list:  # noqa: ANN001
    """The next `count` micro-batches of this process; a corpus error becomes a SettingsError naming `read`."""
    with _reading(read):
        return [data.next_batch() for _ in range(count)]


def _check_settings(cfg: PretrainConfig) -> None:
    """The settings' types and files; paths made absolute and `~` expanded (in place)."""
    cfg.check_types()
    cfg.check_files()
    # absolute paths: a resume from another working directory, or spelling the path another way, is the same data
    cfg.train_files, cfg.eval_files = absolute_paths(cfg.train_files), absolute_paths(cfg.eval_files)
    cfg.hub_datasets = absolute_hub_files(cfg.hub_datasets)  # local builders' data_files the same way
    # `~` is the home folder in the other paths too (a literal `~` folder, or a bad hub id, otherwise)
    for key in ("output_dir", "resume_from_checkpoint", "model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(cfg, key)
        if isinstance(value, str) and value.startswith("~"):
            setattr(cfg, key, str(Path(value).expanduser()))
    _check_folder_path(Path(cfg.output_dir))
    if cfg.mixed_precision == "fp16" and (cfg.cpu or not torch.cuda.is_available()):
        raise SettingsError("mixed_precision fp16 needs a GPU; on the CPU use bf16 (autocast) or no")


def _build_model(cfg: PretrainConfig):
    """The model to pre-train (loaded, or new from model_config), checked against the settings and set up
    for them (SOP weight, gradient equilibrium, trainable parameters); and the notes to print at start."""
    from .modeling_pretraining import load_pretraining_model

    _check_local_path("model_name_or_path", cfg.model_name_or_path)
    if cfg.model_name_or_path is not None:  # transformers: "Unrecognized model ... no `model_type` key"
        what = not_a_model_folder(Path(cfg.model_name_or_path))
        if what is not None:
            raise SettingsError(f"model_name_or_path: {what}")
    try:
        model, notes = load_pretraining_model(cfg.model_name_or_path, cfg.model_config)
    except (OSError, ValueError, RuntimeError) as err:  # a missing checkpoint, inconsistent sizes
        source = cfg.model_name_or_path or "a new model from model_config"
        raise SettingsError(f"cannot build {source}: {one_line(err)}") from err
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
    return model, notes


def _load_data(cfg: PretrainConfig, tokenizer, max_width: int, shards: int, rank: int, world: int):  # noqa: ANN001
    """This process's training batches, the fixed evaluation batches (a list, empty when there is no evaluation),
    and the words that name the training data in errors. `max_width`: the padded width's cap."""
    from .data import PretrainingBatches, eval_batches, load_documents

    sources = ", ".join([*cfg.train_files, *(str(h) for h in cfg.hub_datasets)])
    read = f"the training data ({sources})"
    with _reading(read):
        documents = load_documents(cfg.train_files, cfg.hub_datasets, cfg.text_column)
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
    return data, evals, read


def _resume(accelerator, ckpt: Path, cfg: PretrainConfig, optimizer, scheduler, data, read: str) -> list[str]:  # noqa: ANN001
    """The checkpoint's state restored (model, optimiser, scheduler, RNG states; the learning rate of this run's
    schedule) and every data stream's position; the notes to print."""
    load_state(accelerator, ckpt)
    _follow_schedule(optimizer, scheduler)
    versions, positions = read_data_positions(ckpt, data.streams)
    with _reading(read):
        notes = check_data_version(cfg, ckpt, versions, data.num_shards)
    data.load_state_dict(positions)
    return notes


def _train_step(accelerator, model, optimizer, scheduler, cfg: PretrainConfig, micro, layers, idle):  # noqa: ANN001
    """One optimiser update on the micro-batches `micro`, training the exits in `layers`; `idle`: the heads whose
    gradients are dropped. Returns this process's share of the step's per-exit mean MLM and SOP losses, the
    number of tokens (this process's, on the device), the gradient norm (None without clipping) and the lr."""
    device = accelerator.device
    A = len(micro)
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
    world = accelerator.num_processes
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
    for p in idle:
        p.grad = None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return mlm_sum / n_mask, sop_sum / n_sop, tokens, grad_norm, lr


def _summary(
    model_dir: Path, step: int, main: bool, last_log: dict, out_dir: Path, stopped_by, trained: bool = True
) -> dict[str, Any]:  # noqa: ANN001
    """What `pretrain` returns (the CLI prints it). `trained`: False when the run had nothing to do."""
    return {
        "trained": trained,
        "saved": model_dir.is_dir(),
        "step": step,
        "main": main,
        "last_log": last_log,
        "model_dir": str(model_dir),
        "output_dir": str(out_dir),
        "stopped_by": stopped_by,
    }


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


def _agree_on_checkpoint(  # noqa: ANN001
    accelerator, out_dir: Path, ckpt: Path | None, error: SettingsError | None = None
) -> None:
    """Every process resumes from the same checkpoint, or none does. On several nodes whose `output_dir` is each
    node's own disk, only the first node's copy of a checkpoint is complete (the first process writes COMPLETE):
    the other nodes would start afresh beside it, their weights never loaded, and hang when the first ends.
    `error`: this process could not find the checkpoint it was given (e.g. a path on one node's disk only); every
    process raises the first such error, so none is left waiting for one that has gone."""
    if accelerator.num_processes == 1:
        if error is not None:
            raise error
        return
    from accelerate.utils import gather_object

    answers = gather_object([(None if error is None else str(error), None if ckpt is None else ckpt.name)])
    first_error = next((message for message, _ in answers if message is not None), None)
    if first_error is not None:
        if error is not None and str(error) == first_error:
            raise error
        raise SettingsError(first_error) from error
    found = [name for _, name in answers]
    if len(set(found)) == 1:
        return
    first = {name: found.index(name) for name in found}  # each answer, with the first process giving it
    seen = ", ".join(
        f"process {rank}: {name or 'none'}" for name, rank in sorted(first.items(), key=lambda x: x[1])
    )
    raise SettingsError(
        f"the processes do not find the same checkpoint to resume in {out_dir} ({seen}): output_dir must be "
        "on a file system every node shares (each process writes its own part of a checkpoint there)"
    )


def _follow_schedule(optimizer, scheduler) -> None:
    """After a resume, the learning rate of the resumed step under this run's schedule (a larger max_steps
    changes the schedule: the restored lr would be the old schedule's, 0 at its end)."""
    fns = getattr(scheduler, "lr_lambdas", None)
    if not fns:
        return
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, fns, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _source_errors() -> tuple[type[BaseException], ...]:
    """What the `datasets` builders raise on a damaged source file, besides OSError and UnicodeError: pyarrow's
    errors (a JSON Lines record cut short, a damaged Parquet file), pandas' CSV parser's, datasets' own."""
    kinds: list[type[BaseException]] = [OSError, UnicodeError]
    try:
        from pyarrow import ArrowException

        kinds.append(ArrowException)
    except ImportError:
        pass
    try:
        from pandas.errors import ParserError

        kinds.append(ParserError)
    except ImportError:
        pass
    try:
        from datasets.exceptions import DatasetGenerationError

        kinds.append(DatasetGenerationError)
    except ImportError:
        pass
    return tuple(kinds)


class _reading:
    """Errors reading a source (missing or unreachable files, bytes that are not UTF-8, a damaged record of a hub
    source's file, an empty corpus) become a SettingsError naming it."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if isinstance(err, NoUsableDocument):  # which corpus: the training or the evaluation data
            raise SettingsError(f"{self.what}: {err}") from err
        if err is None or isinstance(err, SettingsError):
            return False
        if isinstance(err, _source_errors()):
            raise SettingsError(f"cannot read {self.what}: {one_line(err)}") from err
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
        raise SettingsError(f"cannot load the tokenizer {tok_path!r}: {one_line(err)}") from err
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


__all__ = ["batch_to_device", "describe_engine", "evaluate", "make_accelerator", "pretrain"]
