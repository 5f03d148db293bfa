"""The library API: run_search(config) -> Run, Run.open, frontier, ledger, one resume message, validate, export."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
from toy_table import TOY_SPACE, TOY_TASK, write_toy_table

from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.search.run import Run, RunError, run_search
from distilsearch.search.run_config import SearchConfig
from distilsearch.search.run_layout import ResumeMismatch


@pytest.fixture
def table_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SearchConfig:
    monkeypatch.setitem(TASKS, TOY_TASK, dataclasses.replace(TASKS["rt-polarity"], name=TOY_TASK))
    table = write_toy_table(tmp_path / "toy.csv")
    space = tmp_path / "space.yaml"
    TOY_SPACE.to_yaml(space)
    return SearchConfig(
        task=TOY_TASK, agent="random", budget=5, backend="table", table=table, space=space, out=tmp_path / "run"
    )


def test_run_search_returns_the_run_and_open_reads_it_back(table_config: SearchConfig) -> None:
    notes: list[str] = []
    run = run_search(table_config, progress=False, notify=notes.append)
    assert run.session is not None and run.session.spent == 5 and run.session.evaluations == 5
    reopened = Run.open(table_config.out)
    assert reopened.config == table_config
    assert [entry.candidate for entry in reopened.ledger()] == [entry.candidate for entry in run.ledger()]
    assert len(reopened.ledger()) == 5
    assert [e.index for e in reopened.ledger()] == list(range(5))
    frontier = reopened.frontier()
    assert 1 <= len(frontier) <= 5 and len(reopened.frontier_table()) == len(frontier)
    accuracies = [member.validation_accuracy for member in frontier]
    assert accuracies == sorted(accuracies, reverse=True)
    assert reopened.hypervolume() > 0
    for name in ("config.yaml", "store.sqlite", "evaluations.jsonl", "frontier.csv", "search.log", "agent.json"):
        assert (table_config.out / name).is_file(), name


def test_the_agent_record_names_its_checkpoint(table_config: SearchConfig) -> None:
    evolution = table_config.model_copy(update={"agent": "evolution"})
    record = run_search(evolution, progress=False).agent_record()
    assert record["agent"] == "evolution" and record["seed"] == 0
    assert record["checkpoint"] == evolution.out / "evolution.json" and record["checkpoint"].is_file()
    (evolution.out / "agent.json").write_text("{not json")
    with pytest.raises(RunError, match=r"agent.json is not valid JSON"):
        Run.open(evolution.out).agent_record()


def test_resume_spends_only_the_new_budget(table_config: SearchConfig) -> None:
    run_search(table_config, progress=False)
    resumed = run_search(table_config.model_copy(update={"budget": 8}), progress=False)
    assert resumed.session.spent == 8 and resumed.session.evaluations == 8
    hashes = [entry.candidate.content_hash() for entry in resumed.ledger()]
    assert len(hashes) == len(set(hashes)) == 8


def test_every_resume_check_speaks_with_one_message(table_config: SearchConfig, tmp_path: Path) -> None:
    run_search(table_config, progress=False)
    with pytest.raises(ResumeMismatch, match=r"was started with other settings \(seed: 0 -> 3\); use another run"):
        run_search(table_config.model_copy(update={"seed": 3}), progress=False)
    config = table_config.out / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 3"))  # the agent's own record still says 0
    with pytest.raises(ResumeMismatch, match=r"was started with other settings \(seed: 0 -> 3\); use another run"):
        run_search(table_config.model_copy(update={"seed": 3}), progress=False)
    ledger = table_config.out / "evaluations.jsonl"
    lines = ledger.read_text().splitlines()
    header = json.loads(lines[0]) | {"teacher_key": "another-teacher"}
    ledger.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(ResumeMismatch, match=r"other settings \(teacher_key: 'another-teacher' -> "):
        run_search(table_config.model_copy(update={"seed": 3}), progress=False)


def test_open_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        Run.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunError, match=r"is not a search run folder \(no config.yaml\)"):
        Run.open(tmp_path / "plain")
    (tmp_path / "plain" / "config.yaml").write_text("agent: [unclosed\n")
    with pytest.raises(RunError, match="is not valid YAML"):
        Run.open(tmp_path / "plain")


def test_member_ranks_are_checked(table_config: SearchConfig) -> None:
    run = run_search(table_config, progress=False)
    size = len(run.frontier())
    assert run.member(1) == run.frontier()[0]
    with pytest.raises(RunError, match=f"rank {size + 1} is beyond the frontier .* which has {size} students"):
        run.member(size + 1)
    with pytest.raises(RunError, match="rank 0 must be an int of at least 1"):
        run.member(0)


@pytest.fixture
def live_config(toy_task: str, tiny_bert_dir: Path, tmp_path: Path) -> SearchConfig:
    space = tmp_path / "space.yaml"
    TOY_SPACE.to_yaml(space)
    return SearchConfig(
        task=toy_task, agent="random", budget=2, fidelity="low", base=tiny_bert_dir, space=space, out=tmp_path / "live"
    )


def _tamper(run: Run, rank: int, accuracy: float) -> None:
    """Overwrite the stored validation accuracy of a frontier member (as a corrupted or foreign store would)."""
    member = run.member(rank)
    forged = member.model_copy(update={"validation_accuracy": accuracy})
    with sqlite3.connect(run.layout.store) as connection:
        connection.execute(
            "UPDATE evaluations SET result = ? WHERE candidate_hash = ?",
            (forged.model_dump_json(), member.candidate.content_hash()),
        )


def test_validate_reproduces_a_live_frontier_and_catches_a_forged_accuracy(live_config: SearchConfig) -> None:
    run = run_search(live_config, progress=False)
    evaluator = run.student_evaluator(device="cpu")
    outcomes = run.validate(evaluator=evaluator)
    assert [o.rank for o in outcomes] == list(range(1, len(run.frontier()) + 1))
    assert all(o.passed and o.difference == 0 for o in outcomes), outcomes
    stored = run.member(1).validation_accuracy
    _tamper(run, 1, stored + 0.25 if stored < 0.7 else stored - 0.25)
    first = Run.open(live_config.out).validate(ranks=[1], evaluator=evaluator)[0]
    assert not first.passed and first.difference == pytest.approx(0.25)


def test_export_saves_the_member_and_refuses_the_run_folder(live_config: SearchConfig, tmp_path: Path) -> None:
    run = run_search(live_config, progress=False)
    evaluator = run.student_evaluator(device="cpu")
    result = run.export(1, tmp_path / "student", evaluator=evaluator)
    assert result.validation_accuracy == run.member(1).validation_accuracy
    assert (tmp_path / "student" / "config.json").is_file()
    with pytest.raises(RunError, match="is or contains"):
        run.export(1, live_config.out, evaluator=evaluator)
