"""Hyperband (Li, Jamieson, DeSalvo, Rostamizadeh & Talwalkar, "Hyperband: A Novel Bandit-Based Approach to
Hyperparameter Optimization", JMLR 2018) over learning-curve rungs.

With ``s_max = levels - 1`` (the rung ladder of :class:`~distilsearch.search.agents.multifidelity.Rungs`: ``min_steps``
times powers of ``eta`` up to ``max_steps``, by default the candidates' own full budget), bracket ``s`` draws
``n = ceil((s_max + 1) / (s + 1) * eta**s)`` candidates new to the run, evaluates them at level ``s_max - s`` (the
paper's ``r = R * eta**-s``) and runs successive halving from there to the top rung, keeping ``floor(n * eta**-i)``
at its ``i``-th rung. Brackets go ``s = s_max, s_max - 1, ..., 0`` and then start over, one bracket at a time,
until the budget cannot pay for the next request or every valid candidate was drawn. Sampling, promotion (the
ledger's reward, ties to the earlier entry), batching, the budget rule and exact resume are those of
:mod:`distilsearch.search.agents.successive_halving`; all randomness comes from ``numpy.random.default_rng(seed)``.

Why not Ray Tune: its ``HyperBandScheduler`` drives trials that report into a running ``Tuner``, whose experiment
state is pickled (a run folder here must resume from JSON, never by unpickling), and it neither sees the run's
shared ledger nor charges its step budget, which every agent spends by the same rule. The bracket schedule over the
ledger is short, reproducible, free on repeats and resumes exactly.
"""

from __future__ import annotations

import math

from distilsearch.search import run_layout
from distilsearch.search.agents.multifidelity import EPSILON
from distilsearch.search.agents.successive_halving import BracketAgent


def hyperband_brackets(levels: int, eta: float) -> list[tuple[int, int]]:
    """``(candidates, first level)`` of the brackets ``s = s_max .. 0`` of one Hyperband round (``s_max = levels -
    1``), e.g. ``[(27, 0), (12, 1), (6, 2), (4, 3)]`` for 4 levels and ``eta = 3``."""
    s_max = levels - 1
    return [(math.ceil((s_max + 1) / (s + 1) * eta**s - EPSILON), s_max - s) for s in range(s_max, -1, -1)]


class Hyperband(BracketAgent):
    """Hyperband's brackets, cycled in order (see the module docstring)."""

    name = "hyperband"
    state_file = run_layout.AGENT_STATES["hyperband"]

    def bracket(self, index: int, levels: int) -> tuple[int, int]:
        schedule = hyperband_brackets(levels, self.eta)
        return schedule[index % len(schedule)]
