"""``distilsearch search`` (run or resume a search into a run folder), ``export`` (save a frontier student) and
``validate`` (re-distil frontier students and compare): parsing and printing around :mod:`distilsearch.search.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from distilsearch.search.cli.console import JsonFlag, console, fail, invalid_settings
from distilsearch.search.cli.data_options import data_flags, data_spec
from distilsearch.search.cli.options import collect_model_values, model_flags
from distilsearch.search.run_config import SearchConfig

CONFIG_ONLY = frozenset({"reward_options", "agent_options", "data"})


def _settings(config_file: Path | None, given: dict[str, Any]) -> SearchConfig:
    """The config file's settings overridden by the flags that were given."""
    try:
        base = SearchConfig.load(config_file).model_dump(exclude_unset=True) if config_file else {}
        data = data_spec(given)
        flags = collect_model_values(SearchConfig, given) | ({"data": data} if data is not None else {})
        return SearchConfig(**(base | flags))
    except ValidationError as error:
        fail(f"invalid search settings: {invalid_settings(error)}")
    except ValueError as error:
        fail(str(error))


@data_flags
@model_flags((SearchConfig, "Search"), exclude=CONFIG_ONLY)
def search(
    config: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="YAML with these settings.")] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="On resume, withdraw the run's failed evaluations (NaN loss, OOM, timeout, a worker that kept "
            "dying) from its ledger, giving their budget back, and evaluate them again when the agent asks for them "
            "(default: keep them as results).",
        ),
    ] = False,
    **values: Any,
) -> None:
    """Run a search into a run folder; the same command again resumes it (nothing evaluated twice; failed
    evaluations are kept unless --retry-failed)."""
    from distilsearch.search.cli.pareto import PREDICTED, predicted_count, report_frontiers
    from distilsearch.search.run import RunError, run_search

    settings = _settings(config, values)
    try:
        run = run_search(
            settings,
            notify=lambda text: console.print(f"note: {text}", highlight=False),
            retry_failed=retry_failed,
        )
    except RunError as error:
        fail(str(error))
    except ValueError as error:  # a resume with other settings (ResumeMismatch)
        fail(str(error))
    session = run.session
    console.print(
        f"spent {session.spent} of {session.budget} {settings.budget_unit} on {session.evaluations} evaluations "
        f"({session.train_seconds:.0f} s of training)",
        highlight=False,
    )
    results = run.results()
    predicted = predicted_count(results)
    if predicted:
        console.print(
            f"{predicted} of the run's {len(results)} evaluations are {PREDICTED}, not measured", highlight=False
        )
    report_frontiers(run.path, objectives="accuracy,latency", compare=None, json_output=False, reference=None)


def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A search run folder.", show_default=False)],
    rank: Annotated[int, typer.Option(min=1, help="1 = the most accurate frontier student.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Destination (default RUN_DIR/students/rank-K).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a destination that exists and is not empty.")] = False,
    teacher_dir: Annotated[
        Path | None,
        typer.Option(
            "--teacher",
            help="The run's own teacher folder, if it moved since the search (it must hold the same teacher).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Save the rank-K student of a run's (accuracy, latency) frontier: it is distilled again, deterministically."""
    from distilsearch.search.run import Run, RunError

    try:
        run = Run.open(run_dir)
        result = run.export(rank, out, force=force, progress=not json_output, teacher_dir=teacher_dir)
        chosen = run.member(rank)
    except RunError as error:
        fail(str(error))
    if json_output:
        print(result.model_dump_json(indent=2))
        return
    console.print(
        f"rank {rank}: {chosen.candidate.summary()} — stored validation accuracy {chosen.validation_accuracy:.4f}, "
        f"re-distilled {result.validation_accuracy:.4f} (test {result.accuracy:.4f}); saved to {result.student_path}",
        highlight=False,
    )


def validate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A search run folder.", show_default=False)],
    rank: Annotated[
        list[int] | None, typer.Option(min=1, help="Frontier rank to check (repeatable; default all).")
    ] = None,
    tolerance: Annotated[float, typer.Option(min=0.0, help="Largest accepted accuracy difference.")] = 0.01,
    json_output: JsonFlag = False,
) -> None:
    """Re-distil a run's (accuracy, latency) frontier students from scratch and check that each reproduces its
    stored validation accuracy within the tolerance; exit 1 when one does not."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from distilsearch.search.run import Run, RunError

    try:
        outcomes = Run.open(run_dir).validate(rank or None, tolerance=tolerance, progress=not json_output)
    except RunError as error:
        fail(str(error))
    if json_output:
        print(json.dumps([asdict(o) | {"difference": o.difference, "passed": o.passed} for o in outcomes], indent=2))
    else:
        table = Table(title=f"validation of {run_dir} (tolerance {tolerance:g})")
        for column in ("rank", "student", "stored", "reproduced", "difference", "result"):
            table.add_column(column)
        for o in outcomes:
            verdict = "ok" if o.passed else (o.error or "differs")
            number = [f"{v:.4f}" if v is not None else "-" for v in (o.stored, o.reproduced, o.difference)]
            table.add_row(str(o.rank), o.candidate, *number, verdict)
        console.print(table)
    if not all(o.passed for o in outcomes):
        raise typer.Exit(code=1)
