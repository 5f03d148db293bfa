"""KD-Bench's leaderboard: every agent that can search a bench table, over seeds and budgets, scored against the
bench's exact optimum (the library behind ``distilsearch bench leaderboard``).

Each run is an agent of the registry (:func:`~distilsearch.search.agents.make_agent`) spending a
:class:`~distilsearch.search.budget.BudgetedEvaluator` over the table's :class:`~distilsearch.envs.evaluators.
TableEvaluator` -- the agents' own interface, as the Run API's table backend uses it, without a run folder's store:
each run's agent state lives in a temporary folder, and what is kept is one JSON line per finished (agent, seed,
budget) in ``OUT/leaderboard.jsonl``, appended and fsynced as each run completes. A restarted leaderboard skips
every line the file holds; a line written with other settings (another table or set of rows, reward, objective pair
or agent options) is refused with an error naming the file and the difference, never mixed in.

What the agents optimise: :func:`leaderboard_reward`, ``1 x validation retention + 0.05 x ln(measured speed-up at
1 x 64)`` (a reward that trades accuracy for speed, as the scored front does; MO-ASHA ranks its own Pareto fronts
of validation accuracy and speed-up). What they are scored on: the hypervolume of every result they were shown,
under :data:`PAIR` (validation accuracy vs measured latency at 1 x 64, the bench's reference point), as a share of the
bench's true front (:class:`~distilsearch.envs.bench_research.BenchResearch`); a surrogate's prediction is shown to
the agent but adds no volume.

Budgets are in evaluations: one full training of a candidate. Single-fidelity agents pay one evaluation per new
candidate. Multi-fidelity agents (:data:`MULTI_FIDELITY`) climb the rows' learning curves, replayed as ``rung-<step>``
levels (``min_steps=25, eta=2``: KD-Bench's checkpoints 25, 50, 100, 200 and the last step) and pay in training steps:
a budget of ``k`` evaluations is ``k`` times the median full training's steps, so a ``rung-25`` request costs 25 of
them; their evaluations are counted in those units. They need every row's learning curve, so they do not run while
the table is incomplete (the surrogate that answers its missing candidates predicts no curves).

Not on a table: ``dnas`` (:data:`NOT_ON_A_TABLE`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilsearch.envs.bench_research import BenchResearch
from distilsearch.envs.bench_table import BENCH_TABLE, BenchTable
from distilsearch.envs.evaluators import Evaluator, TableEvaluator
from distilsearch.envs.fidelity import rung_ladder
from distilsearch.envs.rewards import Reward, WeightedReward
from distilsearch.envs.surrogate import SurrogateEvaluator, is_predicted
from distilsearch.kdlib.core.atomic import read_appended_lines
from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.search.agents import AGENTS, make_agent
from distilsearch.search.agents.base import describe_reward
from distilsearch.search.budget import BudgetedEvaluator

AGENT_NAMES = ("random", "evolution", "ppo", "maskable-ppo", "successive-halving", "hyperband", "mo-asha")
SEEDS = 10
BUDGETS = (25, 50, 100)
PAIR = "accuracy-latency"
RECORDS = "leaderboard.jsonl"
MULTI_FIDELITY = frozenset({"successive-halving", "hyperband", "mo-asha"})
RUNG_OPTIONS: dict[str, Any] = {"min_steps": 25, "eta": 2}
NOT_ON_A_TABLE = {
    "dnas": (
        "it trains a weight-sharing super-student by live distillation from the teacher (Ray Tune trials over "
        "betas) and only then evaluates the derived students; a table replays finished students, it cannot train "
        "the super-student, and DNAS never searches weight_bits or alpha"
    )
}


class LeaderboardError(ValueError):
    """A leaderboard that cannot run: unknown agents, bad seeds or budgets, or a records file of other settings."""


def leaderboard_reward() -> Reward:
    """What the agents optimise: validation retention plus 0.05 x ln(measured speed-up at 1 x 64)."""
    return WeightedReward(w_acc=1.0, w_speed=0.05)


def agent_options(name: str) -> dict[str, Any]:
    """The options the leaderboard builds agent ``name`` with (the registry's defaults, rungs for multi-fidelity)."""
    return dict(RUNG_OPTIONS) if name in MULTI_FIDELITY else {}


@dataclass(frozen=True)
class Bench:
    """A bench table made ready for agents: its research, the evaluator agents spend (the table, with the surrogate
    answering missing candidates when it is incomplete) and the steps of one full training."""

    table: BenchTable
    research: BenchResearch
    evaluator: Evaluator
    optimum: float
    full_steps: int
    key: str

    @classmethod
    def load(cls, path: str | Path = BENCH_TABLE) -> Bench:
        """Load the bench table at ``path`` (``BenchTableError`` when it cannot be read)."""
        table = BenchTable.load(path)
        research = BenchResearch(table)
        evaluator: Evaluator = table.evaluator
        if research.rows < research.candidates:
            evaluator = TableEvaluator(table.path, fallback=SurrogateEvaluator.from_table(table.evaluator))
        steps = [r.train_steps for r in research.results if r.status == "ok" and r.train_steps is not None]
        rows = sorted(result.candidate.content_hash() for result in research.results)
        key = f"{table.space_hash}:{len(rows)}:{sha256_json(rows)[:16]}"
        full_steps = int(np.median(steps)) if steps else 0
        return cls(table, research, evaluator, research.front(PAIR).hypervolume, full_steps, key)

    @property
    def complete(self) -> bool:
        """Whether every candidate of the space has a measured row."""
        return self.research.rows == self.research.candidates

    def why_not(self, agent: str) -> str | None:
        """Why ``agent`` cannot run on this table, or None when it can."""
        if agent in NOT_ON_A_TABLE:
            return NOT_ON_A_TABLE[agent]
        if agent not in MULTI_FIDELITY:
            return None
        if self.full_steps < RUNG_OPTIONS["min_steps"]:
            first = RUNG_OPTIONS["min_steps"]
            return f"the rows record {self.full_steps} training steps, fewer than the first rung's {first}"
        if not self.complete:
            return (
                f"the table holds {self.research.rows} of {self.research.candidates} candidates and the surrogate "
                "that answers the missing ones predicts no learning curves to replay rungs from"
            )
        ladder = rung_ladder(RUNG_OPTIONS["min_steps"], self.full_steps, RUNG_OPTIONS["eta"])
        for result in self.research.results:
            steps = {point.step for point in result.learning_curve}
            if result.status == "ok" and not set(ladder) <= steps:
                return (
                    f"candidate {result.candidate.content_hash()} has learning-curve checkpoints {sorted(steps)}, "
                    f"not every rung {ladder}"
                )
        return None


def parse_list(text: str, what: str) -> list[str]:
    """The non-empty items of a comma-separated list; ``LeaderboardError`` naming ``what`` when there are none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise LeaderboardError(f"{what}={text!r} names nothing")
    return items


def parse_budgets(text: str) -> list[int]:
    """Budgets from a comma-separated list of whole numbers; ``LeaderboardError`` naming the text otherwise."""
    try:
        return [int(item) for item in parse_list(text, "budgets")]
    except ValueError:
        raise LeaderboardError(f"budgets={text!r} must be comma-separated whole numbers") from None


def check_plan(agents: Sequence[str], seeds: int, budgets: Sequence[int]) -> None:
    """Refuse unknown agents, repeated names, fewer than one seed and budgets below one evaluation."""
    known = sorted({*AGENTS, *NOT_ON_A_TABLE})
    unknown = [name for name in agents if name not in known]
    if unknown:
        raise LeaderboardError(f"unknown agent(s) {', '.join(map(repr, unknown))}; known agents: {', '.join(known)}")
    if len(set(agents)) != len(agents) or len(set(budgets)) != len(budgets):
        raise LeaderboardError(f"agents {list(agents)} and budgets {list(budgets)} must not repeat")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise LeaderboardError(f"seeds={seeds!r} must be an int of at least 1")
    bad = [b for b in budgets if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad or not budgets:
        raise LeaderboardError(f"budgets={list(budgets)!r} must be ints of at least 1 evaluation")


@dataclass(frozen=True)
class Record:
    """One finished run: the hypervolume after each of its evaluations (``trace``: evaluations spent, volume)."""

    agent: str
    seed: int
    budget: int
    settings: dict[str, Any]
    trace: list[tuple[float, float]]
    surrogate_answers: int
    seconds: float

    @property
    def key(self) -> tuple[str, int, int]:
        return self.agent, self.seed, self.budget

    def to_json(self) -> str:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Record:
        data = json.loads(line)
        data["trace"] = [(float(x), float(v)) for x, v in data["trace"]]
        return cls(**data)


def settings_of(bench: Bench, agent: str, reward: Reward) -> dict[str, Any]:
    """What a record must have been made with to be reused: table rows, pair, reward, agent options."""
    return json.loads(
        json.dumps(
            {"table": bench.key, "pair": PAIR, "reward": describe_reward(reward), "options": agent_options(agent)},
            default=str,
        )
    )


def load_records(path: Path, expected: Callable[[str], dict[str, Any]]) -> dict[tuple[str, int, int], Record]:
    """The records of ``path`` by (agent, seed, budget); ``LeaderboardError`` for a line that does not parse or was
    made with other settings than ``expected(agent)``."""
    records: dict[tuple[str, int, int], Record] = {}
    for number, line in enumerate(read_appended_lines(path), start=1):
        try:
            record = Record.from_json(line)
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
            raise LeaderboardError(f"{path}: line {number} is not a leaderboard record ({error})") from None
        wanted = expected(record.agent)
        if record.settings != wanted:
            differing = sorted(k for k in {*wanted, *record.settings} if wanted.get(k) != record.settings.get(k))
            raise LeaderboardError(
                f"{path}: line {number} ({record.agent}, seed {record.seed}, budget {record.budget}) was made with "
                f"another {', '.join(differing)} (e.g. a table that has grown since); move the file away or give "
                "another --out"
            )
        records[record.key] = record
    return records


def append_record(path: Path, record: Record) -> None:
    """Append ``record`` as one line and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(record.to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())


@contextmanager
def single_threaded() -> Iterator[None]:
    """Torch on one thread while an agent runs: the policies are tiny, and on a busy machine more threads only wait on
    each other (a PPO run took 10 times longer with torch's default threads on two loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_one(bench: Bench, agent: str, seed: int, budget: int, reward: Reward) -> Record:
    """Run ``agent`` with ``seed`` on the bench for ``budget`` evaluations and trace its hypervolume."""
    multi = agent in MULTI_FIDELITY
    per_evaluation = bench.full_steps if multi else 1
    started = time.perf_counter()
    budgeted = BudgetedEvaluator(
        bench.evaluator, budget * per_evaluation, reward=reward, unit="steps" if multi else "evaluations"
    )
    with tempfile.TemporaryDirectory(prefix=f"leaderboard-{agent}-") as run_dir, single_threaded():
        make_agent(agent, **agent_options(agent)).run(budgeted, bench.table.space, run_dir, seed)
    seconds = time.perf_counter() - started
    trace: list[tuple[float, float]] = []
    spent = 0
    entries = budgeted.entries()
    for index, entry in enumerate(entries):
        spent += entry.cost
        volume = bench.research.hypervolume([e.result for e in entries[: index + 1]], PAIR)
        trace.append((spent / per_evaluation, volume))
    answers = sum(is_predicted(entry.result) for entry in entries)
    return Record(agent, seed, budget, settings_of(bench, agent, reward), trace, answers, seconds)


@dataclass(frozen=True)
class Leaderboard:
    """A leaderboard's bench, its finished records (those of the plan), the agents it could not run and why."""

    bench: Bench
    records: list[Record]
    skipped: dict[str, str]
    reward: Reward
    budgets: list[int]
    seeds: int
    ran: int


def run_leaderboard(
    table: str | Path = BENCH_TABLE,
    agents: Sequence[str] = AGENT_NAMES,
    seeds: int = SEEDS,
    budgets: Sequence[int] = BUDGETS,
    out: str | Path = "results",
    *,
    on_record: Callable[[Record, int, int], None] | None = None,
) -> Leaderboard:
    """Run every (agent, seed, budget) of the plan that ``OUT/leaderboard.jsonl`` lacks, appending each as it finishes;
    agents that cannot run on the table are skipped with the reason. ``on_record(record, done, total)`` is called
    after each new run. Seeds are ``0 .. seeds - 1``."""
    agents, budgets = list(agents), list(budgets)
    check_plan(agents, seeds, budgets)
    bench = Bench.load(table)
    reward = leaderboard_reward()
    skipped = {name: reason for name in agents if (reason := bench.why_not(name)) is not None}
    path = Path(out) / RECORDS
    records = load_records(path, lambda agent: settings_of(bench, agent, reward))
    plan = [
        (agent, seed, budget) for agent in agents if agent not in skipped for budget in budgets for seed in range(seeds)
    ]
    todo = [key for key in plan if key not in records]
    for done, (agent, seed, budget) in enumerate(todo, start=1):
        record = run_one(bench, agent, seed, budget, reward)
        append_record(path, record)
        records[record.key] = record
        if on_record is not None:
            on_record(record, done, len(todo))
    return Leaderboard(bench, [records[key] for key in plan], skipped, reward, budgets, seeds, len(todo))
