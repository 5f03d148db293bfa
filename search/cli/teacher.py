"""``distilsearch teacher``: fine-tune (or load) a task's teacher, with a flag for every FineTuneRecipe field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from distilsearch.kdlib.training.recipe import FineTuneRecipe
from distilsearch.search.cli.console import JsonFlag, console, fail, invalid_settings
from distilsearch.search.cli.data_options import TeacherOption, checked_task_source, data_flags, data_spec
from distilsearch.search.cli.options import collect_model_values, model_flags


@data_flags
@model_flags((FineTuneRecipe, "Fine-tuning"))
def teacher(
    task: Annotated[str | None, typer.Option(help="Task name (see `distilsearch tasks`); default rt-polarity.")] = None,
    base: Annotated[Path | None, typer.Option(help="Local base model folder (default: embedded MiniLM).")] = None,
    teacher_dir: TeacherOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    json_output: JsonFlag = False,
    **values: Any,
) -> None:
    """Fine-tune (or load from the cache) the teacher of a task and print its accuracy on validation, test and every
    OOD set; with --teacher, measure your fine-tuned teacher on the task (once; then from the cache)."""
    from distilsearch.kdlib.data.assets import AssetError
    from distilsearch.kdlib.training.finetune import TrainingDivergedError
    from distilsearch.kdlib.training.teacher_folder import load_task_for_teacher, teacher_for

    data = data_spec(values)
    source = checked_task_source(task, data)
    try:
        recipe = FineTuneRecipe(**collect_model_values(FineTuneRecipe, values))
    except ValidationError as error:
        fail(f"invalid teacher recipe: {invalid_settings(error)}")
    try:
        loaded = load_task_for_teacher(source, teacher_dir, progress=not json_output)
        result = teacher_for(
            loaded, folder=teacher_dir, base_dir=base, recipe=recipe, device=device, progress=not json_output
        )
    except (AssetError, OSError, ValueError, TrainingDivergedError) as error:
        fail(str(error))
    summary = {
        "task": result.task,
        "path": str(result.path),
        "from_cache": result.from_cache,
        "seconds": round(result.seconds, 2),
        "key": result.key,
        "scores": result.metrics["scores"],
        "train_seconds": result.metrics.get("train_seconds"),
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
    if teacher_dir is not None:
        source_text = "scores from cache" if result.from_cache else f"scored in {result.metrics['eval_seconds']:.0f} s"
    else:
        source_text = "from cache" if result.from_cache else f"trained in {result.metrics['train_seconds']:.0f} s"
    console.print(f"teacher ({source_text}, {result.seconds:.1f} s in all): {result.path}", highlight=False)
