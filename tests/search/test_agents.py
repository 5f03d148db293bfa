"""The search budget and the agents on the toy benchmark table (TOY TEST DATA, see tests/toy_table.py)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_table import TOY_SPACE, TOY_TEACHER, toy_results

from distilsearch.envs.evaluators import BatchEvaluator, TableEvaluator
from distilsearch.envs.rewards import WeightedReward
from distilsearch.envs.space import SearchSpace
from distilsearch.envs.store import EvaluationStore, evaluation_key
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.search.agents import AGENTS, Agent, make_agent, register_agent
from distilsearch.search.agents.evolution import STATE_FILE, mutate
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator, BudgetExhausted, LedgerEntry

REWARD = WeightedReward(w_acc=1.0, w_speed=0.1)
NAMES = ["random", "evolution", "ppo", "maskable-ppo"]
OPTIONS: dict[str, dict[str, int]] = {"evolution": {"population_size": 6, "sample_size": 3}}
# Four valid candidates (num_layers 1..4; 5 exceeds the toy teacher), all in the toy table.
TINY_SPACE = SearchSpace(
    TOY_TEACHER,
    {"num_layers": [1, 2, 3, 4, 5]},
    {"hidden_size": 32, "num_heads": 4, "ffn_size": 64, "init": "teacher", "weight_bits": 32, "alpha": 0.5}
    | {"max_steps": 100},
)


@pytest.fixture(scope="module")
def table(toy_table_evaluator: TableEvaluator) -> TableEvaluator:
    return toy_table_evaluator


class CountingEvaluator:
    """Stands in for the live evaluator: results go through an evaluation store; ``calls`` counts the real ones."""

    def __init__(self, table: TableEvaluator, store: EvaluationStore, task: str | None = None) -> None:
        self.table, self.store = table, store
        self.task, self.teacher_key, self.fidelity = task or table.task, table.teacher_key, table.fidelity
        self.calls = 0

    def evaluate(self, candidate: Candidate) -> EvalResult:
        def real() -> EvalResult:
            self.calls += 1
            return self.table.evaluate(candidate)

        key = evaluation_key(candidate, self.task, self.teacher_key, self.fidelity)
        return self.store.get_or_evaluate(
            key, real, task=self.task, teacher_key=self.teacher_key, fidelity=self.fidelity
        )


class BatchCountingEvaluator(CountingEvaluator):
    """A CountingEvaluator that also evaluates batches, as a pool of ``parallelism`` workers would (the real pool,
    :class:`~distilsearch.envs.ray_evaluator.RayEvaluator`, is exercised in tests/test_ray_evaluator.py); ``batches``
    records the size of every batch and ``singles`` the calls of ``evaluate``."""

    def __init__(self, table: TableEvaluator, store: EvaluationStore, parallelism: int) -> None:
        super().__init__(table, store)
        self.parallelism = parallelism
        self.batches: list[int] = []
        self.singles = 0

    def evaluate(self, candidate: Candidate) -> EvalResult:
        self.singles += 1
        return super().evaluate(candidate)

    def evaluate_many(self, candidates: list[Candidate]) -> list[EvalResult]:
        self.batches.append(len(candidates))
        return [super(BatchCountingEvaluator, self).evaluate(candidate) for candidate in candidates]


class FlakyEvaluator(CountingEvaluator):
    """A CountingEvaluator whose first evaluation of each candidate in ``fail`` diverges (a ``failed`` result, as a
    live training with a NaN loss gives); with ``retry_failed`` it evaluates a stored failure again, as the live
    evaluators do."""

    def __init__(self, table: TableEvaluator, store: EvaluationStore, fail: set[str]) -> None:
        super().__init__(table, store)
        self.fail, self.retry_failed = set(fail), False

    def evaluate(self, candidate: Candidate) -> EvalResult:
        def real() -> EvalResult:
            self.calls += 1
            if candidate.content_hash() in self.fail:
                self.fail.discard(candidate.content_hash())
                return EvalResult(candidate=candidate, status="failed", error="loss became NaN at step 3")
            return self.table.evaluate(candidate)

        key = evaluation_key(candidate, self.task, self.teacher_key, self.fidelity)
        return self.store.get_or_evaluate(
            key,
            real,
            task=self.task,
            teacher_key=self.teacher_key,
            fidelity=self.fidelity,
            retry_failed=self.retry_failed,
        )


def counting(table: TableEvaluator, directory: Path) -> CountingEvaluator:
    return CountingEvaluator(table, EvaluationStore(directory / "store.sqlite"))


def run(
    name: str,
    evaluator: CountingEvaluator | TableEvaluator,
    budget: int,
    run_dir: Path,
    seed: int = 0,
    space: SearchSpace = TOY_SPACE,
    **options: int,
) -> BudgetedEvaluator:
    budgeted = BudgetedEvaluator(evaluator, budget, reward=REWARD, history_path=run_dir / HISTORY_FILE)
    make_agent(name, **(OPTIONS.get(name, {}) | options)).run(budgeted, space, run_dir, seed=seed)
    return budgeted


def first_candidates(count: int) -> list[Candidate]:
    return [TOY_SPACE.decode(choices) for choices, _ in zip(TOY_SPACE.enumerate_valid(), range(count), strict=False)]


def hashes(budgeted: BudgetedEvaluator) -> list[str]:
    return [entry.candidate.content_hash() for entry in budgeted.history]


# ---- the budget ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, -3, 1.5, True, "5"])
def test_a_budget_below_one_is_refused(table: TableEvaluator, budget: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"budget={budget!r} must be an int of at least 1")):
        BudgetedEvaluator(table, budget)  # type: ignore[arg-type]


def test_repeats_are_free_and_new_candidates_past_the_budget_raise(table: TableEvaluator, tmp_path: Path) -> None:
    evaluator = counting(table, tmp_path)
    seen: list[LedgerEntry] = []
    budgeted = BudgetedEvaluator(evaluator, 3, seen.append, reward=REWARD)
    a, b, c, d = first_candidates(4)
    first = budgeted.evaluate(a)
    assert budgeted.evaluate(a) == first and budgeted.repeats == 1
    assert first.accuracy is None and first.validation_accuracy is not None  # agents see blinded results
    budgeted.evaluate(b)
    budgeted.evaluate(c)
    assert (evaluator.calls, budgeted.spent, budgeted.remaining, len(seen)) == (3, 3, 0, 3)
    with pytest.raises(BudgetExhausted, match="budget of 3 evaluations cannot pay for candidate") as raised:
        budgeted.evaluate(d)
    assert raised.value.candidate == d and evaluator.calls == 3
    assert budgeted.evaluate(b).candidate == b and evaluator.calls == 3
    assert [entry.candidate for entry in budgeted.history] == [a, b, c] == [entry.candidate for entry in seen]
    assert budgeted.results() == [entry.result for entry in seen]
    best = max(seen, key=lambda entry: entry.reward)
    assert budgeted.best == replace(best, result=best.result.blinded()) and a in budgeted and d not in budgeted
    assert budgeted.lookup(c) == replace(seen[2], result=seen[2].result.blinded())
    assert seen[2].reward == REWARD(seen[2].result)


def test_the_ledger_carries_the_budget_into_a_resumed_run(table: TableEvaluator, tmp_path: Path) -> None:
    path = tmp_path / "run" / HISTORY_FILE
    a, b, c, d = first_candidates(4)
    first = BudgetedEvaluator(counting(table, tmp_path), 2, reward=REWARD, history_path=path)
    first.evaluate(a)
    first.evaluate(b)
    evaluator = CountingEvaluator(table, EvaluationStore(tmp_path / "other.sqlite"))
    resumed = BudgetedEvaluator(evaluator, 3, reward=REWARD, history_path=path)
    assert (resumed.spent, resumed.remaining, resumed.best) == (2, 1, first.best)
    assert resumed.evaluate(a) == first.history[0].result and evaluator.calls == 0
    resumed.evaluate(c)
    assert evaluator.calls == 1 and [e.candidate for e in resumed.history] == [a, b, c]
    with pytest.raises(BudgetExhausted):
        resumed.evaluate(d)
    with pytest.raises(ValueError, match="budget=2 is below the 3 evaluations already recorded"):
        BudgetedEvaluator(table, 2, history_path=path)
    with pytest.raises(ValueError, match=r"other settings \(task: 'toy-task' -> .*the same settings to resume"):
        BudgetedEvaluator(CountingEvaluator(table, evaluator.store, task="other"), 5, history_path=path)
    with path.open("a", encoding="utf-8") as out:
        out.write('{"candidate": {"spec"')
    assert BudgetedEvaluator(table, 5, reward=REWARD, history_path=path).spent == 3
    assert path.read_text(encoding="utf-8").endswith("}\n")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([*lines[:2], "not json\n", *lines[2:]]), encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 is not a ledger entry"):
        BudgetedEvaluator(table, 5, history_path=path)


def test_failed_evaluations_are_kept_on_resume_unless_retry_failed_withdraws_them(
    table: TableEvaluator, tmp_path: Path
) -> None:
    path = tmp_path / "run" / HISTORY_FILE
    a, b, c = first_candidates(3)
    flaky = FlakyEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"), fail={a.content_hash()})
    first = BudgetedEvaluator(flaky, 2, reward=REWARD, history_path=path)
    assert first.evaluate(a).status == "failed" and first.evaluate(b).status == "ok"
    kept = BudgetedEvaluator(flaky, 2, reward=REWARD, history_path=path)
    assert kept.spent == 2 and kept.evaluate(a).status == "failed" and flaky.calls == 2

    flaky.retry_failed = True
    retried = BudgetedEvaluator(flaky, 2, reward=REWARD, history_path=path, retry_failed=True)
    assert (retried.spent, [e.candidate for e in retried.history]) == (1, [b])
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1]) == {
        "withdrawn": {"candidate_hash": a.content_hash(), "fidelity": table.fidelity}
    }
    assert retried.evaluate(a).status == "ok" and flaky.calls == 3
    assert retried.spent == 2 and [(e.index, e.candidate) for e in retried.history] == [(0, b), (1, a)]
    with pytest.raises(BudgetExhausted):
        retried.evaluate(c)

    reloaded = BudgetedEvaluator(table, 3, reward=REWARD, history_path=path)
    assert reloaded.spent == 2 and reloaded.lookup(a).result.status == "ok"
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"withdrawn": {"candidate_hash": c.content_hash(), "fidelity": table.fidelity}}) + "\n")
    with pytest.raises(ValueError, match=f"it withdraws .*{c.content_hash()}.*which no earlier line records"):
        BudgetedEvaluator(table, 3, history_path=path)


def test_a_batch_spends_one_unit_per_new_candidate_or_nothing(table: TableEvaluator, tmp_path: Path) -> None:
    evaluator = BatchCountingEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"), parallelism=4)
    seen: list[LedgerEntry] = []
    budgeted = BudgetedEvaluator(evaluator, 4, seen.append, reward=REWARD, history_path=tmp_path / HISTORY_FILE)
    assert isinstance(evaluator, BatchEvaluator) and budgeted.parallelism == 4
    assert BudgetedEvaluator(table, 1).parallelism == 1
    a, b, c, d, e = first_candidates(5)
    results = budgeted.evaluate_many([a, b, a])
    assert results[0] == results[2] and [r.candidate for r in results] == [a, b, a]
    assert (evaluator.batches, budgeted.spent, budgeted.repeats) == ([2], 2, 1)
    with pytest.raises(BudgetExhausted) as raised:
        budgeted.evaluate_many([b, c, d, e])
    assert raised.value.candidate == e and evaluator.batches == [2] and budgeted.spent == 2
    budgeted.evaluate_many([c, b, d])
    assert evaluator.batches == [2, 2] and evaluator.calls == 4 and evaluator.singles == 0
    assert [entry.candidate for entry in seen] == [a, b, c, d] and [entry.index for entry in seen] == [0, 1, 2, 3]
    assert budgeted.evaluate(d) == seen[3].result.blinded() and evaluator.batches == [2, 2]
    resumed = BudgetedEvaluator(table, 5, reward=REWARD, history_path=tmp_path / HISTORY_FILE)
    assert [entry.candidate for entry in resumed.history] == [a, b, c, d]


# ---- every agent -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_agent_spends_exactly_the_budget(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    evaluator = counting(table, tmp_path)
    budgeted = run(name, evaluator, 12, tmp_path / "run")
    assert budgeted.spent == len(set(hashes(budgeted))) == evaluator.calls == 12
    assert all(TOY_SPACE.encode(entry.candidate) for entry in budgeted.history)
    assert len((tmp_path / "run" / HISTORY_FILE).read_text(encoding="utf-8").splitlines()) == 1 + 12


@pytest.mark.parametrize("name", NAMES)
def test_each_agent_stops_when_every_valid_candidate_is_evaluated(
    table: TableEvaluator, tmp_path: Path, name: str
) -> None:
    options = {"population_size": 2, "sample_size": 2, "patience": 2} if name == "evolution" else {}
    budgeted = run(name, table, 10, tmp_path, space=TINY_SPACE, **options)
    assert sorted(TINY_SPACE.encode(entry.candidate) for entry in budgeted.history) == [(0,), (1,), (2,), (3,)]


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_reproducible(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    first, again, other = (run(name, table, 10, tmp_path / str(k), seed=seed) for k, seed in enumerate([1, 1, 2]))
    assert hashes(first) == hashes(again) != hashes(other)


@pytest.mark.parametrize("name", NAMES)
def test_a_resumed_run_reuses_every_recorded_evaluation(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    evaluator = counting(table, tmp_path)
    first = run(name, evaluator, 10, tmp_path / "run")
    evaluator_again = CountingEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"))
    resumed = run(name, evaluator_again, 20, tmp_path / "run")
    assert evaluator.calls + evaluator_again.calls == 20 and resumed.spent == 20
    assert hashes(resumed)[:10] == hashes(first) and len(set(hashes(resumed))) == 20
    if name in ("random", "evolution"):
        assert hashes(resumed) == hashes(run(name, table, 20, tmp_path / "straight"))
    else:
        assert sorted(path.name for path in (tmp_path / "run" / "logs").iterdir()) == ["session-1", "session-2"]


@pytest.mark.parametrize("name", NAMES)
def test_each_agent_keeps_every_worker_busy(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    evaluator = BatchCountingEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"), parallelism=3)
    budgeted = run(name, evaluator, 11, tmp_path / "run")
    assert budgeted.spent == evaluator.calls == sum(evaluator.batches) == 11 and evaluator.singles == 0
    assert max(evaluator.batches) == 3
    if name in ("random", "evolution"):
        assert evaluator.batches == [3, 3, 3, 2]
    else:
        assert len(evaluator.batches) <= 11 - 3, "most vector steps should evaluate several candidates"


def test_random_search_history_does_not_depend_on_the_workers(table: TableEvaluator, tmp_path: Path) -> None:
    batched = BatchCountingEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"), parallelism=4)
    assert hashes(run("random", batched, 10, tmp_path / "4")) == hashes(run("random", table, 10, tmp_path / "1"))


@pytest.mark.parametrize("name", ["evolution", "ppo"])
def test_batched_runs_resume_with_every_recorded_evaluation(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    def evaluator() -> BatchCountingEvaluator:
        return BatchCountingEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"), parallelism=3)

    first, again = evaluator(), evaluator()
    run(name, first, 7, tmp_path / "run")
    resumed = run(name, again, 14, tmp_path / "run")
    assert first.calls + again.calls == 14 and len(set(hashes(resumed))) == 14
    if name == "evolution":
        assert hashes(resumed) == hashes(run(name, evaluator(), 14, tmp_path / "straight"))


@pytest.mark.parametrize("name", ["evolution", "ppo", "maskable-ppo"])
def test_a_run_resumes_with_more_workers(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    store = EvaluationStore(tmp_path / "store.sqlite")
    first, more = BatchCountingEvaluator(table, store, parallelism=1), BatchCountingEvaluator(table, store, 3)
    run(name, first, 5, tmp_path / "run")
    resumed = run(name, more, 12, tmp_path / "run")
    assert first.batches == [1] * 5 and max(more.batches) == 3 and first.calls + more.calls == 12 == resumed.spent


def test_the_batched_vec_env_cuts_episodes_the_budget_cannot_pay_for(table: TableEvaluator, tmp_path: Path) -> None:
    from distilsearch.envs.student_search import StudentSearchOneShotEnv
    from distilsearch.search.agents.batched_env import BatchedSearchVecEnv

    evaluator = BatchCountingEvaluator(table, EvaluationStore(tmp_path / "store.sqlite"), parallelism=3)
    budgeted = BudgetedEvaluator(evaluator, 2, reward=REWARD)
    env = BatchedSearchVecEnv([StudentSearchOneShotEnv(budgeted, TOY_SPACE, reward=REWARD) for _ in range(3)], budgeted)
    env.reset()
    actions = np.array([TOY_SPACE.encode(candidate) for candidate in first_candidates(3)])
    _, rewards, dones, infos = env.step(actions)
    assert evaluator.batches == [2] and budgeted.remaining == 0 and dones.all()
    assert [info.get("budget_exhausted", False) for info in infos] == [False, False, True]
    assert rewards[2] == 0.0 and infos[2]["TimeLimit.truncated"] and rewards[0] == REWARD(budgeted.history[0].result)
    assert [info["candidate_hash"] for info in infos[:2]] == hashes(budgeted)
    _, _, _, infos = env.step(np.stack([actions[1]] * 3))
    assert evaluator.batches == [2] and not any(info.get("budget_exhausted") for info in infos)


def test_resuming_with_other_settings_is_refused(table: TableEvaluator, tmp_path: Path) -> None:
    run("evolution", table, 3, tmp_path)
    with pytest.raises(ValueError, match=r"other settings .*seed: 0 -> 1"):
        run("evolution", table, 6, tmp_path, seed=1)
    with pytest.raises(ValueError, match=r"options: .*'population_size': 6.* -> .*'population_size': 7"):
        run("evolution", table, 6, tmp_path, population_size=7)
    with pytest.raises(ValueError, match="agent: 'evolution' -> 'random'"):
        run("random", table, 6, tmp_path)


# ---- regularized evolution -------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutation_changes_one_dimension_to_a_valid_choice(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parent = TOY_SPACE.sample(rng)
    child = mutate(TOY_SPACE, parent, rng)
    assert TOY_SPACE.is_valid(child) and sum(p != c for p, c in zip(parent, child, strict=True)) == 1


def test_evolution_beats_the_median_candidate(table: TableEvaluator, tmp_path: Path) -> None:
    median = float(np.median([REWARD(result) for result in toy_results()]))
    budgeted = run("evolution", table, 30, tmp_path, population_size=10, sample_size=3)
    assert budgeted.spent == 30 and budgeted.best is not None and budgeted.best.reward > median


def test_evolution_state_is_json_and_needs_its_ledger(table: TableEvaluator, tmp_path: Path) -> None:
    budgeted = run("evolution", table, 9, tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text(encoding="utf-8"))
    assert state["evaluations"] == 9 and state["cycles"] >= 9 and len(state["population"]) == 6
    assert [tuple(member) for member in state["population"]] == [
        TOY_SPACE.encode(entry.candidate) for entry in budgeted.history[-6:]
    ]
    without_ledger = BudgetedEvaluator(table, 12, reward=REWARD)
    with pytest.raises(ValueError, match="written after 9 evaluations but the ledger holds 0"):
        make_agent("evolution", **OPTIONS["evolution"]).run(without_ledger, TOY_SPACE, tmp_path)


def test_evolution_resumes_exactly_when_the_ledger_is_ahead_of_the_checkpoint(
    table: TableEvaluator, tmp_path: Path
) -> None:
    run("evolution", table, 9, tmp_path / "run")
    checkpoint = (tmp_path / "run" / STATE_FILE).read_text(encoding="utf-8")
    run("evolution", table, 10, tmp_path / "run")
    (tmp_path / "run" / STATE_FILE).write_text(checkpoint, encoding="utf-8")  # as if killed before the checkpoint
    evaluator = counting(table, tmp_path)
    resumed = run("evolution", evaluator, 20, tmp_path / "run")
    assert evaluator.calls == 10 and hashes(resumed) == hashes(run("evolution", table, 20, tmp_path / "straight"))


# ---- PPO and MaskablePPO ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo"])
def test_rl_agents_finish_the_budget_and_save_a_model_that_loads(
    table: TableEvaluator, tmp_path: Path, name: str
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    budgeted = run(name, table, 30, tmp_path)
    assert budgeted.spent == 30
    model = make_agent(name).model_for(budgeted, TOY_SPACE, tmp_path, seed=0)
    assert model.num_timesteps > 0 and model.gamma == 1.0 and model.gae_lambda == 1.0
    progress = (tmp_path / "logs" / "session-1" / "progress.csv").read_text(encoding="utf-8")
    assert "search/evaluations" in progress.splitlines()[0]
    events = EventAccumulator(str(tmp_path / "tensorboard" / "session-1"))
    events.Reload()
    evaluations = events.Scalars("search/evaluations")
    assert evaluations[-1].value == 30 and {"train/loss", "search/best_reward"} <= set(events.Tags()["scalars"])


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo"])
def test_patience_ends_a_policy_that_only_repeats(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    budgeted = run(name, table, 10, tmp_path, space=TINY_SPACE, patience=1)
    assert 1 <= budgeted.spent < TINY_SPACE.num_valid() and (tmp_path / "policy.json").exists()


def test_rl_options_are_checked(tmp_path: Path, table: TableEvaluator) -> None:
    from distilsearch.search.agents.rl import MaskablePPOAgent, PPOAgent

    with pytest.raises(ValueError, match=r"gamma=1\.5 must lie in"):
        make_agent("ppo", gamma=1.5)
    with pytest.raises(ValueError, match=r"rollout of 1 steps \(1 steps x 1 environments.*minibatches=1 equal"):
        run("ppo", table, 5, tmp_path, candidates_per_rollout=1, minibatches=1)
    assert not tmp_path.joinpath("agent.json").exists()
    assert run("ppo", table, 5, tmp_path, minibatches=4).spent == 5
    assert PPOAgent().n_steps(TOY_SPACE, copies=3) == 4 and PPOAgent(minibatches=3).n_steps(TOY_SPACE, copies=3) == 3
    assert PPOAgent(candidates_per_rollout=2, minibatches=1).n_steps(TOY_SPACE, copies=4) == 1
    assert MaskablePPOAgent(minibatches=3).n_steps(TOY_SPACE, copies=1) == 9 * len(TOY_SPACE.names)


# ---- the registry ----------------------------------------------------------------------------------------------


def test_the_registry_builds_agents_and_takes_new_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown agent 'simulated-annealing'; registered agents: \[.*'evolution'"):
        make_agent("simulated-annealing")
    with pytest.raises(ValueError, match="sample_size=9 must not exceed population_size=4"):
        make_agent("evolution", population_size=4, sample_size=9)
    with pytest.raises(ValueError, match=r"make_agent\('random', ...\): RandomSearch\(\) takes no arguments"):
        make_agent("random", bogus=1)

    class Idle(Agent):
        name = "idle"

        def options(self) -> dict[str, int]:
            return {}

        def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
            return None

    try:
        register_agent("idle", Idle)
        assert isinstance(make_agent("idle"), Idle)
        with pytest.raises(ValueError, match="an agent named 'random' is already registered"):
            register_agent("random", Idle)
    finally:
        AGENTS.pop("idle", None)


@pytest.mark.parametrize("name", NAMES)
def test_each_agent_stops_cleanly_when_a_step_budget_cannot_pay_for_more(
    table: TableEvaluator, tmp_path: Path, name: str
) -> None:
    budgeted = BudgetedEvaluator(table, 250, reward=REWARD, unit="steps")
    make_agent(name, **OPTIONS.get(name, {})).run(budgeted, TOY_SPACE, tmp_path / "run", seed=0)
    assert budgeted.spent == 200 and len(budgeted) == 2 and budgeted.remaining == 50  # each toy student: 100 steps
