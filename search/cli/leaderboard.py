"""``distilsearch bench leaderboard``: the agents that can search KD-Bench's table, scored against its optimum."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from distilsearch.search.cli.console import JsonFlag, console, fail


def leaderboard(
    table: Annotated[
        Path | None, typer.Option("--table", help="A bench table (.parquet); default: the one shipped in the package.")
    ] = None,
    agents: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated agents (default: random, evolution, ppo, maskable-ppo, successive-halving, "
            "hyperband, mo-asha); dnas is listed as not runnable on a table."
        ),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Seeds 0..N-1 for every agent and budget (default 10).")
    ] = None,
    budgets: Annotated[
        str | None, typer.Option(help="Comma-separated budgets in evaluations, full trainings (default 25,50,100).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for leaderboard.jsonl (resumed), leaderboard.md and leaderboard.png.")
    ] = Path("results"),
    json_output: JsonFlag = False,
) -> None:
    """Run random search, evolution, PPO, MaskablePPO, successive halving, Hyperband and MO-ASHA on the bench table
    for every seed and budget, appending each finished run to OUT/leaderboard.jsonl (a rerun skips those), then write
    OUT/leaderboard.md and OUT/leaderboard.png: the hypervolume share of the bench's optimum (median, IQR),
    evaluations to reach 90 % and 95 % of it, and whether PPO beats random."""
    from distilsearch.envs.bench_table import BENCH_TABLE
    from distilsearch.search.leaderboard import (
        AGENT_NAMES,
        BUDGETS,
        SEEDS,
        Record,
        parse_budgets,
        parse_list,
        run_leaderboard,
    )
    from distilsearch.search.leaderboard_report import write_report

    def report(record: Record, done: int, total: int) -> None:
        if not json_output:
            spent, volume = record.trace[-1] if record.trace else (0.0, 0.0)
            console.print(
                f"[{done}/{total}] {record.agent} seed {record.seed} budget {record.budget}: hypervolume {volume:.4g} "
                f"after {spent:g} evaluations, {len(record.trace)} requests ({record.seconds:.1f} s)",
                highlight=False,
                soft_wrap=True,
            )

    try:
        names = AGENT_NAMES if agents is None else parse_list(agents, "--agents")
        amounts = BUDGETS if budgets is None else parse_budgets(budgets)
        board = run_leaderboard(table or BENCH_TABLE, names, seeds or SEEDS, amounts, out, on_record=report)
    except ValueError as error:
        fail(str(error))
    page, image = write_report(board, out)
    research = board.bench.research
    summary = {
        "report": str(page),
        "plot": str(image),
        "records": len(board.records),
        "new_runs": board.ran,
        "skipped": board.skipped,
        "table_rows": research.rows,
        "candidates": research.candidates,
    }
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    if research.rows < research.candidates:
        console.print(
            f"table holds {research.rows} of {research.candidates} candidates; missing ones answered by the surrogate"
        )
    for name, reason in board.skipped.items():
        console.print(f"not run: {name}: {reason}", highlight=False)
    console.print(
        f"{len(board.records)} runs ({board.ran} new); report {page}, plot {image}", highlight=False, soft_wrap=True
    )
