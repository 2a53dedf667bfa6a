"""Write an ELUE submission from an ElasticBERT model run (spec §2, §3).

`predict_submission` runs a fine-tuned model on a task's test set and writes, per operating point, a
test file `OUT/<task>/<point>.tsv` (`index, pred, modules`) and once `OUT/<task>/model.py`, generated
from the model's config, whose `module_list` holds exactly the modules the traces name:

    emb          the embeddings block (word + position + token type lookups, LayerNorm); input (n) ids
    layer_<i>    encoder layer i (1-based); input (n, H)
    exit_<i>     the exit on layer i: pooler (dense + tanh) and classifier; input (H), the [CLS] vector

and `entire_model`, the whole multi-exit model, so the parameter count includes every exit it carries.

Operating points:
- ``static k``: exit k with layers 1..k -> ``(n),emb; (n,H),layer_1; ...; (n,H),layer_k; (H),exit_k``.
  For a jointly trained model this reads exit k of the joint model; for a static model k is its depth.
- ``entropy τ`` / ``patience t``: dynamic early exit. The trace lists each layer up to the example's
  exit layer and, after each layer that carries an exit, that exit (every exit is evaluated on the way):
  ``(n),emb; (n,H),layer_1; (H),exit_1; ...; (n,H),layer_e; (H),exit_e``.

n is the example's unpadded token count with special tokens (after truncation to `max_length`).
Dynamic points are computed by the batched early-exit engine (`elue.elasticbert.early_exit`) or, with
``engine="replay"``, from one full pass that keeps every exit's logits and replays the exit rule per
threshold (the same predictions, exit layers and traces: exits do not change the hidden states).

The points and their replayed exit rules are in export_points.py; the traces, their closed-form cost and the
generated model.py in export_cost.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .export_cost import dynamic_trace, formula_mflops, static_trace, write_model_py
from .export_points import Point, check_points, exit_layer_numbers, replay_exits

#: patience on a regression head: "unchanged" means a change below this (the early-exit engine's default)
DEFAULT_REGRESSION_THRESHOLD = 0.1


@dataclass
class PointSummary:
    name: str
    kind: str
    value: float
    file: str
    examples: int
    mean_exit_layer: float
    exit_histogram: dict[int, int]
    formula_mflops: float  # mean over examples, spec §3 closed form
    dev: dict[str, float] | None = None  # metrics on a labelled split, when asked


@dataclass
class PredictResult:
    task: str
    out_dir: str
    model_py: str
    points: list[PointSummary] = field(default_factory=list)
    # how the points were made (a patience point on a regression task means nothing without its threshold)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "out_dir": self.out_dir,
            "model_py": self.model_py,
            "settings": self.settings,
            "points": [asdict(p) for p in self.points],
        }


def load_finetuned(model_dir: str | Path):
    """(model, tokenizer, info) from a fine-tuned checkpoint folder (`finetune.json` optional)."""
    from elue.elasticbert.finetune_model import check_checkpoint_dir, load_tokenizer
    from elue.elasticbert.modeling_elasticbert import ElasticBertForSequenceClassification

    model_dir = Path(model_dir)
    check_checkpoint_dir(model_dir, option="--model")
    model, loading = ElasticBertForSequenceClassification.from_pretrained(
        str(model_dir), output_loading_info=True
    )
    untrained = sorted(k for k in loading["missing_keys"] if k.startswith("classifier"))
    if untrained:  # e.g. `elue convert`'s output: its classifiers would be drawn at random on every load
        raise ValueError(
            f"{model_dir} holds no classifier weights ({', '.join(untrained[:4])}"
            f"{', ...' if len(untrained) > 4 else ''}): it is not fine-tuned; run `elue finetune` on it first"
        )
    _refuse_nonfinite_weights(model, model_dir)
    tokenizer = load_tokenizer(model_dir)
    info_path = model_dir / "finetune.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else _run_options(model_dir)
    return model, tokenizer, info


def _refuse_nonfinite_weights(model, model_dir: Path) -> None:
    """A checkpoint of a diverged run (NaN or infinite weights) is refused: its classifiers' NaN logits read as
    class 0 for every example (argmax), so `elue predict` wrote a submission of 0s without a word."""
    import torch

    bad = [
        name
        for name, t in model.state_dict().items()
        if t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:
        raise ValueError(
            f"{model_dir} holds NaN or infinite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}; "
            f"{len(bad)} tensors): its fine-tuning diverged; fine-tune it again with a lower --lr"
        )


def _run_options(model_dir: Path) -> dict:
    """The task and max length of a run's `RUN/last`, which holds no finetune.json, from the run's options
    (`RUN/config.json`): without them an MRPC run's last/ predicted SST-2 without a word, and at max length 512
    where it was fine-tuned at 64."""
    from .finetune_checkpoints import LAST_DIR

    if model_dir.name != LAST_DIR:
        return {}
    try:
        options = json.loads((model_dir.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(options, dict) or "model_type" in options or not isinstance(options.get("task"), str):
        return {}  # not a fine-tuning run's options
    info = {"task": options["task"], "from": "the run's config.json"}
    if isinstance(options.get("max_length"), int):
        info["max_length"] = options["max_length"]
    return info


def run_points(
    model,
    rows: Sequence[dict],
    points: Sequence[Point],
    *,
    regression: bool,
    batch_size: int = 64,
    device: Any = "cpu",
    engine: str = "replay",
    regression_threshold: float = 0.1,
    progress: bool = False,
    desc: str = "predict",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{point name: (pred [N], exit layer [N])} for tokenised `rows` (`desc`: the progress bar's label)."""
    from elue.elasticbert.finetune import predict_all_exits
    from elue.elasticbert.task_data import make_collate

    exits = exit_layer_numbers(model.config)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    collate = make_collate(_PadOnly(model.config), regression)
    need_replay = [p for p in points if p.kind == "static" or engine == "replay"]
    if need_replay:
        logits = predict_all_exits(model, rows, collate, batch_size, device, progress, desc=desc)
        for p in need_replay:
            out[p.name] = replay_exits(logits, p, exits, regression, regression_threshold)
    for p in points:
        if p.name in out:
            continue
        out[p.name] = _engine_run(
            model, rows, p, batch_size, device, regression_threshold, progress, f"{desc} {p.name}"
        )
    return {p.name: out[p.name] for p in points}


class _PadOnly:
    """Stand-in tokenizer for `make_collate`: only the pad id is used."""

    def __init__(self, config):
        self.pad_token_id = getattr(config, "pad_token_id", 0) or 0


def _engine_run(model, rows, point: Point, batch_size, device, regression_threshold, progress=False, desc=""):
    """One dynamic point through the batched early-exit engine (`early_exit.run_early_exit`)."""
    from elue.elasticbert.early_exit import run_early_exit

    features = [{k: v for k, v in r.items() if k in ("input_ids", "token_type_ids")} for r in rows]
    res = run_early_exit(
        model,
        features,
        rule=point.kind,
        threshold=point.value,
        regression_threshold=regression_threshold,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc=desc,
    )
    return res.predictions.numpy(), res.exit_layers.numpy().astype(np.int64)


def predict_submission(
    model_dir: str | Path,
    task: str,
    out_dir: str | Path,
    points: Sequence[Point],
    *,
    data_dir: str | Path | None = None,
    source: str = "elue",
    hub_path: str | None = None,
    split: str = "test",
    max_length: int | None = None,
    batch_size: int = 64,
    engine: str = "replay",
    regression_threshold: float | None = None,
    limit: int | None = None,
    dev_split: str | None = None,
    cpu: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    any_task: bool = False,
    log=print,
) -> PredictResult:
    """Run the model of `model_dir` on `task`'s test split and write `out_dir/<task>/{model.py, *.tsv}`.

    `dev_split` (e.g. "dev"): also score every point on that labelled split (reported, not written).
    `overwrite`: replace the test files, model.py and points.json of an earlier run in `out_dir/<task>`
    (without it a task folder that holds files is refused: stale files would be scored with the new model.py).
    `any_task`: accept a checkpoint whose finetune.json names another task.
    Every option is checked before the model runs.
    """
    import torch

    from elue.elasticbert.finetune_config import FinetuneConfig
    from elue.elasticbert.finetune_model import check_max_length
    from elue.elasticbert.task_data import cut_note, elue_task_spec, load_split, tokenize
    from elue.testfile import write_test_file

    spec = elue_task_spec(task)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    task_dir = _task_dir(out_dir, spec.name, data_dir if source == "elue" else None, overwrite)
    model, tokenizer, info = load_finetuned(model_dir)
    trained_on = info.get("task")
    if trained_on and not any_task and _task_key(trained_on) != _task_key(spec.name):
        raise ValueError(
            f"{model_dir} was fine-tuned on {trained_on}, not {spec.name} ({info.get('from', 'finetune.json')}); "
            "pass --any-task to run it anyway"
        )
    if int(getattr(model.config, "num_labels", spec.num_labels)) != spec.num_labels:
        raise ValueError(
            f"model has {model.config.num_labels} outputs, task {spec.name} needs {spec.num_labels}"
        )
    # no --max-length and no finetune.json: the longest the model takes, at most BERT's 512
    default_length = info.get("max_length") or min(512, int(model.config.max_position_embeddings))
    max_length = int(max_length if max_length is not None else default_length)
    if max_length < 1:
        raise ValueError(f"--max-length must be >= 1, got {max_length}")
    check_max_length(max_length, model.config)
    check_points(
        points,
        model.config,
        regression=spec.is_regression,
        regression_threshold=regression_threshold,
        log=log,
    )
    if regression_threshold is None:
        regression_threshold = DEFAULT_REGRESSION_THRESHOLD
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    model.to(device)
    cfg = FinetuneConfig(task=spec.name, model=str(model_dir), output_dir=".", source=source)
    cfg.data_dir = str(data_dir) if data_dir else None
    cfg.hub_path = hub_path

    ds = load_split(cfg, spec, split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    rows = tokenize(tokenizer, ds, spec, max_length, with_labels=False)
    index = np.asarray(ds["index"], dtype=np.int64) if "index" in ds.column_names else np.arange(len(rows))
    n_tokens = np.array([len(r["input_ids"]) for r in rows], dtype=np.int64)
    cut = cut_note(max_length, **{split: rows})
    log(
        f"{spec.name} {split}: {len(rows)} rows, mean {n_tokens.mean():.2f} tokens (max_length {max_length}{cut})"
    )

    run = partial(
        run_points,
        model,
        points=points,
        regression=spec.is_regression,
        batch_size=batch_size,
        device=device,
        engine=engine,
        regression_threshold=regression_threshold,
    )
    results = run(rows, progress=progress)

    dev_scores: dict[str, dict[str, float]] = {}
    if dev_split:
        dev_ds = load_split(cfg, spec, dev_split)
        dev_rows = tokenize(tokenizer, dev_ds, spec, max_length, with_labels=True)
        # said and shown like the test split: IMDb's 5,000 dev reviews took minutes without a word after the bar
        dev_tokens = np.array([len(r["input_ids"]) for r in dev_rows])
        log(
            f"{spec.name} {dev_split}: {len(dev_rows)} rows, mean {dev_tokens.mean():.2f} tokens, scoring each point"
        )
        dev_res = run(dev_rows, progress=progress, desc=dev_split)
        y = np.asarray([r["labels"] for r in dev_rows])
        for name, (pred, _) in dev_res.items():
            dev_scores[name] = spec.metric(y, pred)

    config = model.config
    task_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # the earlier run's files go: none of them describes this model
        for old in task_dir.iterdir():
            if old.is_file() and (old.suffix == ".tsv" or old.name in ("model.py", "points.json")):
                old.unlink()
    model_py = write_model_py(config, task_dir / "model.py")
    settings: dict[str, Any] = {
        "model": str(model_dir),
        "split": split,
        "max_length": max_length,
        "engine": engine,
    }
    if spec.is_regression:
        settings["regression_threshold"] = regression_threshold
    summary = PredictResult(task=spec.name, out_dir=str(out_dir), model_py=str(model_py), settings=settings)
    for p in points:
        pred, layer = results[p.name]
        traces, flops = _traces(p, n_tokens, layer, config)
        pred_out = pred.astype(np.float64) if spec.is_regression else pred.astype(np.int64)
        path = write_test_file(task_dir / f"{p.name}.tsv", index, pred_out, traces)
        hist = {int(k): int(v) for k, v in zip(*np.unique(layer, return_counts=True), strict=True)}
        summary.points.append(
            PointSummary(
                name=p.name,
                kind=p.kind,
                value=p.value,
                file=str(path),
                examples=len(rows),
                mean_exit_layer=float(layer.mean()),
                exit_histogram=hist,
                formula_mflops=flops / max(1, len(rows)),
                dev=dev_scores.get(p.name),
            )
        )
        extra = f", dev {dev_scores[p.name]['performance']:.2f}" if p.name in dev_scores else ""
        log(
            f"{p.name}: mean exit layer {layer.mean():.2f}, "
            f"{summary.points[-1].formula_mflops:.1f} MFLOPs (formula){extra} -> {path}"
        )
    from .finetune_checkpoints import _jsonable

    (task_dir / "points.json").write_text(
        json.dumps(_jsonable(summary.to_dict(), nan_as_none=True), indent=2)
    )
    return summary


def _traces(point: Point, n_tokens: np.ndarray, layer: np.ndarray, config) -> tuple[list, float]:
    """Every example's trace and their MFLOPs summed (formula), each computed once per (tokens, exit layer)."""
    hidden = int(config.hidden_size)
    exits = exit_layer_numbers(config)
    traces = []
    flops = 0.0
    cache: dict[tuple[int, int], tuple[list, float]] = {}
    for n, e in zip(n_tokens.tolist(), layer.tolist(), strict=True):
        key = (n, e)
        if key not in cache:
            calls = (
                static_trace(n, e, hidden) if point.kind == "static" else dynamic_trace(n, e, hidden, exits)
            )
            cache[key] = (calls, formula_mflops(config, calls))
        calls, mf = cache[key]
        traces.append(calls)
        flops += mf
    return traces, flops


def _task_dir(out_dir: str | Path, task: str, data_dir: str | Path | None, overwrite: bool) -> Path:
    """`out_dir/<task>`, checked before the model runs, not after: not a file, not a data folder, and without
    files of an earlier run unless `overwrite`."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise FileExistsError(f"--output {out_dir}: exists and is not a folder")
    task_dir = Path(out_dir) / task
    old_files = sorted(p.name for p in task_dir.iterdir() if p.is_file()) if task_dir.is_dir() else []
    _refuse_data_folder(task_dir, old_files, data_dir)
    if old_files and not overwrite:
        shown = ", ".join(old_files[:5]) + (", ..." if len(old_files) > 5 else "")
        raise FileExistsError(
            f"{task_dir} already holds files ({shown}): use --overwrite to replace the test files, "
            "model.py and points.json of an earlier run (other files stay), or another --output"
        )
    return task_dir


# the files of a task in an ELUE-layout data folder (`elue.data.split_path`)
_DATA_FILES = frozenset(
    f"{split}{ext}" for split in ("train", "dev", "test", "test_labels") for ext in (".tsv", ".tsv.gz")
)


def _refuse_data_folder(task_dir: Path, files: Sequence[str], data_dir: str | Path | None) -> None:
    """An --output whose task folder is a data folder's (`--output ../shared/data`): `--overwrite` removed its
    train.tsv, dev.tsv, test.tsv and test_labels.tsv as the *.tsv of an earlier run."""
    from elue.elasticbert.task_data import default_data_dir

    data = [name for name in files if name in _DATA_FILES]
    root = data_dir if data_dir is not None else default_data_dir()
    same = root is not None and task_dir.resolve() == (Path(root) / task_dir.name).resolve()
    if data or same:
        held = f" (it holds {', '.join(data)})" if data else ""
        raise FileExistsError(
            f"{task_dir} is a task folder of ELUE data{held}, not of a submission: choose another --output"
        )


def _task_key(name: str) -> str:
    """Task names compared across spellings (GLUE sst2 = ELUE sst-2)."""
    return name.lower().replace("-", "").replace("_", "")
