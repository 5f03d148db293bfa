"""``distilsearch pareto``: the Pareto frontier and hypervolume of a search run, optionally beside other runs."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from distilsearch.search.cli.console import JsonFlag, console, fail
from distilsearch.search.run_layout import FRONTIER_PNG, HYPERVOLUME_PNG
from distilsearch.search.run_layout import STORE as STORE_FILE

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

    from distilsearch.kdlib.students.candidate import EvalResult

METRIC_WIDTH = 28
MEMBER_WIDTH = 16
PREDICTED = "predicted (surrogate)"


@dataclass(frozen=True)
class Run:
    """One run folder's evaluations, in the order they were stored."""

    name: str
    path: Path
    task: str | None
    results: list[EvalResult]


def _load_run(path: Path, name: str) -> Run:
    from distilsearch.envs.store import EvaluationStore, StoreError
    from distilsearch.search.pareto import most_trained

    if not path.is_dir():
        fail(f"run folder {path} does not exist or is not a folder")
    store_path = path / STORE_FILE
    if not store_path.is_file():
        fail(f"run folder {path} has no evaluation store ({STORE_FILE})")
    try:
        store = EvaluationStore(store_path, create=False)
        rows = store.rows()
        store.close()
    except StoreError as error:
        fail(str(error))
    tasks = sorted({row.task for row in rows})
    if len(tasks) > 1:
        fail(f"run folder {path} holds evaluations of several tasks ({', '.join(tasks)}); a frontier needs one task")
    return Run(name, path, tasks[0] if tasks else None, most_trained(row.result for row in rows))


def _load_runs(paths: list[Path]) -> list[Run]:
    resolved = [path.resolve() for path in paths]
    repeated = sorted({str(path) for path in paths if resolved.count(path.resolve()) > 1})
    if repeated:
        fail(f"run folder given more than once: {', '.join(repeated)}")
    names = [path.resolve().name or str(path) for path in paths]
    unique = [name if names.count(name) == 1 else str(path) for name, path in zip(names, paths, strict=True)]
    runs = [_load_run(path, name) for path, name in zip(paths, unique, strict=True)]
    tasks = {run.task for run in runs if run.task is not None}
    if len(tasks) > 1:
        detail = ", ".join(f"{run.name} ({run.task})" for run in runs if run.task is not None)
        fail(f"cannot compare runs of different tasks: {detail}")
    return runs


def _parse_reference(text: str, names: tuple[str, ...]) -> dict[str, float]:
    from distilsearch.search.pareto import get_objective

    reference: dict[str, float] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, equals, value = part.partition("=")
        if not equals:
            fail(f"--reference entry {part!r} must look like NAME=VALUE, e.g. latency=20")
        try:
            name = get_objective(key.strip()).name
            number = float(value)
        except ValueError as error:
            fail(f"--reference entry {part!r}: {error}")
        if name not in names:
            fail(f"--reference names {name!r}, which is not among the objectives ({', '.join(names)})")
        if not math.isfinite(number):
            fail(f"--reference entry {part!r} must give a finite number")
        reference[name] = number
    return reference


def _cell(value: Any) -> str:
    import numpy as np

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def _frontier_tables(run: Run, frame: pd.DataFrame, width: int) -> list[Table]:
    """Metrics as rows and frontier members (best first) as columns, split so each table fits ``width``; the
    ``predicted`` column is shown as a ``source`` row: "predicted (surrogate)" or "measured"."""
    from rich.table import Table

    frame = frame.rename(columns={"predicted": "source"})
    frame["source"] = frame["source"].map({True: PREDICTED, False: "measured"})
    fits = max(1, (width - METRIC_WIDTH - 4) // (MEMBER_WIDTH + 3))
    per_table = math.ceil(len(frame) / math.ceil(len(frame) / fits))
    tables = []
    for start in range(0, len(frame), per_table):
        chunk = frame.iloc[start : start + per_table]
        stop = start + len(chunk)
        part = f" (members {start + 1}-{stop} of {len(frame)})" if per_table < len(frame) else ""
        title = f"frontier of {run.name}{part}"
        table = Table(title=title)
        table.add_column("metric", no_wrap=True, max_width=METRIC_WIDTH)
        for rank in range(start + 1, stop + 1):
            table.add_column(f"#{rank}", max_width=MEMBER_WIDTH, overflow="fold")
        for column in frame.columns:
            table.add_row(column, *(_cell(value) for value in chunk[column].tolist()))
        tables.append(table)
    return tables


def _status_line(run: Run, names: tuple[str, ...]) -> str:
    from distilsearch.search.pareto import usable

    counts = Counter(result.status for result in run.results)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    line = f"{len(run.results)} evaluation(s) ({statuses or 'none'}), {len(usable(run.results, names))} usable"
    predicted = predicted_count(run.results)
    return line + (f"; {predicted} {PREDICTED}, not measured" if predicted else "")


def predicted_count(results: list[EvalResult]) -> int:
    """How many of ``results`` a surrogate predicted."""
    from distilsearch.envs.surrogate import is_predicted

    return sum(is_predicted(result) for result in results)


def pareto(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help=f"A run folder holding {STORE_FILE}.", show_default=False)
    ],
    objectives: Annotated[
        str,
        typer.Option(
            help="Comma-separated objectives: accuracy (validation), ood_accuracy (OOD dev), latency[@BxS], speedup, "
            "params, size; test_accuracy and ood_test_accuracy give post-hoc views on the test data."
        ),
    ] = "accuracy,latency",
    compare: Annotated[
        list[Path] | None, typer.Option(help="Another run folder to compare with (repeatable).", show_default=False)
    ] = None,
    json_output: JsonFlag = False,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Reference point as NAME=VALUE pairs in natural units, e.g. 'latency=20,accuracy=0.5'. "
            "Defaults: accuracy 0, ood_accuracy 0, latency the teacher's, params and size 1.1 x the largest seen.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show the Pareto frontier and hypervolume of a run (and of --compare runs); write frontier.png and
    hypervolume.png into RUN_DIR (the first two objectives are plotted, the second on the x axis)."""
    report_frontiers(run_dir, objectives=objectives, compare=compare, json_output=json_output, reference=reference)


def report_frontiers(
    run_dir: Path, *, objectives: str, compare: list[Path] | None, json_output: bool, reference: str | None
) -> None:
    """Print the frontier tables (or the JSON report) of ``run_dir`` and the ``compare`` runs; write the plots."""
    from distilsearch.search.pareto import (
        default_reference,
        get_objective,
        hypervolume,
        hypervolume_trace,
        objective_matrix,
        objective_names,
        reference_point,
        teacher_value,
        usable,
    )
    from distilsearch.search.plots import plot_frontier, plot_hypervolume
    from distilsearch.search.run import labelled_frontier

    try:
        names = objective_names(objectives)
    except ValueError as error:
        fail(str(error))
    if len(names) < 2:
        fail(f"objectives={objectives!r} must name at least two objectives for a frontier")
    given = _parse_reference(reference, names) if reference else {}
    runs = _load_runs([run_dir, *(compare or [])])
    try:
        bound = default_reference([result for run in runs for result in run.results], names, given)
    except ValueError as error:
        fail(f"{error} (with --reference)")
    vector = reference_point(names, bound)
    frames = {run.name: labelled_frontier(run.results, names) for run in runs}
    volumes = {run.name: hypervolume(objective_matrix(run.results, names), vector) for run in runs}
    traces = {run.name: hypervolume_trace(run.results, names, bound) for run in runs}
    teacher = {name: teacher_value(runs[0].results, name) for name in names}
    star = None if teacher[names[1]] is None or teacher[names[0]] is None else (teacher[names[1]], teacher[names[0]])
    described = ", ".join(f"{name}={value:g}" for name, value in bound.items())
    try:
        frontier_png = plot_frontier(
            {run.name: run.results for run in runs}, run_dir / FRONTIER_PNG, star, x=names[1], y=names[0]
        )
        hypervolume_png = plot_hypervolume(
            traces, run_dir / HYPERVOLUME_PNG, title=f"hypervolume of {', '.join(names)} (reference {described})"
        )
    except OSError as error:
        fail(f"cannot write the plots into {run_dir}: {error}")
    if json_output:
        report = {
            "objectives": [
                {"name": name, "direction": get_objective(name).direction, "label": get_objective(name).label}
                for name in names
            ],
            "reference": bound,
            "teacher": teacher,
            "plots": {"frontier": str(frontier_png), "hypervolume": str(hypervolume_png)},
            "runs": [
                {
                    "run": run.name,
                    "path": str(run.path),
                    "task": run.task,
                    "evaluations": len(run.results),
                    "usable": len(usable(run.results, names)),
                    "predicted": predicted_count(run.results),
                    "hypervolume": volumes[run.name],
                    "hypervolume_trace": traces[run.name],
                    "frontier": json.loads(frames[run.name].to_json(orient="records", double_precision=15)),
                }
                for run in runs
            ],
        }
        print(json.dumps(report, indent=2))
        return
    for run in runs:
        frame = frames[run.name]
        if len(frame):
            for table in _frontier_tables(run, frame, console.width):
                console.print(table)
        else:
            console.print(f"frontier of {run.name}: no usable evaluation", highlight=False)
        console.print(f"{run.name} (task {run.task or '-'}): hypervolume {volumes[run.name]:.6g}", highlight=False)
        console.print(f"  {_status_line(run, names)}", highlight=False)
    console.print(f"reference point: {described}", highlight=False)
    console.print(f"wrote {frontier_png} and {hypervolume_png}", highlight=False)
