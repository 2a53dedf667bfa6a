"""`elue pretrain --config FILE [key=value ...]`: ElasticBERT pre-training (elue.elasticbert.pretraining).

Runs as it is on one CPU or GPU, and data-parallel under a launcher:
    torchrun --nproc_per_node 8 $(which elue) pretrain --config run.yaml
    accelerate launch --multi_gpu --num_processes 8 -m elue.elasticbert.pretraining --config run.yaml
"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail

HELP = (
    "Pre-train ElasticBERT (multi-exit MLM + SOP, gradient equilibrium, grouped training) on local text files "
    "or Hugging Face corpora. Settings come from a YAML/JSON file; KEY=VALUE overrides follow "
    "(e.g. max_steps=100 model_config.hidden_size=64 exit_groups=null). See docs/pretraining.md."
)


def pretrain(
    config: Path = typer.Option(
        ..., "--config", "-c", exists=True, dir_okay=False, help="YAML or JSON settings"
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides (values parsed as YAML)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved settings and exit"),
) -> None:
    import json

    from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError

    try:
        cfg = PretrainConfig.from_file(config, overrides or [])
    except SettingsError as err:  # unknown key, wrong type or range, exit groups, a file that does not parse
        _fail_once(str(err))
    if print_config:
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
        return
    from elue.elasticbert.pretraining.trainer import pretrain as run

    try:
        summary = run(cfg)
    # found at start-up (files, tokenizer, model sizes, exit groups); other errors keep their traceback
    except SettingsError as err:
        _fail_once(str(err), getattr(err, "mid_run_process", None))
    last = summary.get("last_log") or {}
    if last and summary.get("main", True):
        logged = int(last.get("step", summary["step"]))
        loss = f"loss {last.get('loss')}"
        if logged != summary["step"]:  # stopped between logging steps
            loss = f"last logged step {logged}: {loss}"
        saved = f"; model saved to {summary['model_dir']}" if summary.get("saved", True) else ""
        typer.echo(f"step {summary['step']}: {loss}{saved}")
    elif summary.get("main", True) and summary.get("trained", True) and summary.get("saved", True):
        # stopped (stop_after_steps, a signal) before this run reached a logging step: its work is saved all the same
        typer.echo(
            f"step {summary['step']}: no loss logged in this run yet; model saved to {summary['model_dir']}"
        )
    from elue.elasticbert.accelerate_state import end_distributed_process
    from elue.elasticbert.stopping import exit_code

    code = 0
    if summary.get("stopped_by"):
        if summary.get("main", True):
            typer.echo(
                f"stopped by {summary['stopped_by']} after step {summary['step']}, checkpoint saved: "
                "the same command resumes from it",
                err=True,
            )
        code = exit_code(summary["stopped_by"])
    end_distributed_process(code)  # under torchrun: ends here (a teardown could hang)
    if code:
        raise typer.Exit(code=code)


def _fail_once(message: str, mid_run_process: int | None = None) -> None:
    """The `error:` line from the first process only (under torchrun every process finds the same error at
    start-up: they agree on it). An error in mid-run (a corpus file that fails to read) is found by the
    processes that read it: each of them reports it, naming itself."""
    import os

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        if mid_run_process is None:
            raise typer.Exit(code=1)
        fail(f"process {rank}: {message}")
    fail(message)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("pretrain", help=HELP)(pretrain)


def app_for_module():  # noqa: ANN201 (a click command)
    """A one-command app for `python -m elue.elasticbert.pretraining`, its flags shown as `elue`'s are (no
    `--print-config <bool>`, as if it took a value)."""
    from elue.cli import no_type_on_flags

    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    app.command(help=HELP)(pretrain)
    command = typer.main.get_command(app)
    no_type_on_flags(command)
    return command
