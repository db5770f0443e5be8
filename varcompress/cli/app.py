"""The Typer app of the `varcompress` command and its `--version`; every `*_cmd.py` registers its verb here."""
from __future__ import annotations

import typer

from ..version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress pretrained VAR models by activating only part of them.")


def _version(value: bool):
    if value:
        typer.echo(f"varcompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Compress pretrained VAR models by activating only part of them."""
