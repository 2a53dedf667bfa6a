"""The run folder of fine-tuning: its layout, the saves of best/ and last/ (each folder whole or not at all:
written beside it, then swapped in; what a kill during a save left is undone on --resume), the trainer state and
RNG states a resume needs, and the checks before a run starts in it: a fresh run in a folder without a run (or
--overwrite), a resumed one with the run's options and data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .finetune_config import FinetuneConfig
from .task_data import task_spec

BEST_DIR = "best"
LAST_DIR = "last"
STATE_FILE = "trainer_state.json"
INFO_FILE = "finetune.json"
LOG_FILE = "log.jsonl"


# --------------------------------------------------------------------------------------------------
# what a save holds


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_score: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    processes: int = 1  # step_in_epoch counts steps of one batch per process
    data: dict | None = None  # rows and digest of the tokenized train / dev data (`data_fingerprint`)


def _jsonable(obj, nan_as_none: bool = False):
    """`obj` as JSON data: string keys, lists, numpy scalars as Python numbers; with `nan_as_none` a NaN or
    infinity becomes null (json.dumps would write NaN, which is not JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, nan_as_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, nan_as_none) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if nan_as_none and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _save_model(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.saving")


def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _replace_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Write a checkpoint folder whole or not at all: `write` fills a staging folder, which then takes `path`'s
    place. Written in place, a kill during the save left last/ with the new weights and optimizer beside the old
    scheduler and step, and a resumed run went on from that mix without a word."""
    import shutil

    staging, previous = _staging(path), _previous(path)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
    except BaseException:  # a failed save (a full disk) leaves no half-written folder taking the space
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(previous, ignore_errors=True)
        path.rename(previous)
    staging.rename(path)  # a kill before this leaves no `path` and a whole `previous`: see _recover_saves
    shutil.rmtree(previous, ignore_errors=True)


def _recover_saves(out: Path) -> None:
    """Undo what a kill in `_replace_dir` left: the previous best/ or last/ back in place if the new one never
    arrived, staging folders of unfinished saves removed."""
    import shutil

    for name in (BEST_DIR, LAST_DIR):
        path = out / name
        previous = _previous(path)
        if previous.is_dir() and not path.exists():
            try:
                previous.rename(path)
            except OSError:  # another process of the run did it first
                pass
        for leftover in (previous, _staging(path)):
            if path.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _rng_state() -> dict:
    """This process's RNG states (dropout draws from them)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _save_last(
    model,
    tokenizer,
    optimizer,
    scheduler,
    state: TrainerState,
    last_dir: Path,
    scaler=None,
    rngs: list[dict] | None = None,
) -> None:
    """Write the resumable OUTPUT/last (whole or not at all): model, tokenizer, optimizer, scheduler, RNG states
    (`rngs`: each process's, by rank; default this process's), trainer state, and fp16's loss scaler (`scaler`,
    Accelerate's GradScaler) when there is one. Under torchrun the processes' RNG states part (dynamic padding
    gives their batches other lengths, so dropout draws other amounts): rng.pt holds each one's."""
    rngs = rngs or [_rng_state()]

    def write(path: Path) -> None:
        _save_model(model, tokenizer, path)
        torch.save(optimizer.state_dict(), path / "optimizer.pt")
        torch.save(scheduler.state_dict(), path / "scheduler.pt")
        torch.save({**rngs[0], "processes": rngs}, path / "rng.pt")  # torch, cuda: the first process's
        if scaler is not None:
            torch.save(scaler.state_dict(), path / "scaler.pt")
        (path / STATE_FILE).write_text(json.dumps(_jsonable(asdict(state)), indent=2))

    _replace_dir(last_dir, write)


def _restore_last(
    last_dir: Path, optimizer, scheduler, processes: int, out: Path, scaler=None, rank: int = 0
) -> TrainerState:
    """Load what `_save_last` wrote into `optimizer`, `scheduler`, the RNGs and fp16's loss scaler (a fresh one
    started at 65536 again, where the run had brought it down: its first steps overflowed and were skipped, as
    the uninterrupted run's were not); the trainer state it saved."""
    state = TrainerState(**json.loads((last_dir / STATE_FILE).read_text()))
    if state.processes != processes:  # its position in the epoch and its schedule count such steps
        raise ValueError(
            f"--resume: the run in {out} trained in {state.processes} process(es), this session has "
            f"{processes}: resume it with {state.processes}"
        )
    optimizer.load_state_dict(torch.load(last_dir / "optimizer.pt", map_location="cpu"))
    scheduler.load_state_dict(torch.load(last_dir / "scheduler.pt", map_location="cpu"))
    if scaler is not None and (last_dir / "scaler.pt").is_file():  # (none saved: the run was not in fp16)
        scaler.load_state_dict(torch.load(last_dir / "scaler.pt", map_location="cpu"))
    rng = last_dir / "rng.pt"
    if rng.is_file():
        states = torch.load(rng, map_location="cpu", weights_only=False)
        each = states.get("processes")  # by rank (saved before it was: the first process's for all)
        if each and len(each) == processes:
            states = each[rank]
        torch.set_rng_state(states["torch"])
        cuda = states.get("cuda")  # dropout on a GPU draws from the GPU's generators
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return state


# --------------------------------------------------------------------------------------------------
# before a run starts in the folder


RUN_FILES = (BEST_DIR, LAST_DIR, LOG_FILE, "config.json")

# options a resumed run may change: where things are, how they are shown, when this session ends, devices.
# Everything else (task, data, model shape, batches, schedule, seed, ...) must equal RUN/config.json.
RESUME_MAY_CHANGE = frozenset(
    {
        "model",
        "output_dir",
        "data_dir",
        "hub_path",
        "eval_batch_size",
        "cpu",
        "mixed_precision",
        "resume",
        "overwrite",
        "stop_after",
        "progress",
        "dataloader_workers",
        "extra",
    }
)


def prepare_output(
    out: Path, cfg: FinetuneConfig, log: Callable[[str], None] = print, remove: bool = True
) -> None:
    """A fresh run needs an output folder without a run in it: refuse one that holds best/, last/, log.jsonl
    or config.json, unless `cfg.overwrite` (then remove those first; not with `remove` False: another process
    of the run does)."""
    import shutil

    found = [name for name in RUN_FILES if (out / name).exists()]
    first_save_killed = cfg.resume and _first_save_killed(out)
    if cfg.resume and (first_save_killed or not any((out / d).exists() for d in (BEST_DIR, LAST_DIR))):
        # nothing to resume; a run killed before its first save left only files, or killed during it its first
        # evaluation's best/ (which the restarted run's first evaluation replaces): --resume starts it again
        if first_save_killed:
            check_resume(cfg, out)  # best/ stays until replaced: by the same run's only
        files = [name for name in found if not (out / name).is_dir()]
        for name in files if remove else ():
            (out / name).unlink()
        for leftover in (_staging(out / LAST_DIR), _previous(out / LAST_DIR)) if remove else ():
            shutil.rmtree(leftover, ignore_errors=True)
        removed = f" ({', '.join(files)} removed)" if files else ""
        log(f"--resume: no {out / LAST_DIR / STATE_FILE}; starting from scratch{removed}")
        return
    if not found:
        return
    if not cfg.overwrite:
        if cfg.resume:
            raise FileExistsError(
                f"--resume: {out} holds {', '.join(found)} but no {LAST_DIR}/{STATE_FILE} to resume from; "
                "use --overwrite to start over"
            )
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(found)}): use --resume to continue it "
            "or --overwrite to start over"
        )
    for name in found if remove else ():
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    for name in (BEST_DIR, LAST_DIR) if remove else ():  # what a killed save left
        for leftover in (_staging(out / name), _previous(out / name)):
            shutil.rmtree(leftover, ignore_errors=True)
    log(f"--overwrite: removed {', '.join(found)} from {out}")


def _first_save_killed(out: Path) -> bool:
    """A run killed during its first save: best/ of its first evaluation (the one log.jsonl has, if any) and no
    last/. The first evaluation writes best/ and then last/, so a kill in between left this, and --resume (which
    scripts always pass) was refused where a kill a moment earlier started the run again."""
    if (out / LAST_DIR).exists() or not (out / BEST_DIR / INFO_FILE).is_file():
        return False
    try:
        step = json.loads((out / BEST_DIR / INFO_FILE).read_text())["step"]
        log_file = out / LOG_FILE
        lines = log_file.read_text().splitlines() if log_file.is_file() else []
        steps = [json.loads(line)["step"] for line in lines if line.strip()]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return steps in ([], [step])


def check_output_is_not_the_model(out: Path, cfg: FinetuneConfig) -> None:
    """`--output` must not be a model folder (its config.json was taken for a run's and --overwrite removed it,
    leaving a checkpoint without its config) nor hold `--model` where --overwrite removes it (`--model RUN/best
    --output RUN`: the run went, and nothing was trained)."""
    config = out / "config.json"
    try:
        model_type = (
            json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
        )
    except (OSError, ValueError, AttributeError):
        model_type = None
    if isinstance(model_type, str):
        raise ValueError(
            f"--output {out} is a model folder (its config.json describes a model of type {model_type}), not a "
            "fine-tuning run: choose another --output"
        )
    model = Path(cfg.model).expanduser()
    if not (cfg.overwrite and model.exists()):
        return
    model = model.resolve()
    for name in RUN_FILES:
        target = (out / name).resolve()
        if model == target or target in model.parents:
            raise ValueError(
                f"--model {cfg.model} lies in {out}'s {name}, which --overwrite would remove: copy it out of "
                f"{out} first, or choose another --output"
            )


# FinetuneConfig fields -> the `elue finetune` options that set them (where the names differ)
_OPTION_NAMES = {
    "task": "TASK",
    "source": "--hub/--glue",
    "mode": "static (--layers) or joint",
    "num_layers": "--layers/--num-layers",
    "num_output_layers": "--exits",
    "learning_rate": "--lr",
    "early_stopping_patience": "--early-stopping",
    "gradient_equilibrium": "--ge/--no-ge",
    # settings of the Python API that `elue finetune` has no option for
    **{
        k: f"FinetuneConfig.{k}"
        for k in ("train_split", "dev_split", "warmup_steps", "adam_epsilon", "max_grad_norm")
    },
}


def _task_name(task, cfg: FinetuneConfig) -> str | None:
    """The task's own name (`TaskSpec.name`) as `cfg.source` reads it; None for a name it does not know."""
    try:
        return task_spec(FinetuneConfig(task=str(task), model="", output_dir="", source=cfg.source)).name
    except KeyError:
        return None


def check_resume(cfg: FinetuneConfig, out: Path) -> None:
    """Refuse to resume with options that differ from the saved RUN/config.json (see RESUME_MAY_CHANGE)."""
    saved_path = out / "config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    now = _jsonable(asdict(cfg))
    ignored = set(RESUME_MAY_CHANGE)
    if saved.get("max_steps") is not None and now.get("max_steps") is not None:
        ignored.add("epochs")  # max_steps overrides epochs: a different --epochs changes nothing
    if saved.get("source") == now["source"] and _task_name(saved.get("task"), cfg) == _task_name(
        cfg.task, cfg
    ):
        ignored.add("task")  # one task however typed: 'SST2' and 'sst-2'
    diffs = [
        f"{_OPTION_NAMES.get(key, '--' + key.replace('_', '-'))} {saved[key]!r} -> {now[key]!r}"
        for key in now
        if key not in ignored and key in saved and saved[key] != now[key]
    ]
    if diffs:
        raise ValueError(
            f"--resume: these options differ from the run in {out} ({saved_path.name}): "
            + "; ".join(diffs)
            + ". Give the run's options, or --overwrite to start over"
        )


def data_fingerprint(train_rows: Sequence[dict], dev_rows: Sequence[dict]) -> dict:
    """Row counts and a digest of the tokenized rows (ids and labels, in order) of train and dev."""
    import hashlib

    def digest(rows: Sequence[dict]) -> str:
        h = hashlib.sha256()
        for r in rows:
            h.update(np.asarray(r["input_ids"], dtype=np.int64).tobytes())
            h.update(np.asarray([r.get("labels", 0)], dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    return {
        "train_rows": len(train_rows),
        "train_digest": digest(train_rows),
        "dev_rows": len(dev_rows),
        "dev_digest": digest(dev_rows),
    }


def check_same_data(out: Path, data: dict) -> None:
    """Refuse to resume on other data than the run's (recorded in last/trainer_state.json; runs saved before it
    was recorded are not checked): its position in the epoch, its schedule and its best dev score count the
    run's rows."""
    saved = json.loads((out / LAST_DIR / STATE_FILE).read_text()).get("data")
    if not saved or saved == data:
        return
    diffs = []
    for split in ("train", "dev"):
        rows, digest = saved.get(f"{split}_rows"), saved.get(f"{split}_digest")
        if rows != data[f"{split}_rows"]:
            diffs.append(f"{split} {rows} rows -> {data[f'{split}_rows']}")
        elif digest != data[f"{split}_digest"]:
            diffs.append(f"{split}: other rows (or tokenization)")
    raise ValueError(
        f"--resume: the data differ from those of the run in {out}: {'; '.join(diffs)}. Give the run's data, "
        "or --overwrite to start over"
    )
