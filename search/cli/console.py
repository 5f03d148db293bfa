"""Shared terminal output for the command line: the console, JSON flag, the error exit and the internal-error guard."""

from __future__ import annotations

import functools
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import click
import typer
from pydantic import ValidationError
from rich.console import Console

from distilsearch.kdlib.core.paths import cache_dir

console = Console()
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
INTERNAL_ERROR_EXIT = 1
_P = ParamSpec("_P")
_R = TypeVar("_R")


def fail(message: str) -> NoReturn:
    """Print an error and exit with status 2 (bad input or unavailable resource)."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def invalid_settings(error: ValidationError) -> str:
    """One line per invalid field of a pydantic error: the field, the value given and what was expected."""
    return "; ".join(
        f"{'.'.join(map(str, problem['loc'])) or 'settings'}={problem.get('input')!r}: {problem['msg']}"
        for problem in error.errors()
    )


def _crash_log(command: str, error: BaseException) -> Path:
    """Write the full traceback under ``$DISTILSEARCH_HOME/logs`` (else the temporary folder); return the file."""
    text = "".join(traceback.format_exception(error))
    name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path = cache_dir("logs") / name
        path.write_text(text, encoding="utf-8")
    except OSError:
        path = Path(tempfile.gettempdir()) / f"distilsearch-{name}"
        path.write_text(text, encoding="utf-8")
    return path


def guarded(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a CLI command so that an unexpected error prints one line and where its full traceback was written.

    Expected errors already exit through :func:`fail` (status 2); an internal error exits with status 1.
    """

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as error:
            log = _crash_log(command.__name__, error)
            Console(stderr=True, soft_wrap=True).print(
                f"[bold red]internal error:[/] {type(error).__name__}: {error} (full traceback in {log})",
                highlight=False,
            )
            raise typer.Exit(code=INTERNAL_ERROR_EXIT) from None

    return run
