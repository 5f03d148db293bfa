"""`distilsearch search --backend table|surrogate`: which space a table gives, KD-Bench's table as the default, and
predictions labelled as such wherever they are printed or stored (TOY TEST DATA, see tests/toy_table.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from toy_table import TOY_SPACE, TOY_TASK, TOY_TEACHER_KEY, toy_results, write_toy_table
from typer.testing import CliRunner

from distilsearch.envs.bench_table import write_bench_table
from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.search.cli.main import app
from distilsearch.search.run import Run

runner = CliRunner()


@pytest.fixture(autouse=True)
def toy_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS, TOY_TASK, dataclasses.replace(TASKS["rt-polarity"], name=TOY_TASK))


@pytest.fixture(autouse=True)
def no_model_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table backend must never resolve (or fetch) a base model; doing so is an internal error (exit 1)."""

    def fetch(*args: object, **kwargs: object) -> None:
        raise AssertionError("a table backend fetched the base model")

    monkeypatch.setattr("distilsearch.kdlib.training.teacher.resolve_base_dir", fetch)


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """The toy rows as a bench table bound to TOY_SPACE."""
    return write_bench_table(
        toy_results(),
        tmp_path / "bench.parquet",
        space=TOY_SPACE,
        task=TOY_TASK,
        teacher_key=TOY_TEACHER_KEY,
        fidelity="toy",
        build={"sessions": []},
    )


def search(run: Path, *flags: str, backend: str = "table") -> list[str]:
    common = ["--agent", "random", "--budget", "4", "--task", TOY_TASK, "--out", str(run)]
    return ["search", "--backend", backend, *common, *flags]


def refused(argv: list[str], *expected: str) -> str:
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for text in expected:
        assert text in result.output, result.output
    return result.output


def test_a_bench_table_brings_its_own_space(bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, search(run, "--table", str(bench)))
    assert result.exit_code == 0, result.output
    assert Run.open(run).agent_record()["space"] == TOY_SPACE.space_hash()
    same = tmp_path / "same.yaml"
    TOY_SPACE.to_yaml(same)
    again = runner.invoke(app, search(tmp_path / "run2", "--table", str(bench), "--space", str(same)))
    assert again.exit_code == 0, again.output


def test_a_bench_table_refuses_another_space(bench: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    fixed = {"num_heads": 4, "ffn_size": 64, "max_steps": 100}
    SearchSpace(TOY_SPACE.teacher, {"num_layers": [1, 2], "hidden_size": [16, 32]}, fixed).to_yaml(other)
    refused(search(tmp_path / "run", "--table", str(bench), "--space", str(other)), "is not the space", str(bench))
    assert not (tmp_path / "run").exists()


def test_a_plain_table_without_a_space_fails_early(tmp_path: Path) -> None:
    table = write_toy_table(tmp_path / "toy.parquet")
    refused(search(tmp_path / "run", "--table", str(table)), "does not record its space", "pass --space")
    csv = write_toy_table(tmp_path / "toy.csv")
    refused(search(tmp_path / "run", "--table", str(csv)), "pass --space")
    assert not (tmp_path / "run").exists()


def test_the_table_defaults_to_kd_bench(bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("distilsearch.envs.bench_table.BENCH_TABLE", tmp_path / "absent.parquet")
    refused(search(tmp_path / "run"), "absent.parquet does not exist", "distilsearch bench build")
    monkeypatch.setattr("distilsearch.envs.bench_table.BENCH_TABLE", bench)
    result = runner.invoke(app, search(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    stored = {row.candidate.content_hash(): row for row in toy_results()}
    assert all(stored[result.candidate.content_hash()] == result for result in Run.open(tmp_path / "run").results())


def test_surrogate_numbers_are_labelled_predictions(bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, search(run, "--table", str(bench), backend="surrogate"))
    assert result.exit_code == 0, result.output
    assert "4 of the run's 4 evaluations are predicted (surrogate), not measured" in result.output
    assert "predicted (surrogate)" in result.output.split("frontier of")[1]
    results = Run.open(run).results()
    assert len(results) == 4 and all(row.provenance["surrogate"]["model"] for row in results)
    ledger = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()[1:]]
    assert all("surrogate" in entry["result"]["provenance"] for entry in ledger)
    assert pd.read_csv(run / "frontier.csv")["predicted"].all()
    report = json.loads(runner.invoke(app, ["pareto", str(run), "--json"]).output)
    (summary,) = report["runs"]
    assert summary["predicted"] == 4 and summary["frontier"]
    assert all(member["predicted"] is True for member in summary["frontier"])


def test_replayed_numbers_are_labelled_measured(bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, search(run, "--table", str(bench)))
    assert result.exit_code == 0, result.output
    assert "predicted" not in result.output and "measured" in result.output
    assert not pd.read_csv(run / "frontier.csv")["predicted"].any()
    report = json.loads(runner.invoke(app, ["pareto", str(run), "--json"]).output)
    assert report["runs"][0]["predicted"] == 0
    assert all(member["predicted"] is False for member in report["runs"][0]["frontier"])
