"""The ``distilsearch`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from distilsearch.kdlib.data.assets import AssetError, asset_status, fetch_asset, get_asset
from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.kdlib.training.finetune import FineTuneRecipe, TrainingDivergedError
from distilsearch.kdlib.training.teacher import get_teacher
from distilsearch.search.cli.console import JsonFlag, console, fail, guarded, invalid_settings
from distilsearch.search.cli.distill import distill
from distilsearch.search.cli.pareto import pareto
from distilsearch.search.cli.search import export, search
from distilsearch.search.cli.store import store_app

app = typer.Typer(help="Find small, fast BERT students by knowledge distillation and architecture search.")
app.add_typer(store_app, name="store")


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


@app.command()
@guarded
def teacher(
    task: Annotated[str, typer.Option(help="Task name (see `distilsearch tasks`).")] = "rt-polarity",
    epochs: Annotated[int, typer.Option(min=1)] = FineTuneRecipe().epochs,
    learning_rate: Annotated[float, typer.Option(min=0)] = FineTuneRecipe().learning_rate,
    batch_size: Annotated[int, typer.Option(min=1)] = FineTuneRecipe().batch_size,
    max_length: Annotated[int, typer.Option(min=8)] = FineTuneRecipe().max_length,
    warmup_ratio: Annotated[float, typer.Option(min=0, max=0.99)] = FineTuneRecipe().warmup_ratio,
    max_train_examples: Annotated[int | None, typer.Option(min=1, help="Cap the training set (default: all).")] = None,
    seed: int = FineTuneRecipe().seed,
    base: Annotated[Path | None, typer.Option(help="Local base model folder (default: embedded MiniLM).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    json_output: JsonFlag = False,
) -> None:
    """Fine-tune (or load from the cache) the teacher of a task and print its accuracy on test and every OOD set."""
    if task not in TASKS:
        fail(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    try:
        recipe = FineTuneRecipe(
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            max_length=max_length,
            warmup_ratio=warmup_ratio,
            max_train_examples=max_train_examples,
            seed=seed,
        )
        result = get_teacher(task, recipe, base_dir=base, device=device, progress=not json_output)
    except ValidationError as error:
        fail(f"invalid teacher recipe: {invalid_settings(error)}")
    except (AssetError, ValueError, TrainingDivergedError) as error:
        fail(str(error))
    summary = {
        "task": result.task,
        "path": str(result.path),
        "from_cache": result.from_cache,
        "seconds": round(result.seconds, 2),
        "key": result.key,
        "scores": result.metrics["scores"],
        "train_seconds": result.metrics["train_seconds"],
        "notes": result.metrics["notes"],
    }
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    table = Table("set", "examples", "accuracy", "majority baseline", title=f"teacher for {result.task}")
    for name, score in result.metrics["scores"].items():
        table.add_row(name, str(score["examples"]), f"{score['accuracy']:.4f}", f"{score['majority_accuracy']:.4f}")
    console.print(table)
    for name, note in result.metrics["notes"].items():
        console.print(f"[dim]{name}: {note}[/]", highlight=False)
    source = "from cache" if result.from_cache else f"trained in {result.metrics['train_seconds']:.0f} s"
    console.print(f"teacher ({source}, {result.seconds:.1f} s in all): {result.path}", highlight=False)


app.command()(guarded(distill))
app.command()(guarded(pareto))
app.command()(guarded(search))
app.command()(guarded(export))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="distilsearch")
