"""Policy-gradient agents: PPO (stable-baselines3) and MaskablePPO (sb3-contrib) on the StudentSearch envs.

Environments. ``PPOAgent`` acts in :class:`~distilsearch.envs.student_search.StudentSearchOneShotEnv`: one
``MultiDiscrete`` action is one candidate, every index is in range, and only combinations that break a constraint are
penalised (without masks, the sequential env's ``Discrete(max choices)`` would also waste episodes on indices past a
small dimension's choices). ``MaskablePPOAgent`` acts in :class:`~distilsearch.envs.student_search.StudentSearchEnv`,
one decision per step under exact action masks: it never proposes an invalid candidate and each decision sees the
earlier ones.

Defaults, for episodes whose only reward is terminal and costs an evaluation (minutes of distillation):

* ``candidates_per_rollout=8``: a rollout is 8 candidates (8 steps one-shot, ``8 * len(space.names)``
  sequential, so rollouts hold whole episodes); the policy is updated after every 8 evaluations, not after hundreds;
* ``minibatches=2`` (``batch_size`` = half the rollout) and ``n_epochs=10``: policy updates are free next to
  evaluations, so each small rollout is reused for 20 gradient steps;
* ``gamma=1``, ``gae_lambda=1``: undiscounted Monte Carlo returns; every decision of an episode is credited with the
  final reward, and the value head is only a baseline;
* ``ent_coef=0.01``: a small entropy bonus keeps the policy from collapsing onto candidates already evaluated, which
  cost nothing new and teach nothing new; ``learning_rate=3e-4`` and ``clip_range=0.2`` are SB3's defaults.

Parallel evaluations: the policy acts in ``K`` copies of its environment, ``K`` = the evaluator's
:attr:`~distilsearch.search.budget.BudgetedEvaluator.parallelism` (the Ray workers; 1 for a sequential evaluator),
stepped by
:class:`~distilsearch.search.agents.batched_env.BatchedSearchVecEnv`, which distils the ``K`` proposed candidates of one
vector step in one batch. Each copy then takes ``ceil(candidates_per_rollout / K)`` candidates per rollout.

Stopping: a callback ends training right after the step that spends the last unit of budget, or whose candidate the
budget left cannot pay for (a step budget can stop short of zero), (SB3 then returns from
``learn`` normally, the vectorised environment never asks the :class:`~distilsearch.search.budget.BudgetedEvaluator` for
more than it has left, and :class:`~distilsearch.search.budget.BudgetExhausted` is never raised inside SB3), once every
valid candidate is evaluated, or after ``patience`` consecutive episodes that evaluated nothing new (the policy has
converged onto known or invalid candidates; repeats cost no budget, so without this rule such a policy would train
forever).

Resume: checkpoint, as data only. After every policy update and on exit, however ``learn`` ends, the policy's and
its optimizer's tensors are written to ``run_dir/policy-<hash>.safetensors`` and everything else a resume needs
(``num_timesteps``, the update and episode counters, the recent episode statistics, the settings the model was built
with, the ledger's length, the tensors file's name and SHA-256) to ``run_dir/policy.json``; each file is written
beside its place, fsynced and renamed, the JSON last, so it always names a complete tensors file. A run that finds
``policy.json`` builds a new model from the run's settings exactly as a new run does (seeded with the run's seed), loads
the tensors and counters into it and continues with ``learn(reset_num_timesteps=False)``, while the ledger answers
candidates evaluated before for free and keeps the budget (a resume may use another number of workers: the rollout
is sized for the new copies as in a new run). Nothing in the run folder is unpickled: a corrupt, truncated or foreign
state stops the run with a :class:`~distilsearch.search.agents.checkpoint.CheckpointError` naming the file, and a
``model.zip`` (the pickled stable-baselines3 checkpoint of older versions) is refused with the same error rather than
loaded, as loading it could run code stored in the folder (delete it to go on with a new policy).

Logs go to ``run_dir/tensorboard/session-N`` (TensorBoard: ``tensorboard --logdir run_dir/tensorboard``) and
``run_dir/logs/session-N/progress.csv`` (one folder per run or resume, as SB3's CSV writer truncates its file);
they include SB3's training statistics and ``search/evaluations``, ``search/remaining`` and ``search/best_reward``.
"""

from __future__ import annotations

import hashlib
import math
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common import logger as sb3_logger
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from distilsearch.envs.space import SearchSpace
from distilsearch.envs.student_search import StudentSearchEnv, StudentSearchOneShotEnv
from distilsearch.kdlib.core.atomic import write_bytes_atomic, write_json_atomic
from distilsearch.search import run_layout
from distilsearch.search.agents.base import Agent, check_int
from distilsearch.search.agents.batched_env import BatchedSearchVecEnv
from distilsearch.search.agents.checkpoint import CheckpointError
from distilsearch.search.budget import BudgetedEvaluator

STATE_FILE = run_layout.AGENT_STATES["ppo"]
LEGACY_MODEL_FILE = run_layout.PPO_LEGACY_MODEL
STATE_VERSION = 1
POLICY_PREFIX = "policy."
OPTIMIZER_PREFIX = "optimizer."


def _check_float(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if value < low or value > high or (open_low and value == low):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name}={value!r} must lie in {interval}")
    return float(value)


class PolicyState(BaseModel):
    """The contents of ``policy.json``: what a resume needs besides the tensors, and which tensors file holds them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    algorithm: str
    tensors: str = Field(pattern=r"^policy-[0-9a-f]{16}\.safetensors$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    evaluations: int = Field(ge=0)
    num_timesteps: int = Field(ge=0)
    n_updates: int = Field(ge=0)
    episode_num: int = Field(ge=0)
    episodes: list[dict[str, int | float]]
    successes: list[bool]
    built_with: dict[str, Any]


def _plain_episode(info: Mapping[str, Any]) -> dict[str, int | float]:
    return {
        str(key): int(value) if isinstance(value, int | np.integer) else float(value) for key, value in info.items()
    }


def save_policy(
    model: BaseAlgorithm, run_dir: Path, built_with: Mapping[str, Any], budgeted: BudgetedEvaluator
) -> None:
    """Checkpoint ``model`` (built with ``built_with``) into ``run_dir``: its policy's and optimizer's tensors as
    safetensors, then ``policy.json`` naming them; older tensors files are removed last."""
    tensors = {POLICY_PREFIX + name: value for name, value in model.policy.state_dict().items()}
    for index, values in model.policy.optimizer.state_dict()["state"].items():
        for name, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"optimizer state {name!r} of parameter {index} is {type(value).__name__}, not a tensor"
                )
            tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = value
    payload = save_tensors({name: value.detach().cpu().contiguous() for name, value in tensors.items()})
    digest = hashlib.sha256(payload).hexdigest()
    name = f"policy-{digest[:16]}.safetensors"
    write_bytes_atomic(run_dir / name, payload)
    state = PolicyState(
        version=STATE_VERSION,
        algorithm=type(model).__name__,
        tensors=name,
        sha256=digest,
        evaluations=len(budgeted),
        num_timesteps=model.num_timesteps,
        n_updates=model._n_updates,
        episode_num=model._episode_num,
        episodes=[_plain_episode(info) for info in model.ep_info_buffer or ()],
        successes=[bool(success) for success in model.ep_success_buffer or ()],
        built_with=dict(built_with),
    )
    write_json_atomic(run_dir / STATE_FILE, state.model_dump(mode="json"))
    for stale in run_dir.glob("policy-*.safetensors"):
        if stale.name != name:
            stale.unlink(missing_ok=True)


def _read_state(path: Path) -> PolicyState:
    try:
        return PolicyState.model_validate_json(path.read_bytes())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise CheckpointError(
            f"policy state {path} is unreadable or of another version ({where}: {first['msg']}); restore it or start "
            "a new run"
        ) from None


def _read_tensors(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"policy tensors {path}, named by {STATE_FILE}, are missing; start a new run") from None
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise CheckpointError(
            f"policy tensors {path} do not match the SHA-256 in {STATE_FILE}: the file is truncated or corrupt"
        )
    try:
        return load_tensors(payload)
    except SafetensorError as error:
        raise CheckpointError(f"policy tensors {path} are not a readable safetensors file ({error})") from None


def _optimizer_state(
    tensors: Mapping[str, torch.Tensor], parameters: list[torch.Tensor], path: Path
) -> dict[int, dict[str, torch.Tensor]]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, _, name = key.removeprefix(OPTIMIZER_PREFIX).partition(".")
        fits = index.isdigit() and int(index) < len(parameters) and name
        if not fits or (value.dim() > 0 and value.shape != parameters[int(index)].shape):
            raise CheckpointError(f"policy tensors {path}: optimizer tensor {key!r} does not fit this model")
        state.setdefault(int(index), {})[name] = value
    return state


def load_policy(model: BaseAlgorithm, run_dir: Path, budgeted: BudgetedEvaluator) -> bool:
    """Load the checkpoint of ``run_dir`` into ``model`` (a new model built with the run's settings); False when
    there is none. :class:`~distilsearch.search.agents.checkpoint.CheckpointError`, naming the file, for a ``model.zip``
    (never unpickled) and for a state that is unreadable, corrupt, of another model or ahead of the ledger."""
    legacy = run_dir / LEGACY_MODEL_FILE
    if legacy.exists():
        raise CheckpointError(
            f"{legacy} is a pickled stable-baselines3 checkpoint of an older version and is not loaded, as loading it "
            "could run code stored in the run folder; delete it to resume with a new policy (the ledger keeps every "
            "evaluation and the budget) or start a new run"
        )
    path = run_dir / STATE_FILE
    if not path.exists():
        return False
    state = _read_state(path)
    if state.algorithm != type(model).__name__:
        raise CheckpointError(f"{path} holds a {state.algorithm} policy, not a {type(model).__name__} one")
    if len(budgeted) < state.evaluations:
        raise CheckpointError(
            f"{path} was written after {state.evaluations} evaluations but the ledger holds {len(budgeted)}; "
            "resume with the BudgetedEvaluator's history_path in the same run directory"
        )
    tensors_path = run_dir / state.tensors
    tensors = _read_tensors(tensors_path, state.sha256)
    unknown = sorted(key for key in tensors if not key.startswith((POLICY_PREFIX, OPTIMIZER_PREFIX)))
    if unknown:
        raise CheckpointError(f"policy tensors {tensors_path} hold unknown tensors {unknown[:3]}")
    optimizer = model.policy.optimizer
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    moments = {key: value for key, value in tensors.items() if key.startswith(OPTIMIZER_PREFIX)}
    optimizer_state = optimizer.state_dict() | {"state": _optimizer_state(moments, parameters, tensors_path)}
    weights = {
        key.removeprefix(POLICY_PREFIX): value for key, value in tensors.items() if key.startswith(POLICY_PREFIX)
    }
    try:
        model.policy.load_state_dict(weights)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:500]
        raise CheckpointError(f"policy tensors {tensors_path} do not fit this model: {detail}") from None
    optimizer.load_state_dict(optimizer_state)
    model.num_timesteps = state.num_timesteps
    model._n_updates = state.n_updates
    model._episode_num = state.episode_num
    model.ep_info_buffer = deque(state.episodes, maxlen=model._stats_window_size)
    model.ep_success_buffer = deque(state.successes, maxlen=model._stats_window_size)
    return True


def session_logger(run_dir: Path) -> sb3_logger.Logger:
    """A CSV and TensorBoard logger writing to new ``session-N`` folders of ``run_dir/logs`` and
    ``run_dir/tensorboard``."""
    logs = run_dir / "logs"
    session = f"session-{len(list(logs.glob('session-*'))) + 1}"
    formats = [
        sb3_logger.make_output_format("csv", str(logs / session)),
        sb3_logger.make_output_format("tensorboard", str(run_dir / "tensorboard" / session)),
    ]
    return sb3_logger.Logger(folder=str(logs / session), output_formats=formats)


class BudgetCallback(BaseCallback):
    """Stops ``learn`` when the budget is spent, ``total`` candidates (every valid one) are evaluated or ``patience``
    episodes in a row evaluated nothing new; calls ``checkpoint`` at the start of every rollout (that is, after every
    policy update)."""

    def __init__(self, budgeted: BudgetedEvaluator, checkpoint: Callable[[], None], patience: int, total: int) -> None:
        super().__init__()
        self.budgeted = budgeted
        self.checkpoint = checkpoint
        self.patience = patience
        self.total = total
        self.stale = 0
        self._known = len(budgeted)

    def _on_rollout_start(self) -> None:
        self.checkpoint()

    def _on_step(self) -> bool:
        episodes = int(sum(bool(done) for done in self.locals["dones"]))
        if episodes:
            self.stale = 0 if len(self.budgeted) > self._known else self.stale + episodes
            self._known = len(self.budgeted)
            self.logger.record("search/evaluations", len(self.budgeted))
            self.logger.record("search/remaining", self.budgeted.remaining)
            if self.budgeted.best is not None:
                self.logger.record("search/best_reward", self.budgeted.best.reward)
        exhausted = any(info.get("budget_exhausted") for info in self.locals["infos"])
        return (
            self.budgeted.remaining > 0
            and not exhausted
            and len(self.budgeted) < self.total
            and self.stale < self.patience
        )


class PolicySearch(Agent):
    """What PPO and MaskablePPO share: options, model creation or loading, the stopping callback and saving."""

    algorithm: ClassVar[type[PPO] | type[MaskablePPO]]

    def __init__(
        self,
        candidates_per_rollout: int = 8,
        minibatches: int = 2,
        n_epochs: int = 10,
        learning_rate: float = 3e-4,
        ent_coef: float = 0.01,
        clip_range: float = 0.2,
        gamma: float = 1.0,
        gae_lambda: float = 1.0,
        patience: int = 100,
    ) -> None:
        self.candidates_per_rollout = check_int("candidates_per_rollout", candidates_per_rollout)
        self.minibatches = check_int("minibatches", minibatches)
        self.n_epochs = check_int("n_epochs", n_epochs)
        self.learning_rate = _check_float("learning_rate", learning_rate, 0.0, open_low=True)
        self.ent_coef = _check_float("ent_coef", ent_coef, 0.0)
        self.clip_range = _check_float("clip_range", clip_range, 0.0, open_low=True)
        self.gamma = _check_float("gamma", gamma, 0.0, 1.0, open_low=True)
        self.gae_lambda = _check_float("gae_lambda", gae_lambda, 0.0, 1.0)
        self.patience = check_int("patience", patience)

    def options(self) -> dict[str, Any]:
        return {
            "candidates_per_rollout": self.candidates_per_rollout,
            "minibatches": self.minibatches,
            **self.ppo_settings(),
            "patience": self.patience,
        }

    def ppo_settings(self) -> dict[str, Any]:
        """The PPO hyperparameters passed through to stable-baselines3 as they are."""
        return {
            "n_epochs": self.n_epochs,
            "learning_rate": self.learning_rate,
            "ent_coef": self.ent_coef,
            "clip_range": self.clip_range,
            "gamma": self.gamma,
            "gae_lambda": self.gae_lambda,
        }

    @abstractmethod
    def make_env(self, budgeted: BudgetedEvaluator, space: SearchSpace) -> gym.Env:
        """The environment the policy acts in, evaluating through ``budgeted``."""

    @abstractmethod
    def steps_per_candidate(self, space: SearchSpace) -> int:
        """Environment steps per episode (one episode proposes one candidate)."""

    def n_steps(self, space: SearchSpace, copies: int = 1) -> int:
        """Steps per environment copy and rollout on ``space`` with ``copies`` copies: the fewest whole candidates
        per copy for a rollout of at least ``candidates_per_rollout`` candidates that splits into ``minibatches``
        equal batches; ``ValueError`` unless those batches hold 2 or more steps."""
        steps = self.steps_per_candidate(space)
        per_copy = math.ceil(self.candidates_per_rollout / copies)
        while per_copy * copies * steps % self.minibatches:
            per_copy += 1
        n_steps = per_copy * steps
        rollout = n_steps * copies
        if rollout // self.minibatches < 2:
            raise ValueError(
                f"a rollout of {rollout} steps ({n_steps} steps x {copies} environments, {steps} steps per "
                f"candidate, candidates_per_rollout={self.candidates_per_rollout}) must split into "
                f"minibatches={self.minibatches} equal batches of at least 2 steps"
            )
        return n_steps

    def run(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: str | Path, seed: int = 0) -> None:
        """Check :meth:`n_steps` before anything is written to ``run_dir``, then run."""
        self.n_steps(space, budgeted.parallelism)
        super().run(budgeted, space, run_dir, seed)

    def built_with(self, space: SearchSpace, copies: int, seed: int) -> dict[str, Any]:
        """The keyword arguments of the model a run on ``space`` with ``copies`` environment copies builds."""
        n_steps = self.n_steps(space, copies)
        return {
            "n_steps": n_steps,
            "batch_size": n_steps * copies // self.minibatches,
            **self.ppo_settings(),
            "seed": seed,
        }

    def model_for(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> BaseAlgorithm:
        """A new model acting in ``budgeted.parallelism`` copies of the environment, built as a new run builds it,
        with the checkpoint of ``run_dir`` loaded into it when there is one (see :func:`load_policy`)."""
        copies = budgeted.parallelism
        env = BatchedSearchVecEnv([self.make_env(budgeted, space) for _ in range(copies)], budgeted)
        model = self.algorithm("MlpPolicy", env, device="cpu", **self.built_with(space, copies, seed))
        load_policy(model, run_dir, budgeted)
        return model

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        model = self.model_for(budgeted, space, run_dir, seed)
        built_with = self.built_with(space, budgeted.parallelism, seed)
        logger = session_logger(run_dir)
        model.set_logger(logger)
        total = space.num_valid()
        callback = BudgetCallback(
            budgeted, lambda: save_policy(model, run_dir, built_with, budgeted), self.patience, total
        )
        # The callback stops training within this many episodes: each run of `patience` episodes adds a candidate.
        episodes = (budgeted.remaining + 1) * (self.patience + 1)
        try:
            if budgeted.remaining > 0 and len(budgeted) < total:
                model.learn(episodes * self.steps_per_candidate(space), callback=callback, reset_num_timesteps=False)
        finally:
            save_policy(model, run_dir, built_with, budgeted)
            logger.dump(model.num_timesteps)
            logger.close()


class PPOAgent(PolicySearch):
    """PPO over whole candidates (the one-shot env); see the module docstring for the defaults."""

    name = "ppo"
    algorithm = PPO

    def make_env(self, budgeted: BudgetedEvaluator, space: SearchSpace) -> gym.Env:
        return StudentSearchOneShotEnv(budgeted, space, reward=budgeted.reward)

    def steps_per_candidate(self, space: SearchSpace) -> int:
        return 1


class MaskablePPOAgent(PolicySearch):
    """MaskablePPO over one decision per step (the sequential env, with action masks)."""

    name = "maskable-ppo"
    algorithm = MaskablePPO

    def make_env(self, budgeted: BudgetedEvaluator, space: SearchSpace) -> gym.Env:
        return StudentSearchEnv(budgeted, space, reward=budgeted.reward)

    def steps_per_candidate(self, space: SearchSpace) -> int:
        return len(space.names)
