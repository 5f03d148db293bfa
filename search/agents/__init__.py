"""Search agents behind one interface (:class:`~search.agents.base.Agent`) and a registry of them by name.

Built in: ``random`` (:class:`~search.agents.random_search.RandomSearch`), ``evolution``
(:class:`~search.agents.evolution.RegularizedEvolution`), ``ppo`` and ``maskable-ppo``
(:mod:`search.agents.rl`, imported on first use: it loads torch and stable-baselines3). Other agents join with
:func:`register_agent`.
"""

from typing import Any

from search.agents.base import AGENTS, Agent, make_agent, register_agent
from search.agents.evolution import RegularizedEvolution
from search.agents.random_search import RandomSearch


def _ppo(**options: Any) -> Agent:
    from search.agents.rl import PPOAgent

    return PPOAgent(**options)


def _maskable_ppo(**options: Any) -> Agent:
    from search.agents.rl import MaskablePPOAgent

    return MaskablePPOAgent(**options)


register_agent(RandomSearch.name, RandomSearch)
register_agent(RegularizedEvolution.name, RegularizedEvolution)
register_agent("ppo", _ppo)
register_agent("maskable-ppo", _maskable_ppo)

__all__ = ["AGENTS", "Agent", "RandomSearch", "RegularizedEvolution", "make_agent", "register_agent"]
