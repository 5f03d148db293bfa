"""Successive halving, Hyperband and MO-ASHA on a toy multi-fidelity evaluator (TOY TEST DATA, made-up formulas)."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from toy_table import TOY_SPACE, TOY_TASK, TOY_TEACHER, TOY_TEACHER_KEY, toy_result

from distilsearch.envs.fidelity import Fidelity, fidelity_steps, get_fidelity
from distilsearch.envs.rewards import WeightedReward
from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.search.agents import make_agent
from distilsearch.search.agents.hyperband import hyperband_brackets
from distilsearch.search.agents.mo_asha import (
    MOASHA,
    RungState,
    crowding_distances,
    dominates,
    nondominated_fronts,
    promotion_order,
)
from distilsearch.search.agents.multifidelity import Rungs
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator, LedgerEntry

REWARD = WeightedReward(w_acc=1.0, w_speed=0.1)
NAMES = ["successive-halving", "hyperband", "mo-asha"]
# The toy space trains every candidate 100 steps: rungs 4, 12, 36, 100 (4 levels, eta 3).
OPTIONS: dict[str, dict[str, Any]] = {name: {"min_steps": 4, "eta": 3} for name in NAMES}
TRAIN_SIZE = 1000
# The toy space with the KD budget as a dimension: candidates train 60 or 100 steps.
BUDGET_SPACE = SearchSpace(
    TOY_TEACHER,
    {"num_layers": [2, 3, 4], "hidden_size": [16, 24, 32], "ffn_size": [32, 64], "max_steps": [60, 100]},
    {"num_heads": 4, "init": "teacher", "weight_bits": 32, "alpha": 0.5},
)


TOY_SPACE_FIXED = {"hidden_size": 32, "num_heads": 4, "ffn_size": 64, "init": "teacher", "weight_bits": 32}
# Three candidates (num_layers 2..4) trained 36 steps: rungs 4, 12, 36.
TINY_SPACE = SearchSpace(TOY_TEACHER, {"num_layers": [2, 3, 4]}, {"max_steps": 36} | TOY_SPACE_FIXED)
VALID = [TOY_SPACE.decode(choices) for choices in TOY_SPACE.enumerate_valid()]


def _unit(candidate: Candidate, salt: str) -> float:
    """A deterministic number in [0, 1) from the candidate's hash and ``salt``."""
    digest = hashlib.sha256(f"{candidate.content_hash()}/{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ToyRungs:
    """TOY TEST DATA: a deterministic evaluator with fidelity (the contract's multi-fidelity Evaluator).

    Validation accuracy after ``s`` steps rises from 0.5 towards a candidate's own ceiling at a candidate's own
    rate (so rankings can change between rungs); test accuracies come from other hash bits, and ``permute_test``
    changes all of them. ``calls`` records (fidelity name, batch size) per request, ``trained`` the steps run.
    """

    task, teacher_key, fidelity = TOY_TASK, TOY_TEACHER_KEY, "full"

    def __init__(self, parallelism: int = 1, permute_test: bool = False) -> None:
        self.parallelism = parallelism
        self.permute_test = permute_test
        self.calls: list[tuple[str, int]] = []
        self.trained = 0

    def cost_steps(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> int:
        return fidelity_steps(candidate, fidelity if fidelity is not None else self.fidelity, train_size=TRAIN_SIZE)

    def evaluate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> EvalResult:
        return self.evaluate_many([candidate], fidelity)[0]

    def evaluate_many(self, candidates: list[Candidate], fidelity: str | Fidelity | None = None) -> list[EvalResult]:
        level = get_fidelity(fidelity if fidelity is not None else self.fidelity)
        self.calls.append((level.name, len(candidates)))
        results = []
        for candidate in candidates:
            steps = self.cost_steps(candidate, level)
            self.trained += steps
            results.append(self._result(candidate, steps))
        return results

    def _result(self, candidate: Candidate, steps: int) -> EvalResult:
        base = toy_result(candidate)
        if base.status != "ok":
            return base.model_copy(update={"train_steps": steps})
        ceiling = 0.6 + 0.3 * _unit(candidate, "ceiling")
        rate = 10 + 60 * _unit(candidate, "rate")
        validation = 0.5 + (ceiling - 0.5) * (1 - math.exp(-steps / rate))
        test = 0.55 + 0.4 * _unit(candidate, "test-permuted" if self.permute_test else "test")
        return base.model_copy(
            update={
                "validation_accuracy": validation,
                "teacher_validation_accuracy": 0.9,
                "accuracy": test,
                "teacher_accuracy": 0.92 if self.permute_test else 0.88,
                "ood_accuracy": {"echo": 1 - test},
                "ood_dev_accuracy": {"echo": validation - 0.1},
                "teacher_ood_dev_accuracy": {"echo": 0.8},
                "train_steps": steps,
            }
        )


def run(
    name: str,
    evaluator: ToyRungs,
    budget: int,
    run_dir: Path,
    unit: str = "steps",
    seed: int = 0,
    space: SearchSpace = TOY_SPACE,
    **options: Any,
) -> tuple[BudgetedEvaluator, Any]:
    budgeted = BudgetedEvaluator(evaluator, budget, reward=REWARD, history_path=run_dir / HISTORY_FILE, unit=unit)
    agent = make_agent(name, **(OPTIONS[name] | options))
    agent.run(budgeted, space, run_dir, seed=seed)
    return budgeted, agent


def ledger(budgeted: BudgetedEvaluator) -> list[tuple[str, str, float]]:
    return [(entry.candidate.content_hash(), entry.fidelity, entry.reward) for entry in budgeted.history]


def steps_of(entry: LedgerEntry) -> int:
    return int(entry.fidelity.removeprefix("rung-"))


# ---- the budget --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["steps", "evaluations"])
@pytest.mark.parametrize("name", NAMES)
def test_the_budget_is_never_exceeded(tmp_path: Path, name: str, unit: str) -> None:
    budget = 700 if unit == "steps" else 40
    evaluator = ToyRungs(parallelism=3)
    budgeted, _ = run(name, evaluator, budget, tmp_path, unit=unit)
    history = budgeted.history
    assert budgeted.spent <= budget and budgeted.spent == sum(entry.cost for entry in history)
    assert evaluator.trained == sum(steps_of(entry) for entry in history)
    if unit == "steps":
        assert budgeted.spent == evaluator.trained > budget - 100, "stops only when the next request is unaffordable"
    else:
        assert budgeted.spent == len(history) == budget
    assert {entry.fidelity for entry in history} <= {"rung-4", "rung-12", "rung-36", "rung-100"}
    assert len({(entry.candidate, entry.fidelity) for entry in history}) == len(history)


@pytest.mark.parametrize("name", NAMES)
def test_runs_are_reproducible_and_depend_on_the_seed(tmp_path: Path, name: str) -> None:
    first, again, other = (run(name, ToyRungs(), 500, tmp_path / str(k), seed=s)[0] for k, s in enumerate([1, 1, 2]))
    assert ledger(first) == ledger(again) != ledger(other)


@pytest.mark.parametrize("unit", ["steps", "evaluations"])
@pytest.mark.parametrize("name", NAMES)
def test_a_resumed_run_continues_exactly(tmp_path: Path, name: str, unit: str) -> None:
    small, large = (300, 1500) if unit == "steps" else (20, 70)
    first, _ = run(name, ToyRungs(parallelism=2), small, tmp_path / "run", unit=unit)
    again = ToyRungs(parallelism=2)
    resumed, _ = run(name, again, large, tmp_path / "run", unit=unit)
    straight, _ = run(name, ToyRungs(parallelism=2), large, tmp_path / "straight", unit=unit)
    assert ledger(resumed)[: len(first)] == ledger(first)
    assert ledger(resumed) == ledger(straight) and resumed.spent == straight.spent
    assert again.trained == sum(steps_of(entry) for entry in resumed.history[len(first) :])


@pytest.mark.parametrize("name", NAMES)
def test_a_run_resumes_exactly_when_the_ledger_is_ahead_of_the_checkpoint(tmp_path: Path, name: str) -> None:
    run(name, ToyRungs(), 500, tmp_path / "run")
    (state,) = (path for path in (tmp_path / "run").glob("*.json") if path.name != "agent.json")
    state.unlink()  # as if the run had died before its first checkpoint: everything it recorded is replayed free
    again = ToyRungs()
    resumed, _ = run(name, again, 900, tmp_path / "run")
    straight, _ = run(name, ToyRungs(), 900, tmp_path / "straight")
    assert ledger(resumed) == ledger(straight)


@pytest.mark.parametrize("name", NAMES)
def test_agents_never_read_test_fields(tmp_path: Path, name: str) -> None:
    plain, _ = run(name, ToyRungs(parallelism=2), 800, tmp_path / "plain")
    permuted, _ = run(name, ToyRungs(parallelism=2, permute_test=True), 800, tmp_path / "permuted")
    assert ledger(plain) == ledger(permuted)
    assert all(entry.result.accuracy is None and not entry.result.ood_accuracy for entry in plain.history)


# ---- successive halving and Hyperband --------------------------------------------------------------------------


def test_successive_halving_promotes_exactly_the_top_third(tmp_path: Path) -> None:
    budgeted, _ = run(
        "successive-halving", ToyRungs(), 2 * (9 * 4 + 3 * 12 + 36), tmp_path, bracket_size=9, max_steps=36
    )
    history = budgeted.history
    assert [entry.fidelity for entry in history] == 2 * (["rung-4"] * 9 + ["rung-12"] * 3 + ["rung-36"])
    for bracket in (history[:13], history[13:]):
        bottom, middle, top = bracket[:9], bracket[9:12], bracket[12]
        best = sorted(bottom, key=lambda entry: (-entry.reward, entry.index))
        assert [entry.candidate for entry in middle] == [entry.candidate for entry in best[:3]]
        assert top.candidate == max(middle, key=lambda entry: (entry.reward, -entry.index)).candidate
    assert not {entry.candidate for entry in history[:13]} & {entry.candidate for entry in history[13:]}


def test_successive_halving_breaks_reward_ties_by_the_earlier_entry(tmp_path: Path) -> None:
    flat = WeightedReward(w_acc=0.0, w_speed=0.0)  # every successful candidate earns 0
    budgeted = BudgetedEvaluator(ToyRungs(), 9 * 4 + 3 * 12 + 36, reward=flat, unit="steps")
    make_agent("successive-halving", bracket_size=9, min_steps=4, max_steps=36).run(budgeted, TOY_SPACE, tmp_path)
    bottom, middle = budgeted.history[:9], budgeted.history[9:12]
    ok = [entry.candidate for entry in bottom if entry.reward == 0.0]
    assert [entry.candidate for entry in middle] == ok[:3]


def test_successive_halving_default_bracket_reaches_the_full_budget(tmp_path: Path) -> None:
    budgeted, _ = run("successive-halving", ToyRungs(), 27 * 4 + 9 * 12 + 3 * 36 + 100, tmp_path)
    assert Counter(entry.fidelity for entry in budgeted.history) == {
        "rung-4": 27,
        "rung-12": 9,
        "rung-36": 3,
        "rung-100": 1,
    }


def test_hyperband_bracket_sizes() -> None:
    assert hyperband_brackets(4, 3) == [(27, 0), (12, 1), (6, 2), (4, 3)]
    assert hyperband_brackets(5, 3) == [(81, 0), (34, 1), (15, 2), (8, 3), (5, 4)]  # Li et al.'s table, R = 81
    assert hyperband_brackets(3, 2) == [(4, 0), (3, 1), (3, 2)]
    assert hyperband_brackets(1, 3) == [(1, 0)]


def test_hyperband_runs_its_brackets_in_order_and_starts_over(tmp_path: Path) -> None:
    costs = [27 * 4 + 9 * 12 + 3 * 36 + 100, 12 * 12 + 4 * 36 + 100, 6 * 36 + 2 * 100, 4 * 100]
    budgeted, _ = run("hyperband", ToyRungs(), sum(costs) + 27 * 4, tmp_path)
    groups: list[tuple[str, int]] = []
    for entry in budgeted.history:
        if groups and groups[-1][0] == entry.fidelity:
            groups[-1] = (entry.fidelity, groups[-1][1] + 1)
        else:
            groups.append((entry.fidelity, 1))
    assert groups == [
        ("rung-4", 27),
        ("rung-12", 9),
        ("rung-36", 3),
        ("rung-100", 1),
        ("rung-12", 12),
        ("rung-36", 4),
        ("rung-100", 1),
        ("rung-36", 6),
        ("rung-100", 2 + 4),  # bracket s = 1 ends and bracket s = 0 runs at the top rung
        ("rung-4", 27),
    ]
    assert budgeted.spent == budgeted.budget


@pytest.mark.parametrize("name", ["successive-halving", "hyperband"])
def test_brackets_stop_when_every_candidate_was_drawn(tmp_path: Path, name: str) -> None:
    budgeted, _ = run(name, ToyRungs(), 10_000, tmp_path, space=TINY_SPACE)
    assert {entry.candidate for entry in budgeted.history} == {TINY_SPACE.decode((i,)) for i in range(3)}
    assert Counter(entry.fidelity for entry in budgeted.history) == {"rung-4": 3, "rung-12": 1, "rung-36": 1}


# ---- rungs -------------------------------------------------------------------------------------------------------


def test_each_candidate_tops_out_at_its_own_full_budget(tmp_path: Path) -> None:
    budgeted = BudgetedEvaluator(ToyRungs(), 10_000, reward=REWARD, unit="steps")
    rungs = Rungs(budgeted, BUDGET_SPACE, 4, None, 3)
    short, long = (BUDGET_SPACE.decode((0, 0, 0, k)) for k in (0, 1))
    assert rungs.ladder in ([4, 12, 36, 60], [4, 12, 36, 100])
    assert [rungs.steps(short, level) for level in range(4)] == [4, 12, 36, 60]
    assert [rungs.steps(long, level) for level in range(4)] == [4, 12, 36, 100]
    assert rungs.last_level(short) == rungs.last_level(long) == 3
    assert rungs.level_of(short, 60) == 3 and rungs.level_of(short, 100) is None
    capped = Rungs(budgeted, BUDGET_SPACE, 4, 50, 3)
    assert capped.ladder == [4, 12, 36, 50] and capped.steps(long, 3) == 50
    for name in NAMES:
        budgeted, _ = run(name, ToyRungs(), 1500, tmp_path / name, space=BUDGET_SPACE)
        for entry in budgeted.history:
            assert steps_of(entry) in {4, 12, 36, entry.candidate.kd.max_steps}


def test_rungs_refuse_a_bottom_rung_above_the_full_budget() -> None:
    budgeted = BudgetedEvaluator(ToyRungs(), 100, reward=REWARD, unit="steps")
    with pytest.raises(ValueError, match="min_steps=200 exceeds the full budget"):
        Rungs(budgeted, TOY_SPACE, 200, None, 3)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="eta=1 must be a finite number above 1"):
        make_agent("hyperband", eta=1)
    with pytest.raises(ValueError, match="max_steps=10 must be at least min_steps=20"):
        make_agent("successive-halving", min_steps=20, max_steps=10)
    with pytest.raises(ValueError, match="bracket_size=0"):
        make_agent("successive-halving", bracket_size=0)
    with pytest.raises(ValueError, match="unknown objective 'accuracy'"):
        make_agent("mo-asha", objectives=["validation_accuracy", "accuracy"])
    with pytest.raises(ValueError, match="non-empty list of distinct names"):
        make_agent("mo-asha", objectives=[])
    agent = make_agent("mo-asha", objectives=["validation_accuracy", "speedup@32x128", "neg_params"])
    assert agent.options()["objectives"] == ["validation_accuracy", "speedup@32x128", "neg_params"]


# ---- MO-ASHA: the promotion rule on hand-worked cases ----------------------------------------------------------


def test_dominance_is_strict_on_one_objective_and_never_between_equal_points() -> None:
    assert dominates((0.8, 2.0), (0.8, 1.5))  # equal accuracy, faster: weak domination still dominates
    assert not dominates((0.8, 2.0), (0.8, 2.0))
    assert not dominates((0.9, 1.0), (0.8, 2.0)) and not dominates((0.8, 2.0), (0.9, 1.0))


def test_fronts_with_duplicates_and_weakly_dominated_points() -> None:
    points = [(0.8, 1.5), (0.8, 2.0), (0.6, 3.0), (0.8, 2.0), (0.5, 1.0)]
    assert nondominated_fronts(points) == [[1, 2, 3], [0], [4]]
    # Ledger order: the weakly dominated point came first; the duplicates share a front and a distance.
    assert promotion_order(points, [0, 1, 2, 3, 4]) == [1, 2, 3, 0, 4]
    assert promotion_order(points, [4, 3, 2, 1, 0]) == [3, 2, 1, 0, 4]


def test_crowding_distance_orders_the_inside_of_a_front() -> None:
    points = [(1.0, 5.0), (2.0, 4.0), (3.0, 3.0), (4.0, 1.0)]
    distances = crowding_distances(points, [0, 1, 2, 3])
    assert distances[0] == distances[3] == math.inf
    assert distances[1] == pytest.approx(2 / 3 + 2 / 4) and distances[2] == pytest.approx(2 / 3 + 3 / 4)
    assert promotion_order(points, [0, 1, 2, 3]) == [0, 3, 2, 1]
    # Equal points get equal distances, whatever their position.
    assert crowding_distances([(1.0, 1.0), (1.0, 1.0), (2.0, 0.0)], [0, 1, 2]) == {
        0: math.inf,
        1: math.inf,
        2: math.inf,
    }
    same = [(1.0, 5.0), (2.0, 4.0), (2.0, 4.0), (3.0, 3.0)]
    assert crowding_distances(same, [0, 1, 2, 3])[1] == crowding_distances(same, [0, 1, 2, 3])[2] == pytest.approx(2.0)


def test_equal_points_are_ordered_by_the_ledger_and_missing_points_go_last() -> None:
    assert promotion_order([(0.7, 2.0)] * 3, [5, 3, 9]) == [1, 0, 2]
    assert promotion_order([None, (0.1, 0.1), (math.nan, 9.0), (0.2, 0.2)], [0, 1, 2, 3]) == [3, 1, 0, 2]


def _entries(points: list[tuple[float, float] | None], start: int = 0) -> list[LedgerEntry]:
    """Fake ledger entries for hand cases: the i-th valid candidate of TOY_SPACE with (validation accuracy,
    speed-up at 1 x 64) from ``points``; None is a failed run."""
    entries = []
    for index, point in enumerate(points, start=start):
        candidate = VALID[index]
        if point is None:
            result = EvalResult(candidate=candidate, status="failed", error="toy")
        else:
            ms = 5.0 / point[1]
            latency = [
                LatencyPoint(
                    batch=1,
                    seq_len=64,
                    median_ms=ms,
                    p10_ms=ms,
                    p90_ms=ms,
                    teacher_median_ms=5.0,
                    speedup=point[1],
                    theoretical_speedup=point[1],
                )
            ]
            result = EvalResult(candidate=candidate, status="ok", validation_accuracy=point[0], latency=latency)
        entries.append(LedgerEntry(index, candidate, result, 0.0, "rung-4", 4))
    return entries


class _Ladder:
    """Stands in for Rungs in the promotion hand cases: 3 levels, every candidate climbs to the top."""

    levels = 3

    def last_level(self, candidate: Candidate) -> int:
        return 2


def test_the_newest_result_is_promoted_when_it_is_the_best() -> None:
    # syne-tune's MOASHA reads the rank of whichever trial sorts last; here the newest (best) result is found by
    # identity. Three results at rung 0, eta 3: the top one is promotable, and it is the newest.
    agent = MOASHA(min_steps=4, max_steps=36)
    entries = _entries([(0.6, 1.0), (0.7, 1.5), (0.9, 3.0)])
    state = RungState([entries, [], []], [set(), set(), set()])
    assert agent.promotable(state, _Ladder(), 0) == entries[2].candidate  # type: ignore[arg-type]
    state.promoted[0].add(entries[2].candidate.content_hash())
    assert agent.promotable(state, _Ladder(), 0) is None, "floor(3 / 3) = 1: only the top one may go up"


def test_promotion_with_ties_duplicates_and_weak_domination() -> None:
    agent = MOASHA(min_steps=4, max_steps=36)
    # Six results: two duplicates on the front, one weakly dominated by them, a front point, two behind.
    points = [(0.8, 1.5), (0.8, 2.0), (0.5, 1.0), (0.8, 2.0), (0.6, 3.0), None]
    entries = _entries(points)
    state = RungState([entries, [], []], [set(), set(), set()])
    ladder = _Ladder()
    # floor(6 / 3) = 2 promotable: the order is 1, 3 (duplicates, by ledger), 4, 0, 2, 5.
    first = agent.promotable(state, ladder, 0)  # type: ignore[arg-type]
    assert first == entries[1].candidate
    state.promoted[0].add(first.content_hash())
    second = agent.promotable(state, ladder, 0)  # type: ignore[arg-type]
    assert second == entries[3].candidate
    state.promoted[0].add(second.content_hash())
    assert agent.promotable(state, ladder, 0) is None  # type: ignore[arg-type]
    # A seventh result that dominates everything: floor(7 / 3) = 2 places, the newcomer and the first duplicate
    # (promoted already), so the newcomer goes up.
    state.results[0] = entries + _entries([(0.95, 4.0)], start=6)
    assert agent.promotable(state, ladder, 0) == state.results[0][6].candidate  # type: ignore[arg-type]


def test_asha_looks_from_the_highest_rung_down() -> None:
    agent = MOASHA(min_steps=4, max_steps=36)
    bottom = _entries([(0.6, 1.0), (0.7, 1.5), (0.9, 3.0)])
    middle = _entries([(0.5, 1.0), (0.6, 1.0), (0.8, 2.0)], start=3)
    state = RungState([bottom, middle, []], [set(), set(), set()])
    rng = np.random.default_rng(0)
    job = agent.next_job(state, _Ladder(), TOY_SPACE, rng, TOY_SPACE.num_valid())  # type: ignore[arg-type]
    assert job == (middle[2].candidate, 2)
    job = agent.next_job(state, _Ladder(), TOY_SPACE, rng, TOY_SPACE.num_valid())  # type: ignore[arg-type]
    assert job == (bottom[2].candidate, 1)
    candidate, level = agent.next_job(state, _Ladder(), TOY_SPACE, rng, TOY_SPACE.num_valid())  # type: ignore[misc,arg-type]
    assert level == 0 and TOY_SPACE.encode(candidate) in state.drawn


# ---- MO-ASHA: runs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_mo_asha_keeps_every_worker_busy(tmp_path: Path, workers: int) -> None:
    evaluator = ToyRungs(parallelism=workers)
    budgeted, agent = run("mo-asha", evaluator, 60, tmp_path, unit="evaluations")
    sizes = [len(batch) for batch in agent.rounds]
    assert sizes == [workers] * len(sizes) and sum(sizes) == 60 == budgeted.spent
    assert sum(size for _, size in evaluator.calls) == 60
    levels = Counter(level for batch in agent.rounds for _, level in batch)
    assert levels[0] > levels[1] > levels[2] >= 1, "promotions reach the upper rungs"
    if workers == 1:
        assert len(evaluator.calls) == 60


class MixedToyRungs(ToyRungs):
    """ToyRungs that also takes mixed-fidelity batches in one call, as the Ray pool does."""

    def evaluate_requests(self, requests: list[tuple[Candidate, str | Fidelity | None]]) -> list[EvalResult]:
        self.calls.append(("mixed", len(requests)))
        results = []
        for candidate, fidelity in requests:
            steps = self.cost_steps(candidate, fidelity)
            self.trained += steps
            results.append(self._result(candidate, steps))
        return results


def test_mo_asha_sends_each_mixed_batch_to_the_workers_at_once(tmp_path: Path) -> None:
    evaluator = MixedToyRungs(parallelism=3)
    budgeted, agent = run("mo-asha", evaluator, 60, tmp_path, unit="evaluations")
    mixed = [batch for batch in agent.rounds if len({level for _, level in batch}) > 1]
    assert mixed, "some batches hold jobs on several rungs"
    assert len(evaluator.calls) == len(agent.rounds) and {size for _, size in evaluator.calls} == {3}
    plain_budget, _ = run("mo-asha", ToyRungs(parallelism=3), 60, tmp_path / "plain", unit="evaluations")
    assert ledger(budgeted) == ledger(plain_budget)


def test_mo_asha_promotes_by_the_validation_objectives(tmp_path: Path) -> None:
    budgeted, agent = run("mo-asha", ToyRungs(), 120, tmp_path, unit="evaluations")
    for batch_number, batch in enumerate(agent.rounds):
        [(key, level)] = batch
        if level == 0:
            continue
        below = [e for e in budgeted.history if e.fidelity == f"rung-{[4, 12, 36, 100][level - 1]}"]
        seen = [e for e in below if e.index < sum(len(b) for b in agent.rounds[:batch_number])]
        points = [agent.point(e.result) for e in seen]
        order = promotion_order(points, [e.index for e in seen])
        top = {seen[i].candidate.content_hash() for i in order[: len(seen) // 3]}
        assert key in top, f"batch {batch_number}: a promotion from outside the top third of rung {level - 1}"


def test_mo_asha_objectives_are_an_option(tmp_path: Path) -> None:
    accuracy_only, _ = run(
        "mo-asha", ToyRungs(), 60, tmp_path / "a", unit="evaluations", objectives=["validation_accuracy"]
    )
    both, _ = run("mo-asha", ToyRungs(), 60, tmp_path / "b", unit="evaluations")
    assert ledger(accuracy_only) != ledger(both)


def test_mo_asha_ends_when_nothing_is_left(tmp_path: Path) -> None:
    budgeted, agent = run("mo-asha", ToyRungs(parallelism=2), 10_000, tmp_path, space=TINY_SPACE)
    # Two draws, the third (two results: nothing promotable), then the best of three goes up; one result at
    # rung 12 promotes nothing (floor(1 / 3) = 0) and every candidate was drawn.
    assert [[level for _, level in batch] for batch in agent.rounds] == [[0, 0], [0], [1]]
    assert Counter(entry.fidelity for entry in budgeted.history) == {"rung-4": 3, "rung-12": 1}
