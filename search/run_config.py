"""The settings of a search run: validated, saved in the run folder, and compared on resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distilsearch.kdlib.core.atomic import write_text_atomic
from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.search import run_layout

if TYPE_CHECKING:
    from distilsearch.envs.limits import Limits

CONFIG_FILE = run_layout.CONFIG
RESUMABLE_CHANGES = frozenset({"budget", "out", "workers", "ray_address"})


class SearchConfig(BaseModel):
    """Everything `distilsearch search` needs; a YAML file with these keys works as ``--config``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field("rt-polarity", description="Task name (distilsearch tasks lists them); with --data, its name.")
    data: DataSpec | None = Field(None, description="Your labelled text files (the --data flags).")
    teacher: Path | None = Field(
        None, description="Your fine-tuned teacher: a local *ForSequenceClassification folder (default: --base)."
    )
    agent: str = Field(
        "evolution",
        description="random, evolution, ppo, maskable-ppo, dnas, successive-halving, hyperband or mo-asha.",
    )
    budget: int = Field(8, ge=1, description="Budget to spend, in budget_unit.")
    budget_unit: Literal["evaluations", "steps"] = Field(
        "evaluations", description="evaluations (each new request costs 1) or steps (its training steps)."
    )
    backend: Literal["live", "table", "surrogate"] = Field(
        "live",
        description="live (distil for real), table (replay a benchmark table) or surrogate (predictions from one).",
    )
    fidelity: str = Field("low", description="Training budget per evaluation: low, medium, high, full.")
    reward: str = Field("weighted", description="weighted, mnasnet or constrained.")
    reward_options: dict[str, Any] = Field(default_factory=dict, description="The reward's settings (config file).")
    agent_options: dict[str, Any] = Field(default_factory=dict, description="The agent's settings (config file).")
    workers: int = Field(1, ge=1, description="Parallel live evaluations on Ray; agents propose this many at a time.")
    ray_address: str | None = Field(None, description="Join a Ray cluster ('auto' or ray://...).")
    gpus_per_eval: float = Field(
        0.0, ge=0, description="GPUs per evaluation, reserved on Ray (above 0, evaluations run on Ray workers)."
    )
    seed: int = Field(0, description="Seed of the agent.")
    table: Path | None = Field(
        None, description="Benchmark table of the table / surrogate backends (default: KD-Bench's shipped table)."
    )
    space: Path | None = Field(
        None, description="Search space YAML (default: a bench table's own space, else derived from the teacher)."
    )
    base: Path | None = Field(None, description="Local base model folder for the teacher (default: MiniLM).")
    max_length: int = Field(64, ge=8, description="Tokens per example.")
    min_speedup: float | None = Field(None, description="Least FLOPs speed-up over the teacher at batch 1 x 64.")
    max_params: int | None = Field(None, description="Most parameters of a student (e.g. 5e6).")
    max_size_mb: float | None = Field(None, description="Most MB (10^6 bytes) of a student's weights.")
    out: Path | None = Field(None, description="Run folder (default results/runs/<task>-<agent>-<backend>-seed<seed>).")

    @field_validator("max_params", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """Accept ``5e6`` (as written on a command line) for a parameter count."""
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() else value
        return value

    @model_validator(mode="before")
    @classmethod
    def _task_of_data(cls, values: Any) -> Any:
        """With ``data``, the task is the data's name; a different ``task`` given beside it is an error."""
        if not isinstance(values, dict) or values.get("data") is None:
            return values
        data = values["data"] if isinstance(values["data"], DataSpec) else DataSpec.model_validate(values["data"])
        given = values.get("task")
        if given is not None and given != data.task_name:
            raise ValueError(
                f"task={given!r} and the data's task name {data.task_name!r} differ; drop --task (or name the "
                "data with --data-name)"
            )
        return values | {"data": data, "task": data.task_name}

    @model_validator(mode="after")
    def _known_names(self) -> SearchConfig:
        from distilsearch.envs.fidelity import FIDELITIES
        from distilsearch.envs.rewards import REWARDS
        from distilsearch.kdlib.data.tasks import TASKS
        from distilsearch.search.agents import AGENTS

        registries = {"task": TASKS, "agent": AGENTS, "fidelity": FIDELITIES, "reward": REWARDS}
        if self.data is not None:
            del registries["task"]
        if self.teacher is not None and self.base is not None:
            raise ValueError("give either a fine-tuned teacher folder (--teacher) or a base model (--base), not both")
        for field, registry in registries.items():
            value = getattr(self, field)
            if value not in registry:
                raise ValueError(f"unknown {field} {value!r}; known: {', '.join(sorted(registry))}")
        self.limits()
        return self

    def task_source(self) -> str | DataSpec:
        """What the task is loaded from: the user's data, else the registered task name."""
        return self.task if self.data is None else self.data

    def limits(self) -> Limits:
        """The deployment limits given (``min_speedup``, ``max_params``, ``max_size_mb``); validated."""
        from distilsearch.envs.limits import Limits

        return Limits(self.min_speedup, self.max_params, self.max_size_mb)

    def table_path(self) -> Path:
        """The benchmark table of the table and surrogate backends: ``table``, else KD-Bench's shipped table."""
        from distilsearch.envs.bench_table import BENCH_TABLE

        return self.table if self.table is not None else BENCH_TABLE

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
