"""``distilsearch store``: list, show and export the evaluations of an evaluation store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from rich.table import Table

from distilsearch.kdlib.students.candidate import Status
from distilsearch.search.cli.console import JsonFlag, console, fail, guarded
from distilsearch.search.destinations import DestinationError, check_file_destination

if TYPE_CHECKING:
    from distilsearch.envs.store import EvaluationStore, StoredEvaluation

STATUSES: tuple[str, ...] = get_args(Status)
store_app = typer.Typer(help="Inspect and export an evaluation store.", no_args_is_help=True)
StorePath = Annotated[
    Path, typer.Argument(metavar="STORE_PATH", help="The evaluation store (an SQLite file).", show_default=False)
]
KEY_PREFIX_CHARS = 12


def _open(path: Path) -> EvaluationStore:
    from distilsearch.envs.store import EvaluationStore, StoreError

    try:
        return EvaluationStore(path, create=False)
    except StoreError as error:
        fail(str(error))


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _params(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M"


@store_app.command("ls")
@guarded
def list_evaluations(
    store_path: StorePath,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    status: Annotated[str | None, typer.Option(help=f"Only this status ({', '.join(STATUSES)}).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """List the stored evaluations, oldest first."""
    if status is not None and status not in STATUSES:
        fail(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    rows = _open(store_path).rows(task=task, status=status)
    if json_output:
        print(json.dumps([row.flat() | {"candidate": row.candidate.model_dump(mode="json")} for row in rows], indent=2))
        return
    table = Table("key", "task", "fidelity", "status", "accuracy", "OOD", "latency ms", "params", "candidate")
    for row in rows:
        table.add_row(
            row.key[:KEY_PREFIX_CHARS],
            row.task,
            row.fidelity,
            row.status,
            _number(row.accuracy),
            _number(row.mean_ood_accuracy),
            _number(row.latency_ms, 2),
            _params(row.params_total),
            row.candidate.summary(),
        )
    console.print(table)
    console.print(f"{len(rows)} evaluation(s) in {store_path}", highlight=False)


def _find(store: EvaluationStore, prefix: str) -> StoredEvaluation:
    try:
        matches = store.match(prefix.lower())
    except ValueError as error:
        fail(str(error))
    if not matches:
        fail(f"no evaluation with key prefix {prefix!r} in {store.path}")
    if len(matches) > 1:
        keys = ", ".join(row.key[:KEY_PREFIX_CHARS] for row in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        fail(f"key prefix {prefix!r} is ambiguous: it matches {len(matches)} evaluations ({keys}{more})")
    return matches[0]


@store_app.command()
@guarded
def show(
    store_path: StorePath,
    key_prefix: Annotated[
        str, typer.Argument(metavar="KEY_PREFIX", help="The key or a unique prefix of it.", show_default=False)
    ],
    json_output: JsonFlag = False,
) -> None:
    """Show one stored evaluation in full."""
    row = _find(_open(store_path), key_prefix)
    if json_output:
        print(row.model_dump_json(indent=2))
        return
    result = row.result
    table = Table("field", "value", title=f"evaluation {row.key}", show_header=False)
    fields = {
        "candidate": f"{row.candidate.summary()} ({row.candidate_hash})",
        "task": row.task,
        "teacher": row.teacher_key,
        "fidelity": row.fidelity,
        "status": row.status,
        "error": row.error or "-",
        "accuracy": _number(result.accuracy),
        "validation accuracy": _number(result.validation_accuracy),
        "teacher accuracy": _number(result.teacher_accuracy),
        "mean OOD accuracy": _number(result.mean_ood_accuracy),
        **{f"OOD {name}": _number(value) for name, value in result.ood_accuracy.items()},
        **{
            f"latency {p.batch}x{p.seq_len}": f"{p.median_ms:.2f} ms (p10 {p.p10_ms:.2f}, p90 {p.p90_ms:.2f}), "
            f"speedup {p.speedup:.2f} (theoretical {p.theoretical_speedup:.2f})"
            for p in result.latency
        },
        "flops": "-" if result.flops is None else f"{result.flops:.3g}",
        "params": f"{_params(result.params_total)} total, {_params(result.params_non_embedding)} non-embedding",
        "size": "-" if result.size_bytes is None else f"{result.size_bytes / 1e6:.2f} MB",
        "train seconds": _number(result.train_seconds, 1),
        "eval seconds": _number(result.eval_seconds, 1),
        "student path": result.student_path or "-",
        "spec": row.candidate.spec.model_dump_json(),
        "kd": row.candidate.kd.model_dump_json(),
        "provenance": json.dumps(result.provenance, sort_keys=True),
        "written": f"{row.created} by {row.host} pid {row.pid}",
    }
    for name, value in fields.items():
        table.add_row(name, value)
    console.print(table)


@store_app.command()
@guarded
def export(
    store_path: StorePath,
    out: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output file ending in .csv or .jsonl.", show_default=False)
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Export every stored evaluation to CSV (flat columns) or JSON Lines (full records)."""
    from distilsearch.envs.store import EXPORT_SUFFIXES, StoreError

    if out.suffix not in EXPORT_SUFFIXES:
        fail(f"output {str(out)!r} must end in {' or '.join(EXPORT_SUFFIXES)}")
    try:
        check_file_destination(out, force=force)
        count = _open(store_path).export(out)
    except (DestinationError, StoreError, OSError) as error:
        fail(str(error))
    console.print(f"exported {count} evaluation(s) to {out}", highlight=False)
