"""Asynchronous multi-objective successive halving, in the manner of MO-ASHA (Schmucker, Donini, Perrone &
Archambeau, "Multi-objective Asynchronous Successive Halving", 2021; syne-tune's ``MOASHA``), over learning-curve
rungs.

Rungs are the levels of :class:`~distilsearch.search.agents.multifidelity.Rungs` (``min_steps`` times powers of ``eta``
up to ``max_steps``, by default the candidates' own full budget). ASHA's decision rule (Li et al., MLSys 2020) chooses
every job: look from the highest rung below the top down for a *promotable* candidate -- one among the top
``floor(n_k / eta)`` of the ``n_k`` results of rung ``k`` that was not promoted from ``k`` yet (and has not reached
its own top budget) -- and promote the first found to rung ``k + 1``; if there is none, draw a candidate new to the
run with :meth:`~distilsearch.envs.space.SearchSpace.sample` (``numpy.random.default_rng(seed)``) for the bottom rung.
The run ends when the budget cannot pay for a job or no job is left (every valid candidate drawn, nothing promotable).

Multi-objective order: a rung's results are sorted by non-dominated front (Pareto dominance: at least as good on
every objective, strictly better on one; equal points never dominate each other), inside a front by crowding
distance (NSGA-II; boundary points first, equal points get equal distances), then by ledger index (earlier first).
Results missing an objective (failed runs) come after every front. The objectives are read from the blinded results
the budget returns, so only validation-side and measured values exist: by default ``validation_accuracy`` and
``speedup`` (measured teacher / student latency at batch 1 x 64), both maximised; see :data:`OBJECTIVES`.
syne-tune's ``MOASHA`` sorts with ``nondominated_sort``, which returns the *indices* of the points in priority
order, but then reads that list as if it held each point's priority and takes its last entry as the new trial's:
the rank it tests is that of whichever trial sorts last. Here each result's position in the order is computed
explicitly and found by ledger identity (:func:`promotion_order`).

Asynchrony with a batch API: the evaluator returns whole batches, so the agent keeps
:attr:`~distilsearch.search.budget.BudgetedEvaluator.parallelism` (``K``) jobs in flight by filling all ``K`` slots with
the next jobs ASHA's rule chooses given every result so far (each chosen job counts as promoted or drawn at once, so the
``K`` are distinct), evaluating that batch and repeating. It is ASHA's decision rule with synchronous batches of
size ``K``: a slot that finishes early waits for the batch; with ``K = 1`` it is exact ASHA. A batch whose jobs sit
on several rungs goes out as one mixed request
(:meth:`~distilsearch.search.budget.BudgetedEvaluator.evaluate_requests`), which
:class:`~distilsearch.envs.ray_evaluator.RayEvaluator` runs on all ``K`` workers at once.

Why not Ray Tune: Ray Tune has no multi-objective scheduler (its ``ASHAScheduler`` ranks one metric), its experiment
state is pickled (a run folder here must resume from JSON, never by unpickling), and its trials do not charge the
run's shared ledger and step budget; so this agent is built on the ledger.

Resume: the rung state is rebuilt from the ledger (entries at fidelity ``rung-<steps>`` are a candidate's result at
the level where it trains that many steps; a result at level ``k + 1`` means it was promoted from ``k``; entries at
other fidelities are not the agent's and are ignored), plus ``run_dir/mo_asha.json``, written after every batch
with the batch count, the size of the ledger then and the generator's state. A resumed run rebuilds the state from
that prefix of the ledger, restores the generator and continues exactly as an uninterrupted run would: a batch cut
short by the budget, or by a crash after its results were recorded, is chosen again and its recorded jobs are free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.search import run_layout
from distilsearch.search.agents.base import Agent
from distilsearch.search.agents.checkpoint import load_state, save_state
from distilsearch.search.agents.multifidelity import (
    DEFAULT_ETA,
    DEFAULT_MIN_STEPS,
    Rungs,
    check_eta,
    check_steps,
    entry_at,
    floor_share,
    request,
)
from distilsearch.search.budget import BudgetedEvaluator, LedgerEntry

STATE_FILE = run_layout.AGENT_STATES["mo-asha"]
STATE_VERSION = 1
DEFAULT_OBJECTIVES = ("validation_accuracy", "speedup")
_RUNG = re.compile(r"rung-([1-9][0-9]*)")
_SPEEDUP = re.compile(r"speedup@([1-9][0-9]*)x([1-9][0-9]*)")

Objective = Callable[[EvalResult], float | None]
OBJECTIVES: dict[str, Objective] = {
    "validation_accuracy": lambda result: result.validation_accuracy,
    "validation_retention": lambda result: result.validation_retention,
    "ood_dev_accuracy": lambda result: result.mean_ood_dev_accuracy,
    "ood_dev_retention": lambda result: result.ood_dev_retention,
    "speedup": lambda result: result.speedup(1, 64),
    "neg_params": lambda result: None if result.params_total is None else -float(result.params_total),
}
"""Objectives by name, all maximised; ``speedup@BxS`` (e.g. ``speedup@32x128``) is the measured speed-up at
another point. None (or NaN) means missing."""


def objective(name: str) -> Objective:
    """The objective called ``name`` (:data:`OBJECTIVES` or ``speedup@BxS``); ``ValueError`` for unknown names."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    match = _SPEEDUP.fullmatch(name)
    if match:
        batch, seq_len = int(match.group(1)), int(match.group(2))
        return lambda result: result.speedup(batch, seq_len)
    raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)} or speedup@BxS (e.g. speedup@32x128)")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is at least as good as ``b`` on every objective and better on one (all maximised)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def nondominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Positions of ``points`` by non-dominated front (the Pareto front first), each front in input order."""
    remaining = list(range(len(points)))
    fronts: list[list[int]] = []
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def crowding_distances(points: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each position of ``front``; equal points share one distance.

    Per objective, the distinct points are sorted by value (ties by their whole vector); those at the lowest and
    highest value get infinity, the others the gap between their neighbours over the objective's range (nothing when
    the range is 0). A front of at most two distinct points is all boundary.
    """
    distinct = sorted({tuple(points[i]) for i in front})
    distance = dict.fromkeys(distinct, 0.0)
    if len(distinct) <= 2:
        distance = dict.fromkeys(distinct, math.inf)
    else:
        for m in range(len(distinct[0])):
            ordered = sorted(distinct, key=lambda point: (point[m], point))
            low, high = ordered[0][m], ordered[-1][m]
            for point in ordered:
                if point[m] in (low, high):
                    distance[point] = math.inf
            if high == low:
                continue
            for before, point, after in zip(ordered, ordered[1:], ordered[2:], strict=False):
                if point[m] not in (low, high):
                    distance[point] += (after[m] - before[m]) / (high - low)
    return {i: distance[tuple(points[i])] for i in front}


def promotion_order(points: Sequence[Sequence[float] | None], ties: Sequence[int]) -> list[int]:
    """Positions of ``points`` best first: by non-dominated front, then larger crowding distance, then smaller
    ``ties`` (the ledger index). A point that is None or holds a NaN comes after every front, by ``ties``."""
    complete = [i for i, point in enumerate(points) if point is not None and not any(map(math.isnan, point))]
    missing = sorted(set(range(len(points))) - set(complete), key=lambda i: ties[i])
    present = [tuple(float(v) for v in points[i]) for i in complete]  # type: ignore[union-attr]
    order: list[int] = []
    for front in nondominated_fronts(present):
        crowding = crowding_distances(present, front)
        order += [complete[i] for i in sorted(front, key=lambda i: (-crowding[i], ties[complete[i]]))]
    return order + missing


@dataclass
class RungState:
    """Each level's results in ledger order, who was promoted from each level and every candidate drawn."""

    results: list[list[LedgerEntry]]
    promoted: list[set[str]]
    drawn: set[Choices] = field(default_factory=set)


class MOASHA(Agent):
    """Asynchronous multi-objective successive halving (see the module docstring).

    ``objectives``: names from :data:`OBJECTIVES` (or ``speedup@BxS``), all maximised; default validation accuracy
    and the measured speed-up at 1 x 64. :attr:`rounds` lists this session's batches as (candidate hash, level)
    jobs.
    """

    name = "mo-asha"

    def __init__(
        self,
        min_steps: int = DEFAULT_MIN_STEPS,
        max_steps: int | None = None,
        eta: int | float = DEFAULT_ETA,
        objectives: Sequence[str] = DEFAULT_OBJECTIVES,
    ) -> None:
        self.min_steps, self.max_steps = check_steps(min_steps, max_steps)
        self.eta = check_eta(eta)
        if isinstance(objectives, str) or not objectives or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives={objectives!r} must be a non-empty list of distinct names")
        self.objectives = [str(name) for name in objectives]
        self._objectives = [objective(name) for name in self.objectives]
        self.rounds: list[list[tuple[str, int]]] = []

    def options(self) -> dict[str, Any]:
        return {
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
            "eta": self.eta,
            "objectives": self.objectives,
        }

    def point(self, result: EvalResult) -> tuple[float, ...] | None:
        """The objective vector of ``result``, or None when one is missing (e.g. a failed run)."""
        if result.status != "ok":
            return None
        values = [read(result) for read in self._objectives]
        if any(value is None or math.isnan(value) for value in values):
            return None
        return tuple(float(value) for value in values)  # type: ignore[arg-type]

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        rungs = Rungs(budgeted, space, self.min_steps, self.max_steps, self.eta)
        path = run_dir / STATE_FILE
        rng = np.random.default_rng(seed)
        rounds = evaluations = 0
        state = load_state(path, STATE_VERSION, budgeted, ("rounds",))
        if state is not None:
            rng.bit_generator.state = state["rng"]
            rounds, evaluations = int(state["rounds"]), int(state["evaluations"])
        rung_state = rebuild(budgeted.history[:evaluations], rungs, space)
        total = space.num_valid()
        while budgeted.remaining > 0:
            jobs: list[tuple[Candidate, int]] = []
            while len(jobs) < budgeted.parallelism:
                job = self.next_job(rung_state, rungs, space, rng, total)
                if job is None:
                    break
                jobs.append(job)
            if not jobs:
                return
            self.rounds.append([(candidate.content_hash(), level) for candidate, level in jobs])
            if not request(budgeted, [(candidate, rungs.steps(candidate, level)) for candidate, level in jobs]):
                return
            for candidate, level in jobs:
                rung_state.results[level].append(entry_at(budgeted, candidate, rungs.steps(candidate, level)))
            for level in range(rungs.levels):
                rung_state.results[level].sort(key=lambda entry: entry.index)
            rounds += 1
            save_state(path, STATE_VERSION, budgeted, rng, rounds=rounds)

    def next_job(
        self, state: RungState, rungs: Rungs, space: SearchSpace, rng: np.random.Generator, total: int
    ) -> tuple[Candidate, int] | None:
        """ASHA's next job ``(candidate, level)``, recorded in ``state`` as promoted or drawn; None if none is left."""
        for level in range(rungs.levels - 2, -1, -1):
            candidate = self.promotable(state, rungs, level)
            if candidate is not None:
                state.promoted[level].add(candidate.content_hash())
                return candidate, level + 1
        while len(state.drawn) < total:
            choices = space.sample(rng)
            if choices not in state.drawn:
                state.drawn.add(choices)
                return space.decode(choices), 0
        return None

    def promotable(self, state: RungState, rungs: Rungs, level: int) -> Candidate | None:
        """The best candidate of ``level``'s top ``floor(n / eta)`` not yet promoted from it, if any."""
        entries = state.results[level]
        keep = floor_share(len(entries), self.eta)
        if not keep:
            return None
        order = promotion_order([self.point(entry.result) for entry in entries], [entry.index for entry in entries])
        for position in order[:keep]:
            candidate = entries[position].candidate
            if candidate.content_hash() not in state.promoted[level] and rungs.last_level(candidate) > level:
                return candidate
        return None


def rebuild(history: Sequence[LedgerEntry], rungs: Rungs, space: SearchSpace) -> RungState:
    """The rung state that the ledger entries ``history`` record (see the module docstring)."""
    state = RungState([[] for _ in range(rungs.levels)], [set() for _ in range(rungs.levels)])
    for entry in history:
        match = _RUNG.fullmatch(entry.fidelity)
        if match is None:
            continue
        level = rungs.level_of(entry.candidate, int(match.group(1)))
        if level is None:
            raise ValueError(
                f"ledger entry {entry.index} ({entry.candidate.content_hash()} at {entry.fidelity}) is on no rung of "
                f"this run's ladder {rungs.ladder}; use a new run directory for other rungs"
            )
        state.results[level].append(entry)
        if level:
            state.promoted[level - 1].add(entry.candidate.content_hash())
        else:
            state.drawn.add(space.encode(entry.candidate))
    return state
