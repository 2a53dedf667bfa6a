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


def main() -> None:
    app()
