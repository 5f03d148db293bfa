"""The agent interface and the agent registry.

An :class:`Agent` searches a :class:`~distilsearch.envs.space.SearchSpace` through a
:class:`~distilsearch.search.budget.BudgetedEvaluator`, which holds the reward, the budget and the run's ledger; every
agent spends the budget by the same rule (see :mod:`search.budget`). ``run_dir`` holds what the agent needs to resume,
plus ``agent.json``, the settings the run was started with: resuming with another agent, options, seed, space, reward or
evaluator is refused (the budget may change).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from distilsearch.envs.rewards import Reward
from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.core.atomic import write_json_atomic
from distilsearch.search import run_layout
from distilsearch.search.budget import IDENTITY, BudgetedEvaluator

MANIFEST_FILE = run_layout.AGENT_MANIFEST


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists; unknown objects their ``str``)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` when it is an int (not a bool) of at least ``minimum``; ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int of at least {minimum}")
    return value


def describe_reward(reward: Reward) -> dict[str, Any]:
    """A reward's name and settings as plain data."""
    return _plain({"name": reward.name, **vars(reward)})


class Agent(ABC):
    """A search strategy. Subclasses set ``name``, implement :meth:`search` and report their :meth:`options`."""

    name: ClassVar[str]

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The agent's settings as plain data (recorded in ``agent.json``)."""

    @abstractmethod
    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        """Spend ``budgeted``'s remaining budget on candidates of ``space``, resuming from ``run_dir``."""

    def run(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: str | Path, seed: int = 0) -> None:
        """Search until the budget is spent (or the agent's own stopping rule ends it, see its docstring).

        Resumes the run in ``run_dir`` when one was started there with the same settings.
        """
        check_int("seed", seed, minimum=0)
        if not isinstance(budgeted, BudgetedEvaluator):
            raise TypeError(f"budgeted must be a BudgetedEvaluator, got {type(budgeted).__name__}")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = _plain(
            {
                "agent": self.name,
                "options": self.options(),
                "seed": seed,
                "space": space.space_hash(),
                "reward": describe_reward(budgeted.reward),
                "evaluator": {name: getattr(budgeted, name) for name in IDENTITY},
            }
        )
        path = run_dir / MANIFEST_FILE
        if path.exists():
            started = json.loads(path.read_text(encoding="utf-8"))
            differences = run_layout.setting_differences(started, manifest)
            if differences:
                raise run_layout.ResumeMismatch(run_dir, differences)
        else:
            write_json_atomic(path, manifest)
        self.search(budgeted, space, run_dir, seed)


AgentFactory = Callable[..., Agent]
AGENTS: dict[str, AgentFactory] = {}


def register_agent(name: str, factory: AgentFactory) -> AgentFactory:
    """Make ``make_agent(name, **options)`` call ``factory(**options)``; a name is registered once."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"agent name {name!r} must be a non-empty string")
    if name in AGENTS and AGENTS[name] is not factory:
        raise ValueError(f"an agent named {name!r} is already registered ({AGENTS[name]!r})")
    AGENTS[name] = factory
    return factory


def make_agent(name: str, **options: Any) -> Agent:
    """Build a registered agent, e.g. ``make_agent("evolution", population_size=20)``."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; registered agents: {sorted(AGENTS)}")
    try:
        return AGENTS[name](**options)
    except TypeError as error:
        raise ValueError(f"make_agent({name!r}, ...): {error}") from None
