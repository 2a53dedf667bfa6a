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
(task facts, splits, tokenization, batching) is in `task_data`.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .accelerate_state import forget_single_process_state
from .stopping import StopRequest
from .task_data import Rows, TaskSpec, load_split, make_collate, task_spec, tokenize

BEST_DIR = "best"
LAST_DIR = "last"
STATE_FILE = "trainer_state.json"
INFO_FILE = "finetune.json"
LOG_FILE = "log.jsonl"


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass
class FinetuneConfig:
    task: str
    model: str  # ElasticBERT (or converted) checkpoint folder
    output_dir: str
    source: str = "elue"  # "elue" (ELUE-layout folder) | "hub" (ELUE task from the HF hub) | "glue"
    data_dir: str | None = None  # ELUE layout root (source=elue); defaults to $ELUE_DATA_DIR
    hub_path: str | None = None  # local copy / override of the hub dataset (source=hub|glue)
    train_split: str = "train"
    dev_split: str = "dev"
    mode: str = "joint"  # "joint" (every exit) | "static" (first `num_layers`, one exit)
    num_layers: int | None = None  # static: k; joint: truncate the encoder to this many layers
    num_output_layers: int | None = None  # joint: exits on the top layers only (default: all)
    gradient_equilibrium: bool = True  # joint only
    max_length: int = 128
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # overrides warmup_ratio
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    eval_every: int | None = None  # steps between evaluations (default: once per epoch)
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    select: str = "auto"  # best checkpoint by "last" exit, "mean" over exits, or "auto"
    seed: int = 42
    cpu: bool = False
    mixed_precision: str | None = None  # "fp16" | "bf16" on GPU
    resume: bool = False
    overwrite: bool = False  # start over in an output folder that holds a run (best/, last/, log.jsonl)
    stop_after: int | None = None  # end this session at this global step (last/ saved; --resume later)
    train_limit: int | None = None  # use only N training rows, drawn at random (quick runs, tests)
    dev_limit: int | None = None
    progress: bool = True
    dataloader_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ValueError for values that cannot mean anything (0 is never "not given": None is)."""

        def at_least(name: str, value, low) -> None:
            if value is not None and not value >= low:
                raise ValueError(f"{name} must be >= {low}, got {value}")

        def finite_at_least(name: str, value, low) -> None:  # inf passes `>= low` and trains to NaN
            if value is not None and not (math.isfinite(value) and value >= low):
                raise ValueError(f"{name} must be a finite number >= {low}, got {value}")

        for name in (
            "batch_size",
            "eval_batch_size",
            "max_length",
            "num_layers",
            "num_output_layers",
            "max_steps",
            "eval_every",
            "train_limit",
            "dev_limit",
            "early_stopping_patience",
            "stop_after",
        ):
            at_least(name, getattr(self, name), 1)
        at_least("warmup_steps", self.warmup_steps, 0)
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm"):
            finite_at_least(name, getattr(self, name), 0)
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if self.mode not in ("joint", "static"):
            raise ValueError(f"unknown mode {self.mode!r}: joint or static")
        if self.mode == "static" and self.num_output_layers is not None:
            raise ValueError(
                "static training has one exit: num_output_layers (--exits) is for joint training"
            )
        if self.select not in ("auto", "last", "mean"):
            raise ValueError(f"select must be auto, last or mean, got {self.select!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        for name in (
            "train_split",
            "dev_split",
        ):  # a test split has no labels (GLUE's hub test labels are -1)
            split = getattr(self, name)
            if split.strip().lower().startswith("test"):
                raise ValueError(
                    f"{name} {split!r}: a test split has no labels to train on or choose by; "
                    "use labelled splits (train, dev)"
                )

    def selection(self) -> str:
        if self.select != "auto":
            return self.select
        return "mean" if self.mode == "joint" else "last"


# --------------------------------------------------------------------------------------------------
# model


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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_tokenizer(path: str | Path):
    """The fast tokenizer of a checkpoint (`AutoTokenizer`). The released `fnlp/elasticbert-*` checkpoints hold a
    vocab.txt and neither tokenizer_config.json nor tokenizer.json (their model card loads `BertTokenizer` by
    hand), and AutoTokenizer knows no tokenizer for `model_type: elasticbert`: such a folder or hub repo gets
    BERT's WordPiece tokenizer of that vocab.txt."""
    from transformers import AutoTokenizer, BertTokenizerFast
    from transformers.utils import cached_file

    def has(name: str) -> bool:
        return cached_file(str(path), name, _raise_exceptions_for_missing_entries=False) is not None

    if not has("tokenizer_config.json") and not has("tokenizer.json") and has("vocab.txt"):
        return BertTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path), use_fast=True)


def check_checkpoint_dir(path: str | Path, *, tokenizer: bool = True, option: str = "--model") -> None:
    """A local checkpoint folder must hold a config, weights and (with `tokenizer`) tokenizer files; raise
    FileNotFoundError naming what is missing, with a hint when `path` is a run folder (`path/best`)."""
    path = Path(path)
    if not path.is_dir():
        return  # a hub id: transformers reports it
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files")
    if not missing:
        return
    hint = ""
    runs = [d for d in (BEST_DIR, LAST_DIR) if (path / d / "config.json").is_file()]
    if runs:
        hint = f"; it looks like a fine-tuning run folder: did you mean {path / runs[0]}?"
    raise FileNotFoundError(f"{option} {path}: no {', no '.join(missing)} in this folder{hint}")


def check_max_length(max_length: int, config, option: str = "--max-length") -> None:
    """Inputs longer than the model's position table cannot be encoded: refuse before running."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if limit and max_length > limit:
        raise ValueError(f"{option} {max_length}: the model has {limit} positions (use at most {limit})")


def default_exits(config, num_layers: int | None) -> int:
    """The checkpoint's exit layout (exits on its top `num_output_layers` layers) for a model truncated to
    `num_layers`: the exits that remain below the cut (at least one, the top layer's)."""
    total = int(config.num_hidden_layers)
    k = int(getattr(config, "num_output_layers", None) or total)
    n = int(num_layers or total)
    return max(1, min(n, n - (total - k)))


def load_model(
    cfg: FinetuneConfig, spec: TaskSpec, path: str | None = None, log: Callable[[str], None] = print
):
    """The ElasticBERT classifier of `cfg` from `path` (default `cfg.model`), in float32 whatever the dtype it was
    saved in (AdamW's updates round away in half-precision weights; mixed precision is Accelerate's autocast).
    Exit heads fine-tuned for another number of outputs (a 2-label model trained on for STS-B or SNLI) cannot be
    reused: they start fresh."""
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig
    from elue.elasticbert.modeling_elasticbert import ElasticBertForSequenceClassification

    path = path or cfg.model
    config = model_config(cfg, spec, path)
    saved_labels = int(ElasticBertConfig.from_pretrained(path).num_labels)
    if saved_labels == spec.num_labels:
        return ElasticBertForSequenceClassification.from_pretrained(path, config=config, dtype=torch.float32)
    model, info = ElasticBertForSequenceClassification.from_pretrained(
        path, config=config, dtype=torch.float32, ignore_mismatched_sizes=True, output_loading_info=True
    )
    mismatched = {k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", ())}
    if any(key.startswith("classifier") for key in mismatched):
        log(
            f"note: {path}'s exit heads have {saved_labels} outputs, {spec.name} needs {spec.num_labels}: "
            "the heads start from random weights"
        )
    return model


def model_config(cfg: FinetuneConfig, spec: TaskSpec, path: str | None = None):
    """The config `load_model` builds (layers, exits, labels), checked against the checkpoint's: ValueError
    for a depth, exit count or max length the checkpoint cannot give. Reads config.json only."""
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig

    path = path or cfg.model
    config = ElasticBertConfig.from_pretrained(path)
    check_max_length(cfg.max_length, config)
    layers = int(config.num_hidden_layers)
    option = "--layers" if cfg.mode == "static" else "--num-layers"
    if cfg.num_layers is not None and not 1 <= cfg.num_layers <= layers:
        raise ValueError(f"{option} {cfg.num_layers}: the model has {layers} layers")
    config.num_labels = spec.num_labels
    # set either way: a checkpoint fine-tuned on the other kind of task (STS-B -> SST-2) brings its own, and a
    # "regression" left on a classifier makes the saved model a regressor (MSE loss, no entropy exit)
    config.problem_type = "regression" if spec.is_regression else "single_label_classification"
    if cfg.mode == "static":
        if cfg.num_layers is not None:
            config.num_hidden_layers = int(cfg.num_layers)
        config.num_output_layers = 1
        _set(config, "gradient_equilibrium", False)
    elif cfg.mode == "joint":
        exits = cfg.num_output_layers
        if exits is None:
            exits = default_exits(config, cfg.num_layers)
        if cfg.num_layers is not None:
            config.num_hidden_layers = int(cfg.num_layers)
        if not 1 <= exits <= config.num_hidden_layers:
            raise ValueError(f"--exits {exits}: the model has {config.num_hidden_layers} layers")
        config.num_output_layers = int(exits)
        _set(config, "gradient_equilibrium", bool(cfg.gradient_equilibrium))
    else:
        raise ValueError(f"unknown mode {cfg.mode!r}: joint or static")
    return config


def _warn_untrained_pooler(cfg: FinetuneConfig, log: Callable[[str], None]) -> None:
    """Static k takes layer k's pooler; a checkpoint with exits on other layers only has none to give."""
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig

    source = ElasticBertConfig.from_pretrained(cfg.model)
    k = int(cfg.num_layers or source.num_hidden_layers)
    trained = exit_layers(source)
    if k not in trained:
        log(
            f"warning: {cfg.model} has exits at layers {trained} only: layer {k}'s pooler starts from "
            "random weights (convert with --exits covering it to start from a copied one)"
        )


def _set(config, key: str, value: Any) -> None:
    setattr(config, key, value)


def exit_layers(config) -> list[int]:
    """1-based layer numbers that carry an exit: the top `num_output_layers` layers."""
    n = int(config.num_hidden_layers)
    k = int(getattr(config, "num_output_layers", 1) or 1)
    return list(range(n - k + 1, n + 1))


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
def predict_all_exits(model, rows: Sequence[dict], collate, batch_size: int, device, progress: bool = False):
    """Logits of every exit for every row: array [E, N, C], rows in input order.

    Rows are batched by length (least padding) and put back in order.
    """
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    chunks: list[np.ndarray] = []
    it = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="eval", leave=False, unit="batch")
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
    return {"exits": per_exit, "last": perfs[-1], "mean": float(np.mean(perfs))}


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


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
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
    write(staging)
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
    "gradient_equilibrium": "--gradient-equilibrium",
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
    log(f"{spec.name}: {len(train_rows)} train / {len(dev_rows)} dev rows, max_length {cfg.max_length}")

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
    return _result(out, state, stopped_by)


def _read_rows(cfg: FinetuneConfig, spec: TaskSpec, tokenizer) -> tuple[list[dict], list[dict]]:
    """The training and dev rows, tokenized; each split drawn down to its limit (train_limit, dev_limit)."""
    train_ds = _sample(load_split(cfg, spec, cfg.train_split), cfg.train_limit, cfg.seed)
    dev_ds = _sample(load_split(cfg, spec, cfg.dev_split), cfg.dev_limit, cfg.seed)
    train_rows = tokenize(tokenizer, train_ds, spec, cfg.max_length)
    dev_rows = tokenize(tokenizer, dev_ds, spec, cfg.max_length)
    return train_rows, dev_rows


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
