"""Regularized (aging) evolution, after Real et al., "Regularized Evolution for Image Classifier Architecture
Search" (AAAI 2019).

The population is a queue of ``population_size`` choice vectors, first filled with :meth:`SearchSpace.sample`
draws. Each later cycle samples ``sample_size`` members uniformly with replacement, takes the one with the highest
reward as parent, adds the parent mutated in one dimension (:func:`mutate`) at the young end of the queue and removes
the oldest member, whatever its reward. All randomness comes from ``numpy.random.default_rng(seed)``.

One addition for cached evaluations: a child already evaluated in this run joins the population with its recorded
reward at no budget cost (the rule of :mod:`search.budget`), so a converged population could cycle without spending
the budget; after ``patience`` consecutive such children, children are fresh :meth:`SearchSpace.sample` draws until
a new candidate appears. The run ends when the budget is spent or every valid candidate was evaluated.

Parallel evaluations: a cycle makes as many children as the evaluator runs at once
(:attr:`~distilsearch.search.budget.BudgetedEvaluator.parallelism`, e.g. the Ray workers), each from its own tournament
over the population as it stood at the start of the cycle, evaluates them in one batch, then adds them (and ages out as
many members) in order -- the synchronous, batched form of the asynchronous workers of Real et al., chosen because a
batch is reproducible and resumes exactly; the cost is that a batch waits for its slowest student. When the budget
left cannot pay for a whole cycle, the children it can pay for are evaluated and the run ends without a checkpoint of
that cycle, so a resumed run with a larger budget replays it (its first children free) exactly as an uninterrupted
run would. With one worker it is the algorithm above.

Resume: checkpoint. After every cycle ``run_dir/evolution.json`` records the population, the cycle and stale counts,
the size of the ledger and the generator's state (JSON); the history is the run's ledger (``evaluations.jsonl``,
see :mod:`search.budget`), which also supplies the members' rewards. A resumed run restores the generator and the
population and continues exactly as an uninterrupted one would; if it stopped between recording an evaluation and
writing the checkpoint, the repeated cycle finds its child in the ledger and spends nothing.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.search import run_layout
from distilsearch.search.agents.base import Agent, check_int
from distilsearch.search.agents.checkpoint import load_state, save_state
from distilsearch.search.budget import BudgetedEvaluator, LedgerEntry

STATE_FILE = run_layout.AGENT_STATES["evolution"]
STATE_VERSION = 1


def mutate(space: SearchSpace, parent: Choices, rng: np.random.Generator) -> Choices:
    """``parent`` with one dimension changed to another choice that keeps it valid.

    The dimension is uniform among those that have such a choice, the new choice uniform among them; a candidate no
    single change keeps valid is returned unchanged.
    """
    mutable = []
    for d, current in enumerate(parent):
        partial: list[int | None] = list(parent)
        partial[d] = None
        allowed = space.validity_mask(partial)[d].copy()
        allowed[current] = False
        if allowed.any():
            mutable.append((d, np.flatnonzero(allowed)))
    if not mutable:
        return tuple(parent)
    d, alternatives = mutable[int(rng.integers(len(mutable)))]
    child = list(parent)
    child[d] = int(rng.choice(alternatives))
    return tuple(child)


def _entry(budgeted: BudgetedEvaluator, space: SearchSpace, member: Choices) -> LedgerEntry:
    entry = budgeted.lookup(space.decode(member))
    if entry is None:
        raise ValueError(
            f"population member {member} is not in the run's ledger; resume with the BudgetedEvaluator's "
            "history_path in the same run directory"
        )
    return entry


class RegularizedEvolution(Agent):
    """Aging evolution with tournament selection and single-dimension mutation (see the module docstring).

    The defaults suit budgets of a few hundred evaluations (Real et al. used 100 / 25 for 20,000).
    """

    name = "evolution"

    def __init__(self, population_size: int = 20, sample_size: int = 5, patience: int = 50) -> None:
        self.population_size = check_int("population_size", population_size, minimum=2)
        self.sample_size = check_int("sample_size", sample_size)
        self.patience = check_int("patience", patience)
        if sample_size > population_size:
            raise ValueError(f"sample_size={sample_size} must not exceed population_size={population_size}")

    def options(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "sample_size": self.sample_size, "patience": self.patience}

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        state_path = run_dir / STATE_FILE
        rng = np.random.default_rng(seed)
        population: deque[Choices] = deque()
        cycles = stale = evaluations = 0
        if state_path.exists():
            cycles, stale, evaluations = self._restore(state_path, budgeted, space, rng, population)
        total = space.num_valid()
        while budgeted.remaining > 0 and len(budgeted) < total:
            children: list[Choices] = []
            for _ in range(budgeted.parallelism):
                if len(population) + len(children) < self.population_size or stale >= self.patience:
                    children.append(space.sample(rng))
                else:
                    picks = rng.integers(len(population), size=self.sample_size)
                    parent = max((population[int(i)] for i in picks), key=lambda m: _entry(budgeted, space, m).reward)
                    children.append(mutate(space, parent, rng))
            candidates = [space.decode(child) for child in children]
            affordable = budgeted.affordable(candidates)
            budgeted.evaluate_many(candidates[:affordable])
            if affordable < len(candidates):
                break
            for child in children:
                # New means evaluated after the last checkpoint (after a crash, the ledger may be ahead of it).
                stale = 0 if _entry(budgeted, space, child).index >= evaluations else stale + 1
                population.append(child)
                if len(population) > self.population_size:
                    population.popleft()
            evaluations = len(budgeted)
            cycles += 1
            population_lists = [list(member) for member in population]
            save_state(
                state_path, STATE_VERSION, budgeted, rng, cycles=cycles, stale=stale, population=population_lists
            )

    def _restore(
        self,
        path: Path,
        budgeted: BudgetedEvaluator,
        space: SearchSpace,
        rng: np.random.Generator,
        population: deque[Choices],
    ) -> tuple[int, int, int]:
        """Load the checkpoint into ``rng`` and ``population``; return (cycles, stale, evaluations)."""
        state = load_state(path, STATE_VERSION, budgeted, ("population", "cycles", "stale"))
        rng.bit_generator.state = state["rng"]
        for member in state["population"]:
            choices = tuple(int(c) for c in member)
            _entry(budgeted, space, choices)
            population.append(choices)
        return int(state["cycles"]), int(state["stale"]), int(state["evaluations"])
