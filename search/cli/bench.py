"""``distilsearch bench``: build KD-Bench (resumable) and inspect it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from distilsearch.search.cli.console import JsonFlag, console, fail, guarded
from distilsearch.search.cli.leaderboard import leaderboard

bench_app = typer.Typer(help="KD-Bench: the shipped table of really distilled students, and tools for it.")

OutOption = Annotated[
    Path | None, typer.Option("--out", help="The bench table (.parquet); default: the one shipped in the package.")
]


def _describe(result) -> str:
    spec, kd = result.candidate.spec, result.candidate.kd
    width = "int8" if spec.weight_bits == 8 else f"w{spec.weight_bits}"
    name = f"L{spec.num_layers} H{spec.hidden_size} F{spec.ffn_size} {width} alpha={kd.alpha:g} seed={kd.seed}"
    if result.status != "ok":
        return f"{name}: {result.status} ({result.error})"
    trained = "shared training" if "trained_with" in result.provenance else f"train {result.train_seconds:.0f} s"
    return f"{name}: validation {result.validation_accuracy:.3f} ({trained}, eval {result.eval_seconds:.0f} s)"


@bench_app.command()
@guarded
def build(
    out: OutOption = None,
    max_new: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many new rows (default: build to the end).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (1: evaluate in this process).")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    json_output: JsonFlag = False,
) -> None:
    """Evaluate every candidate of KD-Bench's space live on rt-polarity (one epoch each; int8 twins from the same
    training; 30 trainings again with a second seed) and write the table after every row. Interrupt it at any time:
    the same command continues from the rows the table holds, on a fresh clone too."""
    from distilsearch.envs.bench_space import BENCH_TASK, BENCH_TEACHER, bench_space
    from distilsearch.envs.bench_table import BENCH_TABLE, BenchTableError
    from distilsearch.envs.live import LiveEvaluator
    from distilsearch.envs.space import TeacherShape
    from distilsearch.kdlib.core.paths import cache_dir
    from distilsearch.search.bench_build import BENCH_FIDELITY, build_bench

    path = out if out is not None else BENCH_TABLE
    if path.suffix != ".parquet":
        fail(f"--out {path}: a bench table is a .parquet file")
    progress = not json_output
    if workers == 1:
        evaluator = LiveEvaluator(
            BENCH_TASK, fidelity=BENCH_FIDELITY, device=device, progress=progress, remeasure_teacher_latency=True
        )
        shape = TeacherShape.from_config(evaluator.student_evaluator.teacher_config)
        if shape != BENCH_TEACHER:
            fail(f"the teacher's shape {shape} is not the embedded teacher's {BENCH_TEACHER} that KD-Bench covers")
    else:
        from distilsearch.envs.ray_evaluator import RayEvaluator

        evaluator = RayEvaluator(
            BENCH_TASK,
            num_workers=workers,
            run_dir=cache_dir("bench-build"),
            fidelity=BENCH_FIDELITY,
            device=device,
            remeasure_teacher_latency=True,
        )

    def report(result, done: int, total: int) -> None:
        if progress:
            console.print(f"[{done}/{total}] {_describe(result)}", highlight=False)

    try:
        outcome = build_bench(evaluator, bench_space(), path, max_new=max_new, on_result=report)
    except (BenchTableError, ValueError) as error:
        fail(str(error))
    summary = {
        "path": str(outcome.path),
        "rows": outcome.rows,
        "added": outcome.added,
        "remaining": outcome.remaining,
        "cpu_hours_this_run": round(outcome.cpu_seconds / 3600, 3),
        "cpu_hours_total": round(sum(s["cpu_seconds"] for s in outcome.build["sessions"]) / 3600, 3),
    }
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"{summary['rows']} rows in {summary['path']} ({summary['added']} added, {summary['remaining']} to go); "
            f"{summary['cpu_hours_this_run']} CPU hours this run, {summary['cpu_hours_total']} in all"
        )


@bench_app.command()
@guarded
def datasheet(
    table: Annotated[
        Path | None, typer.Option("--table", help="The bench table (.parquet); default: the shipped one.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write (default: DATASHEET.md beside the table).")] = None,
) -> None:
    """Write KD-Bench's datasheet (schema, units, build sessions and CPU hours, seed noise, ranges, surrogate quality,
    how to rebuild and cite) from the table alone."""
    from distilsearch.envs.bench_table import BENCH_TABLE, BenchTable, BenchTableError
    from distilsearch.envs.surrogate import surrogate_quality
    from distilsearch.search.bench_datasheet import render_datasheet

    path = table if table is not None else BENCH_TABLE
    try:
        loaded = BenchTable.load(path)
    except BenchTableError as error:
        fail(str(error))
    target = out if out is not None else path.with_name("DATASHEET.md")
    try:
        quality = surrogate_quality(loaded.results()).to_markdown()
    except ValueError as error:
        quality = f"Not measured: {error}."
    target.write_text(render_datasheet(loaded, surrogate_section=quality), encoding="utf-8")
    console.print(f"wrote {target}", highlight=False)


bench_app.command()(guarded(leaderboard))
