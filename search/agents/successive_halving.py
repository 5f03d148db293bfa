"""Synchronous successive halving (Jamieson & Talwalkar, AISTATS 2016; the inner loop of Li et al.'s Hyperband,
JMLR 2018) over learning-curve rungs.

A bracket draws ``bracket_size`` candidates new to the run with :meth:`~distilsearch.envs.space.SearchSpace.sample` from
``numpy.random.default_rng(seed)``, evaluates them all at its first rung and promotes the top
``floor(n / eta**i)`` (at least one) of the ``n`` it started with to its ``i``-th rung, up to the top rung. Rungs are
the levels of :class:`~distilsearch.search.agents.multifidelity.Rungs`: step counts from
:func:`~distilsearch.envs.fidelity.rung_ladder` ``(min_steps, max_steps, eta)``, where ``max_steps`` defaults to the
candidates' own full budget. Each rung is one request
:meth:`~distilsearch.search.budget.BudgetedEvaluator.evaluate_many` ``(survivors, fidelity=rung(steps))`` (the evaluator
runs it on its workers; one request per step count when the candidates' budgets differ), the survivors best first.
Promotion ranks by the ledger's ``reward`` (computed from the blinded, validation-only result), ties going to the
earlier ledger entry. A higher rung retrains from scratch (the run at ``r`` steps is the first ``r`` steps of the
candidate's own schedule), so a promotion is just a request at the higher fidelity; both rungs are charged. Brackets
repeat with fresh draws until the budget cannot pay for the next request
(:meth:`~distilsearch.search.budget.BudgetedEvaluator.affordable`: what it can pay for is evaluated, then the run stops)
or every valid candidate was drawn. :class:`~distilsearch.search.agents.hyperband.Hyperband` runs the same brackets with
Hyperband's sizes and first rungs.

Why not Ray Tune: its ``HyperBandScheduler`` and ``ASHAScheduler`` drive trials that report into a running
``Tuner``, whose experiment state is pickled (a run folder here must resume from JSON, never by unpickling), and they
neither see the run's shared ledger nor charge its step budget, which every agent spends by the same rule. Brackets
over the ledger are short, reproducible, free on repeats and resume exactly.

Resume: checkpoint plus replay. After every completed bracket ``run_dir/<name>.json`` records the bracket count, the
candidates drawn so far (choice vectors), the size of the ledger and the generator's state (JSON). A resumed run
restores them and replays the unfinished bracket from its start: its draws are the same and every request the
ledger already holds is answered for free, so the run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.search import run_layout
from distilsearch.search.agents.base import Agent, check_int
from distilsearch.search.agents.checkpoint import load_state, save_state
from distilsearch.search.agents.multifidelity import (
    DEFAULT_ETA,
    DEFAULT_MIN_STEPS,
    EPSILON,
    Rungs,
    check_eta,
    check_steps,
    entry_at,
    floor_share,
    request,
)
from distilsearch.search.budget import BudgetedEvaluator

STATE_VERSION = 1


class BracketAgent(Agent):
    """Successive-halving brackets over the run's rungs; subclasses choose each bracket's size and first level."""

    state_file: ClassVar[str]

    def __init__(
        self, min_steps: int = DEFAULT_MIN_STEPS, max_steps: int | None = None, eta: int | float = DEFAULT_ETA
    ) -> None:
        self.min_steps, self.max_steps = check_steps(min_steps, max_steps)
        self.eta = check_eta(eta)

    def options(self) -> dict[str, Any]:
        return {"min_steps": self.min_steps, "max_steps": self.max_steps, "eta": self.eta}

    @abstractmethod
    def bracket(self, index: int, levels: int) -> tuple[int, int]:
        """``(candidates, first level)`` of the run's ``index``-th bracket (from 0) on a ladder of ``levels``."""

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        rungs = Rungs(budgeted, space, self.min_steps, self.max_steps, self.eta)
        path = run_dir / self.state_file
        rng = np.random.default_rng(seed)
        brackets = 0
        drawn: set[Choices] = set()
        state = load_state(path, STATE_VERSION, budgeted, ("brackets", "drawn"))
        if state is not None:
            rng.bit_generator.state = state["rng"]
            brackets = int(state["brackets"])
            drawn = {tuple(int(c) for c in choices) for choices in state["drawn"]}
        total = space.num_valid()
        while budgeted.remaining > 0 and len(drawn) < total:
            size, first = self.bracket(brackets, rungs.levels)
            candidates: list[Candidate] = []
            while len(candidates) < size and len(drawn) < total:
                choices = space.sample(rng)
                if choices not in drawn:
                    drawn.add(choices)
                    candidates.append(space.decode(choices))
            if not self.halve(budgeted, rungs, candidates, first):
                return
            brackets += 1
            save_state(
                path, STATE_VERSION, budgeted, rng, brackets=brackets, drawn=sorted(list(choices) for choices in drawn)
            )

    def halve(self, budgeted: BudgetedEvaluator, rungs: Rungs, candidates: list[Candidate], first: int) -> bool:
        """Run one bracket from level ``first``; False when the budget could not pay for a request."""
        survivors = candidates
        ranked: list[Candidate] = []
        for i, level in enumerate(range(first, rungs.levels)):
            if i:
                survivors = ranked[: max(1, floor_share(len(candidates), self.eta, i))]
            if not request(budgeted, [(candidate, rungs.steps(candidate, level)) for candidate in survivors]):
                return False
            entries = {
                candidate: entry_at(budgeted, candidate, rungs.steps(candidate, level)) for candidate in survivors
            }
            ranked = sorted(survivors, key=lambda candidate: (-entries[candidate].reward, entries[candidate].index))
        return True


class SuccessiveHalving(BracketAgent):
    """Synchronous successive halving, one bracket after another (see the module docstring).

    ``bracket_size`` defaults to ``eta ** (levels - 1)`` (rounded up), so that one candidate reaches the top rung.
    """

    name = "successive-halving"
    state_file = run_layout.AGENT_STATES["successive-halving"]

    def __init__(
        self,
        bracket_size: int | None = None,
        min_steps: int = DEFAULT_MIN_STEPS,
        max_steps: int | None = None,
        eta: int | float = DEFAULT_ETA,
    ) -> None:
        super().__init__(min_steps, max_steps, eta)
        self.bracket_size = None if bracket_size is None else check_int("bracket_size", bracket_size)

    def options(self) -> dict[str, Any]:
        return {"bracket_size": self.bracket_size, **super().options()}

    def bracket(self, index: int, levels: int) -> tuple[int, int]:
        if self.bracket_size is not None:
            return self.bracket_size, 0
        return math.ceil(self.eta ** (levels - 1) - EPSILON), 0
