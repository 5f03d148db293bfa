"""`distilsearch search` / `export` on the toy benchmark table (TOY TEST DATA, see tests/toy_table.py)."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from toy_table import TOY_SPACE, TOY_TASK, write_toy_table
from typer.testing import CliRunner

from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.search.cli.main import app

runner = CliRunner()


@pytest.fixture
def toy_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setitem(TASKS, TOY_TASK, dataclasses.replace(TASKS["rt-polarity"], name=TOY_TASK))
    table = write_toy_table(tmp_path / "toy.csv")
    space = tmp_path / "space.yaml"
    TOY_SPACE.to_yaml(space)
    return table, space


def arguments(table: Path, space: Path, run: Path, agent: str = "random", budget: int = 5) -> list[str]:
    return [
        "search",
        "--backend",
        "table",
        "--table",
        str(table),
        "--space",
        str(space),
        "--agent",
        agent,
        "--budget",
        str(budget),
        "--out",
        str(run),
        "--task",
        TOY_TASK,
    ]


def ledger(run: Path) -> list[dict]:
    """The run's evaluations (the ledger's first line identifies the evaluator)."""
    return [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()[1:]]


@pytest.mark.parametrize("agent", ["random", "evolution", "ppo"])
def test_search_writes_the_run_folder_and_resumes(toy_files: tuple[Path, Path], tmp_path: Path, agent: str) -> None:
    table, space = toy_files
    run = tmp_path / f"run-{agent}"
    first = runner.invoke(app, arguments(table, space, run, agent, budget=4))
    assert first.exit_code == 0, first.output
    for name in ("config.yaml", "store.sqlite", "frontier.csv", "frontier.png", "hypervolume.png", "search.log"):
        assert (run / name).is_file(), name
    assert len(ledger(run)) == 4
    resumed = runner.invoke(app, arguments(table, space, run, agent, budget=7))
    assert resumed.exit_code == 0, resumed.output
    hashes = [
        entry["candidate_hash"] if "candidate_hash" in entry else json.dumps(entry["candidate"])
        for entry in ledger(run)
    ]
    assert len(hashes) == 7 and len(set(hashes)) == 7
    assert yaml.safe_load((run / "config.yaml").read_text())["budget"] == 7


def test_bad_input_is_refused_without_touching_the_run(toy_files: tuple[Path, Path], tmp_path: Path) -> None:
    table, space = toy_files
    run = tmp_path / "run"
    assert runner.invoke(app, arguments(table, space, run)).exit_code == 0
    before = (run / "config.yaml").read_text()
    other_task = [*arguments(table, space, run)[:-2], "--task", "snli"]
    refused = runner.invoke(app, other_task)
    assert refused.exit_code == 2 and f"task: '{TOY_TASK}' -> 'snli'" in refused.output
    assert (run / "config.yaml").read_text() == before
    unknown = runner.invoke(app, arguments(table, space, tmp_path / "r2", agent="hill-climbing"))
    assert unknown.exit_code == 2 and "unknown agent 'hill-climbing'" in unknown.output
    zero = runner.invoke(app, arguments(table, space, tmp_path / "r3", budget=0))
    assert zero.exit_code == 2 and "budget" in zero.output
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_export_needs_a_run_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "not a search run folder" in result.output


def test_table_of_another_task_is_refused(toy_files: tuple[Path, Path], tmp_path: Path) -> None:
    table, space = toy_files
    command = [*arguments(table, space, tmp_path / "run")[:-2], "--task", "rt-polarity"]
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and f"holds task '{TOY_TASK}'" in result.output


def test_bad_agent_options_write_nothing(toy_files: tuple[Path, Path], tmp_path: Path) -> None:
    table, space = toy_files
    config = tmp_path / "search.yaml"
    config.write_text("agent: evolution\nagent_options:\n  population_size: 0\n")
    run = tmp_path / "run"
    result = runner.invoke(app, [*arguments(table, space, run, agent="evolution"), "--config", str(config)])
    assert result.exit_code == 2 and "population_size" in result.output
    assert not run.exists()


def test_a_bad_flag_value_is_one_line_naming_the_field_and_the_value(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "--budget", "abc", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "invalid search settings: budget='abc'" in result.output and "errors.pydantic.dev" not in result.output
    assert not (tmp_path / "run").exists()
