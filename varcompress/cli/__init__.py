"""The `varcompress` command line: one verb per workflow (`app.py`: the Typer app; `*_cmd.py`: one verb each).

Every command turns a `VarcompressError` (bad file, bad flag, bad recipe) and every
operating-system error (exists, not a directory, permission, disk full, read-only file
system: the path and the cause) into one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import sys

import typer

from ..durable import os_error_line
from ..errors import VarcompressError
from . import (bench_cmd, compare_cmd, convert_cmd, demo_cmd, distill_cmd,  # noqa: F401; each registers its verb
               eval_cmd, export_cmd, fid_cmd, generate_cmd, inspect_cmd, prune_cmd, selftest_cmd, testbed_cmd)
from .app import app


def main(argv: list[str] | None = None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):  # click returns typer.Exit(code)'s code here
            return rv
    except VarcompressError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except OSError as e:  # one not already turned into a VarcompressError by the writers
        typer.echo(f"error: {os_error_line(e)}", err=True)
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # usage errors (Typer's bundled click): their message, on one line
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            ctx = getattr(e, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{where}", err=True)
            return e.exit_code
        raise
    return 0


def entry() -> None:
    sys.exit(main())
