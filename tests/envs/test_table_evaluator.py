"""TableEvaluator and write_table on the toy benchmark table of ``toy_table`` (TOY TEST DATA)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from toy_table import TOY_TASK, TOY_TEACHER_KEY, toy_results, write_toy_table

from distilsearch.envs.evaluators import CandidateNotInTableError, Evaluator, TableEvaluator, write_table
from distilsearch.envs.surrogate import SurrogateEvaluator
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_table(tmp_path_factory.mktemp("toy") / "toy.csv")


def outside_candidate() -> Candidate:
    """A candidate that is not in the toy table (alpha 0.7 is not a choice of TOY_SPACE)."""
    return Candidate(
        spec=StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64), kd=KDConfig(alpha=0.7, max_steps=100)
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip_returns_every_stored_result(tmp_path: Path, suffix: str) -> None:
    results = toy_results()
    path = write_table(results, tmp_path / f"toy{suffix}", task=TOY_TASK, teacher_key=TOY_TEACHER_KEY, fidelity="toy")
    table = TableEvaluator(path)
    assert isinstance(table, Evaluator)
    assert (len(table), table.task, table.teacher_key, table.fidelity) == (
        len(results),
        TOY_TASK,
        TOY_TEACHER_KEY,
        "toy",
    )
    assert all(table.evaluate(result.candidate) == result for result in results)
    assert table.results() == results and table.hits == len(results) and table.misses == 0
    assert any(result.status == "failed" for result in results)


def test_table_columns_are_flat_and_candidates_can_be_rebuilt_from_them(toy_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(toy_csv)
    assert {"candidate_hash", "candidate", "status", "accuracy", "latency", "spec.num_layers", "kd.alpha"} <= set(
        frame.columns
    )
    flat = tmp_path / "flat.csv"
    frame.drop(columns=["candidate"]).to_csv(flat, index=False)
    first = toy_results()[0]
    assert TableEvaluator(flat).evaluate(first.candidate) == first


def test_missing_candidate_raises_naming_it(toy_csv: Path) -> None:
    table = TableEvaluator(toy_csv)
    candidate = outside_candidate()
    with pytest.raises(CandidateNotInTableError, match=candidate.content_hash()) as caught:
        table.evaluate(candidate)
    assert caught.value.candidate == candidate and table.misses == 1 and candidate not in table


def test_missing_candidate_is_delegated_to_the_fallback(toy_csv: Path) -> None:
    surrogate = SurrogateEvaluator.from_table(TableEvaluator(toy_csv))
    table = TableEvaluator(toy_csv, fallback=surrogate)
    result = table.evaluate(outside_candidate())
    assert result.status == "ok" and "surrogate" in result.provenance and table.misses == 1
    stored = toy_results()[5]
    assert table.evaluate(stored.candidate) == stored and "surrogate" not in stored.provenance
    with pytest.raises(ValueError, match="the fallback evaluates task='other'"):
        TableEvaluator(toy_csv, fallback=SurrogateEvaluator("other", TOY_TEACHER_KEY))


def test_table_rejects_stale_duplicate_and_mixed_rows(toy_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(toy_csv, dtype={"candidate_hash": str})
    stale = frame.copy()
    stale.loc[0, "candidate_hash"] = "0" * 16
    stale.to_csv(tmp_path / "stale.csv", index=False)
    with pytest.raises(ValueError, match="row 0 has candidate_hash 0000000000000000"):
        TableEvaluator(tmp_path / "stale.csv").results()
    pd.concat([frame, frame.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match=f"rows 0 and {len(frame)} both hold"):
        TableEvaluator(tmp_path / "dup.csv")
    mixed = frame.copy()
    mixed.loc[0, "task"] = "other-task"
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(ValueError, match="mixes several task"):
        TableEvaluator(tmp_path / "mixed.csv")
    with pytest.raises(ValueError, match="'toy-task', not 'sst2'"):
        TableEvaluator(toy_csv, task="sst2")
    with pytest.raises(ValueError, match="must end in one of"):
        write_table(toy_results(), tmp_path / "toy.xlsx", task="t", teacher_key="k", fidelity="f")
    with pytest.raises(ValueError, match="results 0 and 1 hold the same candidate"):
        write_table(toy_results()[:1] * 2, tmp_path / "twice.csv", task="t", teacher_key="k", fidelity="f")
