"""What the multi-fidelity agents share: the rung ladder, requests at a rung and their checkpoints.

A *rung* is a :func:`~distilsearch.envs.fidelity.rung` level: the first ``steps`` training steps of a candidate's own
schedule (a point of its learning curve). A higher rung retrains from scratch, deterministically, so a promotion is
simply a request for the candidate at a higher rung; the run's ledger (:mod:`search.budget`) keys entries by (candidate,
fidelity name ``rung-<steps>``), charges each new one and answers repeats for free.

:class:`Rungs` numbers the levels ``0 .. levels - 1`` of a run. The ladder is
:func:`~distilsearch.envs.fidelity.rung_ladder` ``(min_steps, top, eta)``, where ``top`` is ``max_steps`` when given,
else the full budget (``steps(candidate, "full")``) of a reference candidate, the space's draw from
``numpy.random.default_rng(0)`` (in the default space every candidate has the same full budget: ``max_steps`` is a
fixed KD setting). A candidate's own steps at level ``k`` are the ladder's, capped by its own top (its full budget,
or ``max_steps``), and its last level always trains its own top: a candidate whose budget is smaller than the
reference reaches its top early (its :meth:`Rungs.last_level`) and is not promoted past it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from distilsearch.envs.fidelity import rung, rung_ladder
from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.search.agents.base import check_int
from distilsearch.search.budget import BudgetedEvaluator, LedgerEntry

DEFAULT_MIN_STEPS = 100
DEFAULT_ETA = 3
FULL = "full"
EPSILON = 1e-9


def check_eta(eta: Any) -> int | float:
    """``eta`` when it is a finite number above 1 (not a bool); ``ValueError`` otherwise."""
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta) or eta <= 1:
        raise ValueError(f"eta={eta!r} must be a finite number above 1")
    return eta


def check_steps(min_steps: Any, max_steps: Any) -> tuple[int, int | None]:
    """``(min_steps, max_steps)`` when both are positive ints (``max_steps`` may be None) in order."""
    check_int("min_steps", min_steps)
    if max_steps is not None:
        check_int("max_steps", max_steps)
        if max_steps < min_steps:
            raise ValueError(f"max_steps={max_steps} must be at least min_steps={min_steps}")
    return min_steps, max_steps


def floor_share(count: int, eta: float, power: int = 1) -> int:
    """``floor(count / eta**power)``, exact for the float round-off of integer ratios (27 / 3**3 is 1, not 0)."""
    return math.floor(count / eta**power + EPSILON)


class Rungs:
    """The rung levels of a run (see the module docstring); per-candidate values are cached by content hash."""

    def __init__(
        self, budgeted: BudgetedEvaluator, space: SearchSpace, min_steps: int, max_steps: int | None, eta: float
    ) -> None:
        self.budgeted = budgeted
        self.max_steps = max_steps
        if max_steps is None:
            reference = space.decode(space.sample(np.random.default_rng(0)))
            top = budgeted.steps(reference, FULL)
            if top < min_steps:
                raise ValueError(
                    f"min_steps={min_steps} exceeds the full budget of the space's candidates ({top} steps, e.g. "
                    f"{reference.summary()}); lower min_steps or give max_steps"
                )
        else:
            top = max_steps
        self.ladder: list[int] = rung_ladder(min_steps, top, eta)
        self._tops: dict[str, int] = {}

    @property
    def levels(self) -> int:
        """How many levels the ladder has."""
        return len(self.ladder)

    def top(self, candidate: Candidate) -> int:
        """The steps of ``candidate``'s last level: ``max_steps`` when given, else its own full budget."""
        if self.max_steps is not None:
            return self.max_steps
        key = candidate.content_hash()
        if key not in self._tops:
            self._tops[key] = self.budgeted.steps(candidate, FULL)
        return self._tops[key]

    def steps(self, candidate: Candidate, level: int) -> int:
        """Training steps of ``candidate`` at ``level``."""
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} is not in 0..{self.levels - 1}")
        top = self.top(candidate)
        return top if level == self.levels - 1 else min(self.ladder[level], top)

    def last_level(self, candidate: Candidate) -> int:
        """The first level at which ``candidate`` trains its own top (levels above it would repeat it)."""
        top = self.top(candidate)
        return next(level for level in range(self.levels) if self.steps(candidate, level) == top)

    def level_of(self, candidate: Candidate, steps: int) -> int | None:
        """The level at which ``candidate`` trains ``steps`` steps, or None when none does."""
        for level in range(self.last_level(candidate) + 1):
            if self.steps(candidate, level) == steps:
                return level
        return None


def request(budgeted: BudgetedEvaluator, jobs: Sequence[tuple[Candidate, int]]) -> bool:
    """Evaluate each ``(candidate, steps)`` job at :func:`~distilsearch.envs.fidelity.rung` ``(steps)`` in one batch
    (jobs on several rungs run side by side, see
    :meth:`~distilsearch.search.budget.BudgetedEvaluator.evaluate_requests`); False when the budget could not pay for
    all of them.

    The longest prefix the budget affords is evaluated
    (:meth:`~distilsearch.search.budget.BudgetedEvaluator.affordable_requests`); at a shortfall the caller stops.
    Recorded jobs are free.
    """
    requests = [(candidate, rung(steps)) for candidate, steps in jobs]
    affordable = budgeted.affordable_requests(requests)
    if affordable:
        budgeted.evaluate_requests(requests[:affordable])
    return affordable == len(requests)


def entry_at(budgeted: BudgetedEvaluator, candidate: Candidate, steps: int) -> LedgerEntry:
    """The ledger entry of ``candidate`` at ``rung(steps)``; ``ValueError`` when it is not recorded."""
    entry = budgeted.lookup(candidate, rung(steps))
    if entry is None:
        raise ValueError(
            f"candidate {candidate.content_hash()} at rung-{steps} is not in the run's ledger; resume with the "
            "BudgetedEvaluator's history_path in the same run directory"
        )
    return entry
