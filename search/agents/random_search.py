"""Random search: the baseline every other agent must beat.

Candidates are drawn with :meth:`~distilsearch.envs.space.SearchSpace.sample` (each decision uniform among the choices
that keep a valid candidate reachable) from ``numpy.random.default_rng(seed)``; a draw already evaluated in this run is
skipped without calling the evaluator. The run ends when the budget cannot pay for the next draw (with a step budget, a
candidate may cost more than what is left) or every valid candidate was evaluated.

Parallel evaluations: draws are sent in batches holding as many candidates new to the run as the evaluator runs at
once (:attr:`~distilsearch.search.budget.BudgetedEvaluator.parallelism`, e.g. the Ray workers). Batching changes when
candidates are evaluated, not which: the run's history is the same for any number of workers.

Resume: replay. The draws are a pure function of the seed and the ledger answers every candidate evaluated before,
so a resumed run redraws the same sequence at no cost and continues where the previous one stopped; its history is
the one an uninterrupted run would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.search.agents.base import Agent
from distilsearch.search.budget import BudgetedEvaluator


class RandomSearch(Agent):
    """Seeded random sampling of valid candidates, each evaluated at most once."""

    name = "random"

    def options(self) -> dict[str, Any]:
        return {}

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        rng = np.random.default_rng(seed)
        total = space.num_valid()
        drawn: set[Choices] = set()
        while budgeted.remaining > 0 and len(drawn) < total:
            batch: list[Candidate] = []
            new = 0
            while new < min(budgeted.parallelism, budgeted.remaining) and len(drawn) < total:
                choices = space.sample(rng)
                if choices not in drawn:
                    drawn.add(choices)
                    batch.append(space.decode(choices))
                    new += batch[-1] not in budgeted
            affordable = budgeted.affordable(batch)
            budgeted.evaluate_many(batch[:affordable])
            if affordable < len(batch):
                return
