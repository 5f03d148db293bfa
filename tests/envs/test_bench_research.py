"""Exact bench research on a hand-checkable toy bench table (TOY TEST DATA, not measurements): six candidates, one
failed, one dominated; every expected number below is worked out by hand in the comments."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from distilsearch.envs.bench_research import BenchResearch, BenchResearchError, expected_best_of, reward_metric
from distilsearch.envs.bench_table import BenchTable, write_bench_table
from distilsearch.envs.rewards import Reward
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.search.pareto import hypervolume as pareto_hypervolume
from distilsearch.search.pareto import objective_matrix, reference_point

TEACHER = TeacherShape(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64)
SPACE = SearchSpace(
    TEACHER, {"num_layers": (1, 2, 3), "hidden_size": (16, 32)}, {"num_heads": 4, "ffn_size": 32, "max_steps": 100}
)
TEACHER_MS = 10.0
# (num_layers, hidden_size) -> (validation accuracy, latency ms at 1x64); (3, 16) failed. Majority rate 0.5, teacher
# validation accuracy 1.0 (so validation retention = validation accuracy), teacher latency 10 ms.
TOY = {(1, 16): (0.70, 2.0), (1, 32): (0.75, 4.0), (2, 16): (0.72, 5.0), (2, 32): (0.80, 6.0), (3, 32): (0.85, 9.0)}


def toy_row(candidate: Candidate) -> EvalResult:
    """TOY TEST DATA: the row of ``candidate`` from TOY (test accuracy 0.99: a reader of test data would see it)."""
    key = (candidate.spec.num_layers, candidate.spec.hidden_size)
    if key not in TOY:
        return EvalResult(candidate=candidate, status="failed", error="toy divergence")
    accuracy, ms = TOY[key]
    point = LatencyPoint(
        batch=1,
        seq_len=64,
        median_ms=ms,
        p10_ms=ms,
        p90_ms=ms,
        teacher_median_ms=TEACHER_MS,
        speedup=TEACHER_MS / ms,
        theoretical_speedup=TEACHER_MS / ms,
    )
    return EvalResult(
        candidate=candidate,
        status="ok",
        accuracy=0.99,
        validation_accuracy=accuracy,
        teacher_validation_accuracy=1.0,
        majority_validation_accuracy=0.5,
        latency=[point],
        train_steps=100,
    )


def write_toy(path: Path, skip: tuple[int, int] | None = None) -> BenchTable:
    """TOY TEST DATA as a bench table, without the candidate ``skip``; plus a seed-1 re-run of (3, 32) at 0.95
    validation accuracy, out of the space: read, it would become the optimum."""
    candidates = {(c.spec.num_layers, c.spec.hidden_size): c for c in map(SPACE.decode, SPACE.enumerate_valid())}
    rows = [toy_row(candidate) for key, candidate in candidates.items() if key != skip]
    best = candidates[3, 32]
    noise = best.model_copy(update={"kd": best.kd.model_copy(update={"seed": 1})})
    rows.append(toy_row(noise).model_copy(update={"validation_accuracy": 0.95}))
    write_bench_table(rows, path, space=SPACE, task="toy", teacher_key="toy-teacher", fidelity="full", build={})
    return BenchTable.load(path)


@pytest.fixture
def research(tmp_path: Path) -> BenchResearch:
    return BenchResearch(write_toy(tmp_path / "bench.parquet"))


def test_reward_optima_and_what_they_read(research: BenchResearch) -> None:
    assert research.rows == research.candidates == 6
    optima = research.reward_optima()
    assert set(optima) == {"weighted", "mnasnet", "constrained"}
    weighted = optima["weighted"]
    assert not isinstance(weighted, str)
    # Validation retention = validation accuracy here; (3, 32) at 0.85 (its 0.95 re-run with seed 1 is not read).
    assert weighted.value == pytest.approx(0.85)
    assert (weighted.candidate.spec.num_layers, weighted.candidate.spec.hidden_size) == (3, 32)
    assert weighted.metric == "1 x validation retention"
    # constrained: the median latency of the five ok rows is 5 ms; within it (1, 32) is best at 0.75.
    constrained = optima["constrained"]
    assert not isinstance(constrained, str)
    assert constrained.reward.latency_budget_ms == 5.0 and constrained.value == pytest.approx(0.75)
    assert constrained.candidate.spec.num_layers == 1 and constrained.candidate.spec.hidden_size == 32
    assert constrained.metric == "validation accuracy within 5 ms measured latency at (1, 64)"
    # mnasnet, target 5 ms, w = -0.07: 0.85 * 1.8^-0.07 = 0.8159 beats 0.80 * 1.2^-0.07 = 0.7899 and the rest.
    mnasnet = optima["mnasnet"]
    assert not isinstance(mnasnet, str)
    assert mnasnet.value == pytest.approx(0.85 * 1.8**-0.07) and mnasnet.candidate.spec.num_layers == 3
    assert research.optimum("weighted", w_acc=1.0, w_speed=1.0).candidate.spec.num_layers == 1  # ln 5 dominates


def test_random_expectation_best_of_k_and_regret(research: BenchResearch) -> None:
    # Rewards sorted: -1 (the failed row's penalty), 0.70, 0.72, 0.75, 0.80, 0.85; the mean is 2.82 / 6 = 0.47.
    assert research.random_expectation("weighted") == pytest.approx(0.47)
    assert research.expected_best_of("weighted", 1) == pytest.approx(0.47)
    # Best of 2 distinct: P(max = i-th smallest) = (i - 1) / C(6, 2), so (0.70 + 2 * 0.72 + 3 * 0.75 + 4 * 0.80 +
    # 5 * 0.85) / 15 = 11.84 / 15.
    assert research.expected_best_of("weighted", 2) == pytest.approx(11.84 / 15)
    assert research.expected_best_of("weighted", 6) == research.expected_best_of("weighted", 60) == pytest.approx(0.85)
    # (0.85 - 0.80) / (0.85 - 0.47) and, against random search with 2 evaluations, / (0.85 - 11.84 / 15).
    assert research.normalized_regret("weighted", 0.80) == pytest.approx(0.05 / 0.38)
    assert research.normalized_regret("weighted", 0.80, k=2) == pytest.approx(0.05 / (0.85 - 11.84 / 15))
    assert research.normalized_regret("weighted", 0.85) == 0.0
    with pytest.raises(BenchResearchError, match="with k=6 is undefined: random search with 6 evaluations"):
        research.normalized_regret("weighted", 0.80, k=6)


def test_order_statistics_match_every_subset() -> None:
    values = [0.3, -1.0, 0.3, 0.9, 0.5]
    for k in range(1, 6):
        subsets = list(itertools.combinations(values, k))
        assert expected_best_of(values, k) == pytest.approx(np.mean([max(s) for s in subsets]))
    with pytest.raises(ValueError, match="k=0 must be an int of at least 1"):
        expected_best_of(values, 0)
    with pytest.raises(BenchResearchError, match="no values to draw from"):
        expected_best_of([], 1)


def test_true_front_hypervolume_and_its_regret(research: BenchResearch) -> None:
    front = research.front("accuracy-latency")
    # (2, 16) at 0.72 / 5 ms is dominated by (1, 32) at 0.75 / 4 ms; the failed row is out.
    assert front.values == [(0.85, 9.0), (0.80, 6.0), (0.75, 4.0), (0.70, 2.0)]
    assert front.reference == (0.5, 10.0)
    # Slabs of latency above the reference accuracy 0.5: [2, 4) x 0.20 + [4, 6) x 0.25 + [6, 9) x 0.30 + [9, 10) x 0.35.
    assert front.hypervolume == pytest.approx(2 * 0.20 + 2 * 0.25 + 3 * 0.30 + 1 * 0.35) == pytest.approx(2.15)
    # The fastest alone: (10 - 2) x (0.70 - 0.5) = 1.6.
    fastest = [r for r in front.members if r.validation_accuracy == 0.70]
    assert research.hypervolume(fastest) == pytest.approx(1.6)
    assert research.hypervolume_regret(1.6) == pytest.approx(0.55 / 2.15)
    # One random draw: (1.6 + 1.5 + 1.1 + 1.2 + 0.35 + 0) / 6 = 5.75 / 6.
    assert research.expected_hypervolume("accuracy-latency", 1) == pytest.approx(5.75 / 6)
    assert research.hypervolume_regret(1.6, k=1) == pytest.approx(0.55 / (2.15 - 5.75 / 6))
    assert research.expected_hypervolume("accuracy-latency", 6) == pytest.approx(2.15)
    with pytest.raises(BenchResearchError, match="with k=6 is undefined"):
        research.hypervolume_regret(1.6, k=6)
    # Drawing 1 of 12 candidates where only these 6 have values: half the chance of hitting any of them.
    assert research.expected_hypervolume("accuracy-latency", 1, population=12) == pytest.approx(5.75 / 12)
    with pytest.raises(ValueError, match="population=5 must be at least the table's 6 rows"):
        research.expected_hypervolume("accuracy-latency", 1, population=5)


@pytest.mark.parametrize(
    ("pair", "names"), [("accuracy-latency", ("accuracy", "latency")), ("accuracy-speedup", ("accuracy", "speedup"))]
)
def test_volumes_agree_with_search_pareto_for_every_subset(research: BenchResearch, pair: str, names: tuple) -> None:
    results = research.results
    bound = reference_point(names, dict(zip(names, research.reference(pair), strict=True)))
    assert research.front(pair).hypervolume == pytest.approx(
        pareto_hypervolume(objective_matrix(results, names), bound)
    )
    for k in (2, 3, 4):
        volumes = [
            pareto_hypervolume(objective_matrix(subset, names), bound) for subset in itertools.combinations(results, k)
        ]
        assert research.expected_hypervolume(pair, k) == pytest.approx(np.mean(volumes))


def test_an_incomplete_table_is_researched_over_its_rows_and_predictions_never_count(tmp_path: Path) -> None:
    research = BenchResearch(write_toy(tmp_path / "bench.parquet", skip=(3, 32)))
    assert (research.rows, research.candidates) == (5, 6)
    assert research.optimum("weighted").value == pytest.approx(0.80)
    assert research.front().hypervolume == pytest.approx(2 * 0.20 + 2 * 0.25 + 4 * 0.30)
    predicted = toy_row(SPACE.decode(next(iter(SPACE.enumerate_valid()))))
    predicted = predicted.model_copy(update={"provenance": {"surrogate": {"model": "ridge"}}})
    assert research.hypervolume([predicted]) == 0.0


class SquaredAccuracy(Reward):
    """A reward outside the registry (validation accuracy squared), to check any Reward can be researched."""

    name = "squared"

    @property
    def ok_range(self) -> tuple[float, float]:
        return 0.0, 1.0

    @property
    def platform_dependent(self) -> bool:
        return False

    def score(self, result: EvalResult) -> float:
        return (result.validation_accuracy or 0.0) ** 2


def test_any_reward_object_and_the_errors_name_the_value(research: BenchResearch, tmp_path: Path) -> None:
    squared = SquaredAccuracy(penalty=None, point=(1, 64))
    assert research.optimum(squared).value == pytest.approx(0.85**2)
    assert reward_metric(squared) == "squared of the blinded (validation-side) result"
    with pytest.raises(ValueError, match="unknown reward 'nope'; registered rewards"):
        research.optimum("nope")
    with pytest.raises(ValueError, match="unknown objective pair 'accuracy-params'"):
        research.front("accuracy-params")
    optima = research.reward_optima({"mnasnet": {}})
    assert isinstance(optima["mnasnet"], str) and "target_latency_ms" in optima["mnasnet"]

    only_noise = tmp_path / "noise.parquet"
    row = toy_row(SPACE.decode(next(iter(SPACE.enumerate_valid()))))
    noise = row.candidate.model_copy(update={"kd": row.candidate.kd.model_copy(update={"seed": 1})})
    write_bench_table(
        [row.model_copy(update={"candidate": noise})],
        only_noise,
        space=SPACE,
        task="toy",
        teacher_key="t",
        fidelity="full",
        build={},
    )
    with pytest.raises(BenchResearchError, match=r"noise\.parquet holds none of its space's 6 candidates"):
        BenchResearch(BenchTable.load(only_noise))

    failing = tmp_path / "failing.parquet"
    failed = [toy_row(SPACE.decode(c)) for c in SPACE.enumerate_valid()]
    failed = [r if r.status != "ok" else r.model_copy(update={"validation_accuracy": 0.4}) for r in failed]
    write_bench_table(failed, failing, space=SPACE, task="toy", teacher_key="t", fidelity="full", build={})
    with pytest.raises(BenchResearchError, match=r"none of the 6 rows beats the reference \(0\.5, 10\.0\)"):
        BenchResearch(BenchTable.load(failing)).front()
