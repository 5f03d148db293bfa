"""The KD-Bench leaderboard on toy bench tables (TOY TEST DATA from ``toy_table.toy_result``, not measurements): runs,
report, plot, resume without redoing finished runs, the incomplete-table note, multi-fidelity budgets and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toy_table import TOY_TEACHER, toy_result
from typer.testing import CliRunner

from distilsearch.envs.bench_table import write_bench_table
from distilsearch.envs.space import SearchSpace
from distilsearch.search.cli.main import app
from distilsearch.search.leaderboard import RECORDS, Bench, LeaderboardError, parse_budgets, run_leaderboard
from distilsearch.search.leaderboard_report import REPORT, comparisons, reached, standings, write_report

SPACE = SearchSpace(
    TOY_TEACHER,
    {"num_layers": (1, 2, 3, 4), "hidden_size": (16, 32), "alpha": (0.5, 0.9), "weight_bits": (32, 8)},
    {"num_heads": 4, "ffn_size": 32, "max_steps": 100},
)


def toy_bench(path: Path, drop: int = 0) -> Path:
    """TOY TEST DATA: a bench table of SPACE's 32 candidates (learning curves at 25, 50, 75 and 100 steps), without
    the last ``drop``."""
    rows = [toy_result(SPACE.decode(choices)) for choices in SPACE.enumerate_valid()]
    rows = rows[: len(rows) - drop]
    return write_bench_table(rows, path, space=SPACE, task="toy", teacher_key="toy", fidelity="full", build={})


def test_leaderboard_writes_its_report_and_resumes_without_redoing_runs(tmp_path: Path) -> None:
    table = toy_bench(tmp_path / "bench.parquet")
    out = tmp_path / "results"
    seen: list[tuple[str, int, int]] = []
    board = run_leaderboard(
        table, ["random", "evolution", "ppo", "dnas"], 2, [5], out, on_record=lambda r, done, total: seen.append(r.key)
    )
    assert board.ran == 6 and len(seen) == 6 and sorted(r.key for r in board.records) == sorted(seen)
    assert set(board.skipped) == {"dnas"} and "live distillation" in board.skipped["dnas"]
    assert board.bench.complete and board.bench.full_steps == 100
    for record in board.records:
        assert [spent for spent, _ in record.trace] == [1.0, 2.0, 3.0, 4.0, 5.0]
        volumes = [volume for _, volume in record.trace]
        assert volumes == sorted(volumes) and 0 < volumes[-1] <= board.bench.optimum
    page, image = write_report(board, out)
    text = page.read_text(encoding="utf-8")
    assert text.split("\n")[2].startswith("Bench: "), "a complete table gets no incompleteness note"
    assert "answered by the surrogate" not in text
    assert "| random | 5 | 2 |" in text and "| ppo | 5 | 2 |" in text
    assert "| uniform random (exact expectation) | 5 |" in text and "- `dnas`: it trains" in text
    assert "| ppo | 5 |" in text.split("## Does PPO beat random?")[1]
    assert image.read_bytes().startswith(b"\x89PNG")

    lines = (out / RECORDS).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    again = run_leaderboard(table, ["random", "evolution", "ppo"], 2, [5], out)
    assert again.ran == 0 and (out / RECORDS).read_text(encoding="utf-8").splitlines() == lines

    # A crash after four runs: the last two lines are missing (the last one torn); a restart redoes just those two,
    # and as every run is seeded, it writes the same traces.
    (out / RECORDS).write_text("\n".join(lines[:4]) + "\n" + lines[4][:30], encoding="utf-8")
    resumed = run_leaderboard(table, ["random", "evolution", "ppo"], 2, [5], out)
    assert resumed.ran == 2
    rewritten = [json.loads(line) for line in (out / RECORDS).read_text(encoding="utf-8").splitlines()]
    assert [(r["trace"], r["agent"], r["seed"]) for r in rewritten] == [
        (r["trace"], r["agent"], r["seed"]) for r in map(json.loads, lines)
    ]


def test_an_agent_that_sees_every_candidate_reaches_the_optimum(tmp_path: Path) -> None:
    board = run_leaderboard(toy_bench(tmp_path / "bench.parquet"), ["random"], 1, [40], tmp_path / "out")
    (record,) = board.records
    assert len(record.trace) == 32, "random search stops once every candidate was drawn"
    (row,) = standings(board)
    assert row.shares == [pytest.approx(1.0)]
    assert row.evaluations_to(0.95)[1] == 1 and reached(record.trace, board.bench.optimum) is not None
    research = board.bench.research
    assert research.expected_hypervolume("accuracy-latency", 40, population=32) == pytest.approx(board.bench.optimum)


def test_multi_fidelity_agents_pay_for_rungs_in_steps(tmp_path: Path) -> None:
    board = run_leaderboard(
        toy_bench(tmp_path / "bench.parquet"), ["successive-halving", "hyperband"], 1, [3], tmp_path / "out"
    )
    for record in board.records:
        spent = [x for x, _ in record.trace]
        # rung-25 costs 25 of a full training's 100 steps; nothing beyond the budget of 3 full trainings.
        assert spent[0] in (0.25, 0.5) and spent[-1] <= 3.0 and any(x != int(x) for x in spent)


def test_an_incomplete_table_says_so_and_skips_agents_that_need_curves(tmp_path: Path) -> None:
    out = tmp_path / "out"
    board = run_leaderboard(toy_bench(tmp_path / "bench.parquet", drop=12), ["random", "mo-asha"], 2, [20], out)
    assert not board.bench.complete
    assert "holds 20 of 32 candidates" in board.skipped["mo-asha"]
    assert sum(r.surrogate_answers for r in board.records) > 0
    for record in board.records:
        assert record.trace[-1][1] <= board.bench.optimum * (1 + 1e-12), "predictions add no volume"
    page, _ = write_report(board, out)
    assert (
        "**The table holds 20 of 32 candidates; missing ones answered by the surrogate.**"
        in page.read_text(encoding="utf-8").split("\n")[2]
    )
    assert comparisons(standings(board)) == []


def test_records_of_other_settings_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_leaderboard(toy_bench(tmp_path / "bench.parquet", drop=12), ["random"], 1, [2], out)
    with pytest.raises(LeaderboardError, match=r"line 1 \(random, seed 0, budget 2\) was made with another table"):
        run_leaderboard(toy_bench(tmp_path / "bench.parquet"), ["random"], 1, [2], out)
    (out / RECORDS).write_text("{not json\n", encoding="utf-8")
    with pytest.raises(LeaderboardError, match="line 1 is not a leaderboard record"):
        run_leaderboard(tmp_path / "bench.parquet", ["random"], 1, [2], out)


def test_bad_plans_name_the_value(tmp_path: Path) -> None:
    table = toy_bench(tmp_path / "bench.parquet")
    with pytest.raises(LeaderboardError, match=r"unknown agent\(s\) 'nope'; known agents: .*dnas"):
        run_leaderboard(table, ["random", "nope"], 1, [2], tmp_path)
    with pytest.raises(LeaderboardError, match="seeds=0 must be an int of at least 1"):
        run_leaderboard(table, ["random"], 0, [2], tmp_path)
    with pytest.raises(LeaderboardError, match=r"budgets=\[0\] must be ints of at least 1"):
        run_leaderboard(table, ["random"], 1, [0], tmp_path)
    with pytest.raises(LeaderboardError, match="budgets='25,x' must be comma-separated whole numbers"):
        parse_budgets("25,x")
    assert not (tmp_path / RECORDS).exists() and not (tmp_path / REPORT).exists()
    assert Bench.load(table).why_not("random") is None


def test_cli_runs_the_leaderboard_and_reports_errors(tmp_path: Path) -> None:
    table = toy_bench(tmp_path / "bench.parquet")
    out = tmp_path / "out"
    runner = CliRunner()
    arguments = ["bench", "leaderboard", "--table", str(table), "--agents", "random,dnas", "--seeds", "2"]
    result = runner.invoke(app, [*arguments, "--budgets", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == summary["new_runs"] == 2 and set(summary["skipped"]) == {"dnas"}
    assert (out / REPORT).is_file() and (out / "leaderboard.png").is_file()
    result = runner.invoke(app, [*arguments, "--budgets", "3", "--out", str(out)])
    assert result.exit_code == 0 and "2 runs (0 new)" in result.stdout
    result = runner.invoke(app, ["bench", "leaderboard", "--table", str(tmp_path / "none.parquet"), "--out", str(out)])
    assert result.exit_code == 2 and "no bench table there" in result.output
    result = runner.invoke(app, [*arguments, "--budgets", "three"])
    assert result.exit_code == 2 and "budgets='three' must be comma-separated whole numbers" in result.output
