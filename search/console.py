"""Shared terminal output for the command line: the console, JSON flag and the error exit."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

console = Console()
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def fail(message: str) -> NoReturn:
    """Print an error and exit with status 2 (bad input or unavailable resource)."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)
