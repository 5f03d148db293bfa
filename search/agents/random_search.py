"""Random search: the baseline every other agent must beat.

Candidates are drawn with :meth:`~envs.space.SearchSpace.sample` (each decision uniform among the choices that keep a
valid candidate reachable) from ``numpy.random.default_rng(seed)``; a draw already evaluated in this run is skipped
without calling the evaluator. The run ends when the budget is spent or every valid candidate was evaluated.

Resume: replay. The draws are a pure function of the seed and the ledger answers every candidate evaluated before,
so a resumed run redraws the same sequence at no cost and continues where the previous one stopped; its history is
the one an uninterrupted run would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from envs.space import Choices, SearchSpace
from search.agents.base import Agent
from search.budget import BudgetedEvaluator


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
            choices = space.sample(rng)
            if choices not in drawn:
                drawn.add(choices)
                budgeted.evaluate(space.decode(choices))
