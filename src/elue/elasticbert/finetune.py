"""Fine-tune ElasticBERT on an ELUE task (ELUE-layout folder or hub dataset) or a GLUE task.

Two ways to train (spec §7):
- **static**: the first k layers and one exit (``num_hidden_layers=k, num_output_layers=1``);
- **joint**: an exit on every layer (or the top ``num_output_layers``), trained with the unweighted
  sum of per-exit losses; gradient equilibrium (the model's config flag) is on by default.

AdamW with linear warm-up and decay, evaluation on dev every epoch (or every ``eval_every`` steps),
the best checkpoint kept in ``OUTPUT/best`` (model, tokenizer, ``finetune.json``), early stopping
after ``early_stopping_patience`` evaluations without improvement, and a resumable ``OUTPUT/last``
(model, optimizer, scheduler, step state) written at each evaluation (each folder whole or not at all: written
beside it, then swapped in). Runs on CPU or GPU through
Accelerate. The fast tokenizer with dynamic padding; ``max_length`` truncates (IMDb: 512). The task data
(task facts, splits, tokenization, batching) is in `task_data`, the options in `finetune_config`, the
model and tokenizer loading and their checks in `finetune_model`, the run folder (saves, resume, its checks)
in `finetune_checkpoints`.

Output folder:
    OUTPUT/best/        config.json, model weights, tokenizer files, finetune.json (dev metrics per exit)
    OUTPUT/last/        config.json, model weights, tokenizer files (no finetune.json) + optimizer.pt,
                        scheduler.pt, rng.pt, scaler.pt (fp16), trainer_state.json (with the data's digest)
    OUTPUT/log.jsonl    one line per evaluation
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .accelerate_state import forget_single_process_state, hold_until_exit
from .finetune_checkpoints import (
    BEST_DIR,
    INFO_FILE,
    LAST_DIR,
    LOG_FILE,
    STATE_FILE,
    TrainerState,
    _jsonable,
    _recover_saves,
    _replace_dir,
    _restore_last,
    _rng_state,
    _save_last,
    _save_model,
    check_output_is_not_the_model,
    check_resume,
    check_same_data,
    data_fingerprint,
    prepare_output,
)
from .finetune_config import FinetuneConfig
from .finetune_model import (
    _warn_untrained_pooler,
    check_checkpoint_dir,
    exit_layers,
    load_model,
    load_tokenizer,
    model_config,
)
from .stopping import StopRequest
from .task_data import Rows, TaskSpec, cut_note, load_split, make_collate, task_spec, tokenize

# --------------------------------------------------------------------------------------------------
# model outputs and evaluation


def exit_logits(outputs: Any) -> list[torch.Tensor]:
    """Per-exit logits [B, C] from whatever the model returns (list/tuple, stacked tensor, .logits)."""
    logits = outputs
    for key in ("exit_logits", "logits"):
        value = outputs.get(key) if isinstance(outputs, dict) else getattr(outputs, key, None)
        if value is not None:
            logits = value
            break
    if isinstance(logits, torch.Tensor):
        if logits.dim() == 3:
            return list(logits.unbind(0))
        return [logits]
    return [t for t in logits]


def per_exit_loss(logits: list[torch.Tensor], labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Unweighted sum of per-exit losses (cross-entropy, or MSE for regression)."""
    total = None
    for lg in logits:
        if regression:
            loss = torch.nn.functional.mse_loss(lg.view(-1).float(), labels.view(-1).float())
        else:
            loss = torch.nn.functional.cross_entropy(lg.float(), labels.view(-1))
        total = loss if total is None else total + loss
    return total


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k in ("input_ids", "token_type_ids", "attention_mask")}


@torch.no_grad()
def predict_all_exits(
    model, rows: Sequence[dict], collate, batch_size: int, device, progress: bool = False, desc: str = "eval"
):
    """Logits of every exit for every row: array [E, N, C], rows in input order.

    Rows are batched by length (least padding) and put back in order.
    """
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    chunks: list[np.ndarray] = []
    it = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=desc, leave=False, unit="batch")
    for start in it:
        idx = order[start : start + batch_size]
        batch = collate([{k: v for k, v in rows[i].items() if k != "labels"} for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = exit_logits(model(**model_inputs(batch)))
        chunks.append(np.stack([lg.float().cpu().numpy() for lg in out], axis=0))
    stacked = np.concatenate(chunks, axis=1) if chunks else np.zeros((0, 0, 0))
    result = np.empty_like(stacked)
    result[:, np.asarray(order, dtype=np.int64), :] = stacked
    return result


def logits_to_pred(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits[..., 0] if regression else logits.argmax(-1)


def evaluate(model, rows, labels, spec: TaskSpec, collate, batch_size, device, progress=False) -> dict:
    """Dev metrics of every exit: {"exits": {layer: metrics}, "last": perf, "mean": perf}."""
    logits = predict_all_exits(model, rows, collate, batch_size, device, progress)
    layers = exit_layers(_unwrap(model).config)
    per_exit = {}
    for e, layer in enumerate(layers):
        per_exit[layer] = spec.metric(np.asarray(labels), logits_to_pred(logits[e], spec.is_regression))
    perfs = [m["performance"] for m in per_exit.values()]
    # exits whose outputs are NaN or infinite (a diverged run): their metric is not the model's (argmax reads
    # NaN as class 0, and a correlation with NaN counts as 0)
    nonfinite = [layer for e, layer in enumerate(layers) if not np.isfinite(logits[e]).all()]
    return {"exits": per_exit, "last": perfs[-1], "mean": float(np.mean(perfs)), "nonfinite": nonfinite}


class TrainingDiverged(ValueError):
    """The model's dev outputs became NaN or infinite: nothing of that step is saved."""


def _unwrap(model):
    return getattr(model, "module", model)


# --------------------------------------------------------------------------------------------------
# training


def _silent(_message: str) -> None:
    pass


def _sample(ds, limit: int | None, seed: int):  # noqa: ANN001, ANN202
    """`limit` rows drawn at random (seeded, in file order), not the first ones: ELUE's SST-2 files are nearly
    sorted by label (300 of the first 320 training rows are positive), so a quick run on the first rows learnt
    one class and its dev score said nothing."""
    if limit is None or limit >= len(ds):
        return ds
    rows = np.random.default_rng(seed).choice(len(ds), size=limit, replace=False)
    return ds.select(np.sort(rows).tolist())


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if any(nd in name for nd in no_decay) or p.dim() == 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, eps=cfg.adam_epsilon)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator()
    g.manual_seed(seed * 1000 + epoch)
    return torch.randperm(n, generator=g).tolist()


@dataclass
class FinetuneResult:
    output_dir: str
    best_dir: str | None
    best_score: float | None
    best_step: int | None
    global_step: int
    stopped_early: bool
    history: list[dict]
    best_metrics: dict | None = None
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended the session (last/ saved)
    finished: bool = False  # the run reached its last step (not early stopping, --stop-after or a signal)


def finetune(cfg: FinetuneConfig, log: Callable[[str], None] = print) -> FinetuneResult:
    """Train as `cfg` says; returns where the best checkpoint is and the evaluation history."""
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    cfg.check()
    spec = task_spec(cfg)  # an unknown task fails first
    out = Path(cfg.output_dir)
    last_dir, best_dir = out / LAST_DIR, out / BEST_DIR
    if cfg.resume:
        _recover_saves(out)
    resuming = cfg.resume and (last_dir / STATE_FILE).is_file()
    resume_from = str(last_dir) if resuming else None
    check_checkpoint_dir(resume_from or cfg.model, option="--model")
    model_config(cfg, spec, resume_from)  # bad layers / exits / length: before any change
    if resuming:  # other options than the run's: refused before the data is read
        check_resume(cfg, out)
    tokenizer = load_tokenizer(resume_from or cfg.model)
    # the data too before any change: `--overwrite` must not remove a run for a command that cannot start
    train_rows, dev_rows = _read_rows(cfg, spec, tokenizer)
    other_dev = _read_other_dev_rows(cfg, spec, tokenizer)
    data = data_fingerprint(train_rows, dev_rows)
    if (
        resuming
    ):  # --data / --hub-path may move, not change: the position, schedule and best score count these
        check_same_data(out, data)
    if not resuming and cfg.mode == "static":
        _warn_untrained_pooler(cfg, log)
    if not resuming:
        check_output_is_not_the_model(out, cfg)
        # under torchrun the first process removes what is to go and says so (the others meet it in Accelerator):
        # every process removed the same files, one failing where another had been first, and each said so
        first = int(os.environ.get("RANK", "0")) == 0
        prepare_output(out, cfg, log if first else _silent, remove=first)
    out.mkdir(parents=True, exist_ok=True)

    _set_seed(cfg.seed)
    forget_single_process_state(cfg.mixed_precision, cfg.cpu)
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
    processes = accelerator.num_processes
    if not accelerator.is_main_process:  # every process would say the same
        log = _silent

    model = load_model(cfg, spec, resume_from, log=log)
    log(
        f"model: {model.config.num_hidden_layers} layers, exits at {exit_layers(model.config)}, "
        f"mode {cfg.mode}, gradient equilibrium {getattr(model.config, 'gradient_equilibrium', None)}"
    )
    dev_labels = [r["labels"] for r in dev_rows]
    collate = make_collate(tokenizer, spec.is_regression)
    cut = cut_note(cfg.max_length, train=train_rows, dev=dev_rows)
    log(f"{spec.name}: {len(train_rows)} train / {len(dev_rows)} dev rows, max_length {cfg.max_length}{cut}")

    schedule = _schedule(cfg, len(train_rows), processes)
    steps_per_epoch, total_steps = schedule.steps_per_epoch, schedule.total_steps
    optimizer = _optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, schedule.warmup_steps, total_steps)

    state = TrainerState(processes=processes, data=data)
    if resuming:
        state = _restore_last(
            last_dir, optimizer, scheduler, processes, out, accelerator.scaler, accelerator.process_index
        )
        log(f"resumed at step {state.global_step} (epoch {state.epoch}, batch {state.step_in_epoch})")
        # a run with nothing left returns at once: said, or "resumed at step N" reads as training that went on
        if state.finished or state.global_step >= total_steps:
            log(f"the run finished at step {state.global_step}: nothing left to do")
        elif state.stopped_early:
            log(f"the run stopped early at step {state.global_step} (--early-stopping): nothing left to do")
        elif cfg.stop_after is not None and state.global_step >= cfg.stop_after:
            log(
                f"--stop-after {cfg.stop_after}: the run is at step {state.global_step}: nothing left to do here"
            )
        # the evaluations last/ knows of: a kill after an evaluation's log line and before its save would have
        # that evaluation logged twice once it is run again
        if accelerator.is_main_process:
            (out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in state.history))

    # the scheduler stays ours: Accelerate's steps it once per process at every step (it counts the steps of a
    # loader it has not split), and under torchrun with 2 processes the warm-up and decay ran twice as fast, the
    # learning rate 0 for the second half of the run; `_schedule` counts steps of one batch per process
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    (out / "config.json").write_text(json.dumps(_jsonable(asdict(cfg)), indent=2))

    def save_last() -> None:  # (every process calls it: their RNG states are gathered)
        rngs = [_rng_state()]
        if processes > 1:
            from accelerate.utils import gather_object

            rngs = gather_object(rngs)
        if accelerator.is_main_process:
            model_ = accelerator.unwrap_model(model)
            _save_last(model_, tokenizer, optimizer, scheduler, state, last_dir, accelerator.scaler, rngs)

    def run_eval() -> bool:
        """Evaluate, keep the best; True when early stopping says stop."""
        t0 = time.time()
        res = evaluate(model, dev_rows, dev_labels, spec, collate, cfg.eval_batch_size, device, cfg.progress)
        if res["nonfinite"]:  # refused before anything is saved: a NaN model was kept as best/, scored 0.00
            bar.close()
            # every process meets it at the same evaluation (each evaluates the whole dev set): under torchrun the
            # process group goes down and the training objects are held, as at a run's end (the CLI then ends
            # the process without a teardown, `end_distributed_process`)
            accelerator.end_training()
            hold_until_exit(accelerator, model, optimizer)
            raise TrainingDiverged(_diverged_message(cfg, state, res["nonfinite"]))
        score = res[cfg.selection()]
        record = {
            "step": state.global_step,
            "epoch": state.epoch + state.step_in_epoch / steps_per_epoch,
            "score": score,
            "selection": cfg.selection(),
            "dev": {str(k): v for k, v in res["exits"].items()},
        }
        others = []  # reported, not chosen by (MNLI's mismatched dev)
        for split, rows in other_dev.items():
            labels = [r["labels"] for r in rows]
            other = evaluate(model, rows, labels, spec, collate, cfg.eval_batch_size, device, cfg.progress)
            record[split] = {str(k): v for k, v in other["exits"].items()}
            others.append(f"; {split} {cfg.selection()} {other[cfg.selection()]:.2f}")
        record["eval_seconds"] = round(time.time() - t0, 2)
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_step, state.bad_evals = score, state.global_step, 0
            if accelerator.is_main_process:
                info = _best_info(cfg, spec, state.global_step, score, record["dev"])
                info.update({split: record[split] for split in other_dev})

                def write_best(path: Path) -> None:
                    _save_model(accelerator.unwrap_model(model), tokenizer, path)
                    (path / INFO_FILE).write_text(json.dumps(_jsonable(info), indent=2))

                _replace_dir(best_dir, write_best)
        else:
            state.bad_evals += 1
        record["best"] = improved
        state.history.append(_jsonable(record))
        if accelerator.is_main_process:  # (under torchrun every process wrote each line)
            with (out / LOG_FILE).open("a") as f:
                f.write(json.dumps(_jsonable(record)) + "\n")
        per = ", ".join(f"{k}:{v['performance']:.2f}" for k, v in res["exits"].items())
        log(
            f"step {state.global_step}: dev {cfg.selection()} {score:.2f} [{per}]"
            + "".join(others)
            + (" *" if improved else "")
        )
        stop = cfg.early_stopping_patience is not None and state.bad_evals >= cfg.early_stopping_patience
        if stop:
            state.stopped_early = True
            log(f"early stopping: {state.bad_evals} evaluations without improvement")
        return stop

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=state.global_step,
        desc=f"finetune {spec.name}",
        unit="step",
        disable=not (cfg.progress and accelerator.is_local_main_process),
    )
    stop = state.stopped_early
    if cfg.stop_after is not None and state.global_step >= cfg.stop_after:
        stop = True  # nothing left to do in this session
    stopped_by = None
    with StopRequest() as signals:  # SIGTERM / Ctrl-C: finish the step, save last/, stop
        while not stop and state.global_step < total_steps:
            order = _epoch_order(len(train_rows), cfg.seed, state.epoch)
            loader = torch.utils.data.DataLoader(
                Rows([train_rows[i] for i in order]),
                batch_size=cfg.batch_size,
                shuffle=False,
                collate_fn=collate,
                num_workers=cfg.dataloader_workers,
                # own generator: creating an iterator must not draw from the global RNG (dropout), or a
                # resumed run would diverge from an uninterrupted one
                generator=torch.Generator().manual_seed(cfg.seed + state.epoch),
            )
            loader = accelerator.prepare(loader)
            # resumed inside the epoch: the whole epoch's loader, its first steps skipped (a loader of the rest of
            # the epoch would end it otherwise: with batches uneven over the processes, Accelerate completes the
            # last step with the first rows of its loader)
            if state.step_in_epoch:
                loader = accelerator.skip_first_batches(loader, state.step_in_epoch)
            model.train()
            for batch in loader:
                logits = exit_logits(model(**model_inputs(batch)))
                loss = per_exit_loss(logits, batch["labels"], spec.is_regression)
                accelerator.backward(loss)
                if cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if not getattr(optimizer, "step_was_skipped", False):  # fp16: a step skipped on inf gradients
                    scheduler.step()
                optimizer.zero_grad()
                state.global_step += 1
                state.step_in_epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if state.step_in_epoch >= steps_per_epoch:
                    state.epoch += 1
                    state.step_in_epoch = 0
                done = state.global_step >= total_steps
                evaluated = state.global_step % schedule.eval_every == 0 or done
                if evaluated:
                    stop = run_eval()
                    model.train()
                    state.finished = done
                    save_last()
                    if done or stop:
                        break
                # the session ends here on purpose (--stop-after) or on a signal; last/ is saved either way
                if cfg.stop_after is not None and state.global_step >= cfg.stop_after:
                    reason = f"stopping at step {state.global_step} (--stop-after)"
                elif signals.agreed(accelerator):
                    stopped_by = signals.requested or "SIGTERM"  # (or another process's signal)
                    reason = f"stopped by {stopped_by} at step {state.global_step}, last/ saved"
                else:
                    continue
                if not evaluated:  # an evaluation step has saved it already
                    save_last()
                log(f"{reason}; continue with --resume")
                stop = True
                break
            else:
                # loader exhausted: the epoch ended (counters already rolled over)
                if state.step_in_epoch != 0:
                    state.epoch += 1
                    state.step_in_epoch = 0
                continue
            break
    bar.close()
    accelerator.wait_for_everyone()  # best/ is saved by the first process: let the others see it
    # under torchrun, the process group is taken down before the processes exit, as pre-training does: left to
    # the interpreter's exit, gloo's threads could outlive it ("terminate called without an active exception",
    # SIGABRT in one process after a finished run)
    accelerator.end_training()
    hold_until_exit(accelerator, model, optimizer)  # (freed here, they could hang the process: see there)
    return _result(out, state, stopped_by)


def _read_rows(cfg: FinetuneConfig, spec: TaskSpec, tokenizer) -> tuple[list[dict], list[dict]]:
    """The training and dev rows, tokenized; each split drawn down to its limit (train_limit, dev_limit)."""
    train_ds = _sample(load_split(cfg, spec, cfg.train_split), cfg.train_limit, cfg.seed)
    dev_ds = _sample(load_split(cfg, spec, cfg.dev_split), cfg.dev_limit, cfg.seed)
    train_rows = tokenize(tokenizer, train_ds, spec, cfg.max_length)
    dev_rows = tokenize(tokenizer, dev_ds, spec, cfg.max_length)
    return train_rows, dev_rows


def _read_other_dev_rows(cfg: FinetuneConfig, spec: TaskSpec, tokenizer) -> dict[str, list[dict]]:
    """The labelled splits reported beside dev (GLUE MNLI's dev_mismatched: GLUE reports MNLI-m and MNLI-mm), when
    dev is the task's dev split; drawn down to dev_limit like dev."""
    if cfg.dev_split.strip().lower() not in ("dev", "validation"):
        return {}
    return {
        split: tokenize(
            tokenizer, _sample(load_split(cfg, spec, split), cfg.dev_limit, cfg.seed), spec, cfg.max_length
        )
        for split in spec.other_dev_splits
    }


@dataclass(frozen=True)
class _Schedule:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int  # steps between evaluations


def _schedule(cfg: FinetuneConfig, train_rows: int, processes: int) -> _Schedule:
    """Steps per epoch and in all, warm-up steps and the evaluation interval of a run on `train_rows` rows."""
    # Accelerate gives each process every `processes`-th batch: a step takes `processes` batches of the epoch
    steps_per_epoch = max(1, math.ceil(math.ceil(train_rows / cfg.batch_size) / processes))
    total_steps = (
        cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))
    )
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total_steps)
    eval_every = cfg.eval_every if cfg.eval_every is not None else steps_per_epoch
    return _Schedule(steps_per_epoch, total_steps, warmup, eval_every)


def _diverged_message(cfg: FinetuneConfig, state: TrainerState, exits: list[int]) -> str:
    kept = (
        f"best/ keeps step {state.best_step}, last/ its last save before"
        if state.best_step is not None
        else "no best/ was saved"
    )
    return (
        f"training diverged: at step {state.global_step} the dev outputs of exit(s) {exits} are NaN or infinite "
        f"(the loss became NaN or inf: --lr {cfg.learning_rate:g} too high for this model and data, or an "
        f"overflow in reduced precision); nothing of this step is saved ({kept}). Start again with a lower --lr "
        "(--overwrite)"
    )


def _best_info(cfg: FinetuneConfig, spec: TaskSpec, step: int, score: float, dev: dict) -> dict:
    """The contents of OUTPUT/best/finetune.json: the task, how it was trained, the dev metrics per exit."""
    return {
        "task": spec.name,
        "family": spec.family,
        "source": cfg.source,
        "mode": cfg.mode,
        "step": step,
        "selection": cfg.selection(),
        "score": score,
        "dev": dev,
        "max_length": cfg.max_length,
        "text_columns": list(spec.text_columns),
    }


def _result(out: Path, state: TrainerState, stopped_by: str | None) -> FinetuneResult:
    """What `finetune` returns, from the trainer state and OUTPUT/best/finetune.json."""
    best_dir = out / BEST_DIR
    best_metrics = None
    if (best_dir / INFO_FILE).is_file():
        best_metrics = json.loads((best_dir / INFO_FILE).read_text())
    return FinetuneResult(
        output_dir=str(out),
        best_dir=str(best_dir) if best_dir.is_dir() else None,  # none: stopped before its first evaluation
        best_score=state.best_score,
        best_step=state.best_step,
        global_step=state.global_step,
        stopped_early=state.stopped_early,
        history=state.history,
        best_metrics=best_metrics,
        stopped_by=stopped_by,
        finished=state.finished,
    )
