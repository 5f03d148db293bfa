"""Search agents behind one interface (:class:`~distilsearch.search.agents.base.Agent`) and a registry of them by name.

Built in: ``random`` (:class:`~distilsearch.search.agents.random_search.RandomSearch`), ``evolution``
(:class:`~distilsearch.search.agents.evolution.RegularizedEvolution`), ``ppo`` and ``maskable-ppo``
(:mod:`search.agents.rl`, imported on first use: it loads torch and stable-baselines3), and the multi-fidelity
agents ``successive-halving`` (:class:`~distilsearch.search.agents.successive_halving.SuccessiveHalving`), ``hyperband``
(:class:`~distilsearch.search.agents.hyperband.Hyperband`) and ``mo-asha``
(:class:`~distilsearch.search.agents.mo_asha.MOASHA`), which climb learning-curve rungs. Other agents join with
:func:`register_agent`.
"""

from typing import Any

from distilsearch.search.agents.base import AGENTS, Agent, make_agent, register_agent
from distilsearch.search.agents.evolution import RegularizedEvolution
from distilsearch.search.agents.hyperband import Hyperband
from distilsearch.search.agents.mo_asha import MOASHA
from distilsearch.search.agents.random_search import RandomSearch
from distilsearch.search.agents.successive_halving import SuccessiveHalving


def _ppo(**options: Any) -> Agent:
    from distilsearch.search.agents.rl import PPOAgent

    return PPOAgent(**options)


def _maskable_ppo(**options: Any) -> Agent:
    from distilsearch.search.agents.rl import MaskablePPOAgent

    return MaskablePPOAgent(**options)


register_agent(RandomSearch.name, RandomSearch)
register_agent(RegularizedEvolution.name, RegularizedEvolution)
register_agent("ppo", _ppo)
register_agent("maskable-ppo", _maskable_ppo)
register_agent(SuccessiveHalving.name, SuccessiveHalving)
register_agent(Hyperband.name, Hyperband)
register_agent(MOASHA.name, MOASHA)

__all__ = [
    "AGENTS",
    "MOASHA",
    "Agent",
    "Hyperband",
    "RandomSearch",
    "RegularizedEvolution",
    "SuccessiveHalving",
    "make_agent",
    "register_agent",
]
