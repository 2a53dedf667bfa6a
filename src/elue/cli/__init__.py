"""`elue …` command line. Each sub-module registers its own commands and holds no logic of its own:
it parses arguments, calls the library and prints. Heavy imports happen inside the commands so
`elue --help` stays fast."""

from __future__ import annotations

import typer

from . import elasticbert_commands, pretrain_commands, server_commands, toolkit_commands

app = typer.Typer(
    name="elue",
    help="ELUE: score efficiency-aware NLP submissions, run the leaderboard, train ElasticBERT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

for _module in (toolkit_commands, elasticbert_commands, pretrain_commands, server_commands):
    _module.register(app)


def main(args: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    no_type_on_flags(command)
    command(args=args, prog_name="elue")


def no_type_on_flags(command) -> None:  # noqa: ANN001 (a click command or group)
    """Typer's help shows a type for every option, so flags read as if they took a value (`--cpu <bool>`):
    an empty metavar leaves their type column blank. Options that take a value keep theirs."""
    import click

    # --help is made on demand, once per command (click caches it since 8.1.8): made here, it is blanked too
    help_option = command.get_help_option(click.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        no_type_on_flags(sub)
