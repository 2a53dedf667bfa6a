"""Checkpoints of a pre-training run: finding them, checking a resume against them, saving them.

`output_dir/checkpoints/step-XXXXXXX/` holds `accelerator.save_state` (model, optimiser, scheduler, every
process's RNG states) under `state/`, each process's data position (`data-rank<r>.json`), `trainer_state.json`
(step, world size, settings, the logging window), and the model in Hugging Face format (`model/`, loadable by
`ElasticBertForPreTraining.from_pretrained` and, its top MLM head, by `ElasticBertForMaskedLM`). A COMPLETE
marker is written once every file is; folders without one are never resumed from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from .config import PretrainConfig, SettingsError, absolute_hub_files, absolute_paths, one_line

CHECKPOINT_PREFIX = "step-"
COMPLETE_MARKER = "COMPLETE"


def find_checkpoint(output_dir: Path, which: str | None) -> Path | None:
    if not which:
        return None
    if which != "latest":
        path = Path(which)
        if not (path / COMPLETE_MARKER).exists():
            raise SettingsError(f"resume_from_checkpoint: {_not_a_checkpoint(path, output_dir)}")
        return path
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def _not_a_checkpoint(path: Path, output_dir: Path) -> str:
    """What `path`, given as the checkpoint to resume but without COMPLETE, is instead, and what to give: a run's
    folder, its checkpoints/ folder, a checkpoint's model/ folder, nothing at all; or an incomplete checkpoint."""
    newest = complete_checkpoints(output_dir)
    hint = f" (this run's newest: {newest[-1]})" if newest else ""
    if not path.exists():
        return f"{path} does not exist{hint}"
    if path.is_dir() and (path / "checkpoints").is_dir():
        found = complete_checkpoints(path)
        name = f"one of its checkpoints, e.g. {found[-1]}" if found else "one of its checkpoints"
        return f"{path} is a run's output folder: give latest (its newest checkpoint) or {name}"
    if path.is_dir() and path.name == "checkpoints":
        found = complete_checkpoints(path.parent)
        name = f"one of them, e.g. {found[-1]}" if found else "one of them"
        return f"{path} is a run's checkpoints folder: give {name}"
    if (path.parent / COMPLETE_MARKER).exists():
        return (
            f"{path} is the {path.name} folder of checkpoint {path.parent}: give {path.parent} (or, to start a "
            f"new run from its weights, model_name_or_path={path.parent / 'model'})"
        )
    return f"{path} is not a complete checkpoint (no {COMPLETE_MARKER})"


def not_a_model_folder(path: Path) -> str | None:
    """What `path`, a local folder given as the model (`model_name_or_path`) but without a config.json, is
    instead (a pre-training checkpoint, a run's output or checkpoints folder) and what to give; None for a model
    folder (one with a config.json) or a path that is no local folder (a hub id)."""
    if not path.is_dir() or (path / "config.json").exists():
        return None
    resume = "; to continue that run, resume it (resume_from_checkpoint with its output_dir) instead"
    if (path / COMPLETE_MARKER).exists() and (path / "model").is_dir():
        return (
            f"{path} is a pre-training checkpoint, not a model folder: give its model/ folder "
            f"(model_name_or_path={path / 'model'}) to start a new run from its weights{resume}"
        )
    runs = [path] if (path / "checkpoints").is_dir() else [path.parent] if path.name == "checkpoints" else []
    if runs:
        found = complete_checkpoints(runs[0])
        name = f", e.g. model_name_or_path={found[-1] / 'model'}" if found else ""
        return (
            f"{path} is a pre-training run's {'output' if runs[0] == path else 'checkpoints'} folder, not a model "
            f"folder: give the model/ folder of one of its checkpoints{name}{resume}"
        )
    return f"{path} has no config.json: not a model folder (an ElasticBERT or BERT checkpoint)"


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
        saved = {**saved, "train_files": absolute_paths(saved["train_files"])}
    if isinstance(saved.get("hub_datasets"), list):  # and before local builders' data_files were
        saved = {**saved, "hub_datasets": absolute_hub_files(saved["hub_datasets"])}
    new = cfg.to_dict()
    diffs = [
        diff
        for k in sorted(set(saved) | set(new))
        if k not in CHANGEABLE_ON_RESUME
        and saved.get(k) != new.get(k)
        and not (k == "exit_groups" and _same_groups(saved.get(k), new.get(k), num_layers))
        for diff in _differences(k, saved.get(k), new.get(k))
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
        hint = ""
        if not cfg.num_data_shards and isinstance(old_streams, int) and old_streams % world == 0:
            # unset, it follows the processes: the run started on another number of them
            hint = (
                f" (num_data_shards unset is one stream per process: set num_data_shards={old_streams} to resume "
                f"on {world} process{'es' if world != 1 else ''})"
            )
        diffs.append(f"data streams (num_data_shards): {old_streams} -> {new_streams}{hint}")
    if diffs:
        raise SettingsError(
            f"resuming from {ckpt} with other settings than it was trained with: {'; '.join(diffs)}. "
            "Only these may change on resume: " + ", ".join(sorted(CHANGEABLE_ON_RESUME - {
                "per_device_batch_size", "gradient_accumulation_steps", "num_data_shards"}))
            + " (and the batch split, keeping the global batch); start a new output_dir for other settings"
        )  # fmt: skip


def _differences(key: str, old: Any, new: Any) -> list[str]:
    """`key: old -> new`; for two mappings (model_config) one line per field that differs, `key.field: old -> new`
    ("(not set)" where a side lacks the field), not the whole mappings to compare by eye."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [f"{key}: {old!r} -> {new!r}"]
    unset = "(not set)"

    def shown(side: dict, field: str) -> str:
        return repr(side[field]) if field in side else unset

    return [
        f"{key}.{field}: {shown(old, field)} -> {shown(new, field)}"
        for field in sorted(set(old) | set(new), key=str)
        if old.get(field, unset) != new.get(field, unset)
    ]


# how Accelerate names FSDP's model state, in any of its state-dict types (a folder of shards by default,
# pytorch_model_fsdp.bin or one file per rank with FSDP_STATE_DICT_TYPE; without FSDP: model.safetensors)
FSDP_MODEL_NAME = "pytorch_model_fsdp"


def check_engine(ckpt: Path, fsdp: bool, engine: str) -> None:
    """The checkpoint's state is in the form this run's engine loads: FSDP's only under FSDP, whole model files
    only without it (Accelerate would otherwise report a missing file as if the checkpoint were damaged, or fail
    with a traceback on every process). `fsdp`: this run shards with FSDP; `engine`: what it runs otherwise."""
    state = ckpt / "state"
    sharded = state.is_dir() and any(f.name.startswith(FSDP_MODEL_NAME) for f in state.iterdir())
    if sharded == fsdp:
        return
    weights = f"start a new output_dir from its weights (model_name_or_path={ckpt / 'model'})"
    if sharded:
        raise SettingsError(
            f"checkpoint {ckpt} holds FSDP's state, and this run does not shard with FSDP ({engine}): "
            "resume it under FSDP (distributed: fsdp on GPUs under torchrun, `torchrun --nproc_per_node 1` for "
            f"one GPU), or {weights}"
        )
    raise SettingsError(
        f"checkpoint {ckpt} was saved without FSDP (one plain process, or DDP), and this run shards with FSDP: "
        "resume it as it was saved, where distributed: fsdp does not shard (one plain process without torchrun; "
        f"cpu: true under torchrun, DDP), or {weights}"
    )


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


def _read_json(ckpt: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads((ckpt / name).read_text())
    except (OSError, ValueError) as err:
        raise SettingsError(f"checkpoint {ckpt}: {name} cannot be read ({one_line(err)})") from err
    if not isinstance(value, dict):
        raise SettingsError(f"checkpoint {ckpt}: {name} is not a JSON object")
    return value


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json (its step, world size, settings and logging window)."""
    state = _read_json(ckpt, "trainer_state.json")
    if not isinstance(state.get("step"), int):
        raise SettingsError(f"checkpoint {ckpt}: trainer_state.json has no step")
    return state


def read_data_positions(ckpt: Path, streams) -> tuple[set[int], dict[str, list[int]]]:  # noqa: ANN001
    """The data versions and, per stream, the positions of a checkpoint's data-rank*.json files (keyed by
    stream: any world size dividing the streams resumes from them); every one of `streams` must have one."""
    positions: dict[str, list[int]] = {}
    versions: set[int] = set()
    for f in sorted(ckpt.glob("data-rank*.json")):
        version, found = _data_positions(ckpt, f.name)
        versions.add(version)
        positions.update(found)
    missing = [s for s in streams if str(s) not in positions]
    if missing:
        raise SettingsError(
            f"checkpoint {ckpt}: no data position for stream(s) {missing} (a data-rank*.json is missing): "
            "it cannot resume where the data left off"
        )
    return versions, positions


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


def check_data_version(
    cfg: PretrainConfig, ckpt: Path, versions: set[int], num_streams: int = 1
) -> list[str]:
    """A checkpoint's data positions count documents as the data pipeline of their version did (data.py,
    DATA_VERSION). One of another version would resume at another place in the data, silently: refused, except
    where the older version made the same streams of documents, accepted with a note. Version 1 did not end a
    document at a line of only spaces or tabs (the same documents where no local file has such a line inside a
    paragraph; hub corpora did not change); versions 1 and 2 shuffled each stream with its own seed (the same
    streams without `shuffle_buffer`, or with one stream). `num_streams`: the run's number of data streams."""
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
    restart = (
        "Finish the run with the elue that started it, or start a new output_dir from its weights "
        f"(model_name_or_path={ckpt / 'model'})"
    )
    if cfg.shuffle_buffer and num_streams > 1:
        raise SettingsError(
            f"checkpoint {ckpt}: its data positions are of data version {old[0]}, from before the {num_streams} data "
            f"streams shuffled with one seed (version {DATA_VERSION}; each had its own, so they overlapped and "
            f"missed documents): with shuffle_buffer {cfg.shuffle_buffer} every stream now reads other documents, "
            f"and the run would go on at another place in the data. {restart}"
        )
    notes = []
    if 1 in old:
        changed = documents_split_differently(cfg.train_files) if cfg.train_files else None
        if changed is not None:
            raise SettingsError(
                f"checkpoint {ckpt}: its data positions are of data version 1, from before a line of only spaces "
                f"or tabs ended a document (version 2), and {changed} has such lines: its documents are counted "
                f"otherwise now, so the run would go on at another place in the data. {restart}"
            )
        notes.append(
            f"checkpoint {ckpt}: data positions of data version 1 (before lines of only spaces or tabs ended "
            "documents): no training file has such a line, so they point at the same place in the data"
        )
    return notes


def load_state(accelerator, ckpt: Path) -> None:
    """accelerator.load_state, with a damaged file named in one line (found by loading the files one by one,
    only after a failure)."""
    from torch.distributed.checkpoint.api import CheckpointException

    state_dir = ckpt / "state"
    try:
        accelerator.load_state(str(state_dir))
    except (Exception, CheckpointException) as err:  # noqa: BLE001 (any damage: truncated pickles, bad headers...)
        # FSDP's shards fail with a BaseException that lists every rank's traceback: the first rank's error
        if isinstance(err, CheckpointException):
            err = next(iter(err.failures.values()), (err, None))[0]
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
        raise SettingsError(f"checkpoint {ckpt}: {culprit} cannot be loaded ({one_line(err)})") from err


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
    try:
        _write_checkpoint(accelerator, model, tokenizer, data, cfg, step, window, path)
    except Exception as err:  # noqa: BLE001 (a full disk: OSError, safetensors' and torch.save's own errors)
        if not _disk_full(err):
            raise
        if accelerator.is_main_process:  # never resumed from: its space back, for the next try
            shutil.rmtree(path, ignore_errors=True)
        done = complete_checkpoints(Path(cfg.output_dir))
        resume = (
            f"the same command resumes from {done[-1].name}" if done else "no checkpoint to resume from yet"
        )
        full = SettingsError(
            f"saving checkpoint {path.name} failed, the disk is full ({one_line(err)}); the incomplete checkpoint "
            f"was removed. Free space in {root} (save_total_limit keeps fewer checkpoints), then {resume}"
        )
        full.mid_run_process = accelerator.process_index  # reported by each process that met it
        raise full from err
    return path


def _disk_full(err: BaseException) -> bool:
    """Whether a save failed for want of space: ENOSPC, or the same in the words of safetensors ("No space left
    on device (os error 28)") or torch.save ("PytorchStreamWriter failed writing file")."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "os error 28" in text or "failed writing file" in text


def _write_checkpoint(accelerator, model, tokenizer, data, cfg, step, window, path: Path) -> None:  # noqa: ANN001
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
                # the marker first: a removal cut short (a kill) leaves an incomplete folder, which the next save
                # removes, not a "complete" checkpoint with files missing
                (old / COMPLETE_MARKER).unlink(missing_ok=True)
                shutil.rmtree(old, ignore_errors=True)
        # what a run killed while saving left behind, at an earlier step than this complete one: never resumed
        # from, and no save of this run will replace it (a later step's incomplete folder is left: the run may
        # still save that step, which replaces it)
        for old in incomplete_checkpoints(Path(cfg.output_dir)):
            if checkpoint_step(old) < step:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


__all__ = [
    "CHANGEABLE_ON_RESUME",
    "CHECKPOINT_PREFIX",
    "COMPLETE_MARKER",
    "check_data_version",
    "check_engine",
    "check_output_dir",
    "check_resume",
    "checkpoint_step",
    "complete_checkpoints",
    "find_checkpoint",
    "incomplete_checkpoints",
    "load_state",
    "not_a_model_folder",
    "read_data_positions",
    "read_trainer_state",
    "save_checkpoint",
]
