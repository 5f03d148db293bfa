"""The settings of a search run: validated, saved in the run folder, and compared on resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distilsearch.envs.fidelity import FIDELITIES
from distilsearch.envs.limits import Limits
from distilsearch.envs.rewards import REWARDS
from distilsearch.kdlib.core.atomic import write_text_atomic
from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.search.agents import AGENTS

CONFIG_FILE = "config.yaml"
RESUMABLE_CHANGES = frozenset({"budget", "out", "workers", "ray_address"})


class SearchConfig(BaseModel):
    """Everything `distilsearch search` needs; a YAML file with these keys works as ``--config``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = "rt-polarity"
    agent: str = "evolution"
    budget: int = Field(8, ge=1)
    budget_unit: Literal["evaluations", "steps"] = "evaluations"
    backend: Literal["live", "table", "surrogate"] = "live"
    fidelity: str = "low"
    reward: str = "weighted"
    reward_options: dict[str, Any] = Field(default_factory=dict)
    agent_options: dict[str, Any] = Field(default_factory=dict)
    workers: int = Field(1, ge=1)
    ray_address: str | None = None
    gpus_per_eval: float = Field(0.0, ge=0)
    seed: int = 0
    table: Path | None = None
    space: Path | None = None
    base: Path | None = None
    max_length: int = Field(64, ge=8)
    min_speedup: float | None = None
    max_params: int | None = None
    max_size_mb: float | None = None
    out: Path | None = None

    @model_validator(mode="after")
    def _known_names(self) -> SearchConfig:
        for field, registry in (("task", TASKS), ("agent", AGENTS), ("fidelity", FIDELITIES), ("reward", REWARDS)):
            value = getattr(self, field)
            if value not in registry:
                raise ValueError(f"unknown {field} {value!r}; known: {', '.join(sorted(registry))}")
        self.limits()
        return self

    def limits(self) -> Limits:
        """The deployment limits given (``min_speedup``, ``max_params``, ``max_size_mb``); validated."""
        return Limits(self.min_speedup, self.max_params, self.max_size_mb)

    def run_dir(self) -> Path:
        """``out``, or ``results/runs/<task>-<agent>-<backend>-seed<seed>``."""
        return self.out or Path("results") / "runs" / f"{self.task}-{self.agent}-{self.backend}-seed{self.seed}"

    def differences(self, other: SearchConfig) -> list[str]:
        """Fields (other than those a resume may change) whose values differ, as ``name: old -> new``."""
        mine, theirs = self.model_dump(mode="json"), other.model_dump(mode="json")
        return [
            f"{name}: {mine[name]!r} -> {theirs[name]!r}"
            for name in mine
            if name not in RESUMABLE_CHANGES and mine[name] != theirs[name]
        ]

    def save(self, run_dir: Path) -> None:
        """Write ``config.yaml`` into the run folder atomically (a crash leaves the old file or the new one)."""
        write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        """Read a YAML config (a run folder's ``config.yaml`` or a user's ``--config`` file).

        Raises ValueError naming ``path`` for unreadable YAML, a file that is not a mapping, or invalid settings.
        """
        try:
            with path.open(encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of search settings, got {type(data).__name__}")
        try:
            return cls(**{str(name): value for name, value in data.items()})
        except ValidationError as error:
            raise ValueError(f"{path}: {error}") from None
