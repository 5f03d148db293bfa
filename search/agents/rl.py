"""Policy-gradient agents: PPO (stable-baselines3) and MaskablePPO (sb3-contrib) on the StudentSearch envs.

Environments. ``PPOAgent`` acts in :class:`~envs.student_search.StudentSearchOneShotEnv`: one ``MultiDiscrete``
action is one candidate, every index is in range, and only combinations that break a constraint are penalised
(without masks, the sequential env's ``Discrete(max choices)`` would also waste episodes on indices past a small
dimension's choices). ``MaskablePPOAgent`` acts in :class:`~envs.student_search.StudentSearchEnv`, one decision per
step under exact action masks: it never proposes an invalid candidate and each decision sees the earlier ones.

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
:attr:`~search.budget.BudgetedEvaluator.parallelism` (the Ray workers; 1 for a sequential evaluator), stepped by
:class:`~search.agents.batched_env.BatchedSearchVecEnv`, which distils the ``K`` proposed candidates of one vector
step in one batch. Each copy then takes ``ceil(candidates_per_rollout / K)`` candidates per rollout.

Stopping: a callback ends training right after the step that spends the last unit of budget, or whose candidate the
budget left cannot pay for (a step budget can stop short of zero), (SB3 then returns from
``learn`` normally, the vectorised environment never asks the :class:`~search.budget.BudgetedEvaluator` for more than
it has left, and :class:`~search.budget.BudgetExhausted` is never raised inside SB3), once every valid candidate is
evaluated, or after ``patience`` consecutive episodes that evaluated nothing new (the policy has converged onto known
or invalid candidates; repeats cost no budget, so without this rule such a policy would train forever).

Resume: checkpoint. The model is saved to ``run_dir/model.zip`` (written beside it, then renamed) after every policy
update and on exit, however ``learn`` ends; a run that finds it loads it and continues with
``learn(reset_num_timesteps=False)``, while the ledger answers candidates evaluated before for free and keeps the
budget (a resume may use another number of workers: SB3 adapts the rollout buffer to the new copies). Logs go to
``run_dir/tensorboard/session-N`` (TensorBoard: ``tensorboard --logdir run_dir/tensorboard``) and
``run_dir/logs/session-N/progress.csv`` (one folder per run or resume, as SB3's CSV writer truncates its file);
they include SB3's training statistics and ``search/evaluations``, ``search/remaining`` and ``search/best_reward``.
"""

from __future__ import annotations

import math
import os
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common import logger as sb3_logger
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from envs.space import SearchSpace
from envs.student_search import StudentSearchEnv, StudentSearchOneShotEnv
from search.agents.base import Agent, check_int
from search.agents.batched_env import BatchedSearchVecEnv
from search.budget import BudgetedEvaluator

MODEL_FILE = "model.zip"


def _check_float(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if value < low or value > high or (open_low and value == low):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name}={value!r} must lie in {interval}")
    return float(value)


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """Save ``model`` to ``path`` so that readers see the old file or the complete new one."""
    partial = path.with_name(f".{path.stem}-partial.zip")
    model.save(partial)
    with partial.open("rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, path)


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
            "n_epochs": self.n_epochs,
            "learning_rate": self.learning_rate,
            "ent_coef": self.ent_coef,
            "clip_range": self.clip_range,
            "gamma": self.gamma,
            "gae_lambda": self.gae_lambda,
            "patience": self.patience,
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

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        copies = budgeted.parallelism
        env = BatchedSearchVecEnv([self.make_env(budgeted, space) for _ in range(copies)], budgeted)
        n_steps = self.n_steps(space, copies)
        path = run_dir / MODEL_FILE
        if path.exists():
            model = self.algorithm.load(path, env=env, device="cpu")
        else:
            model = self.algorithm(
                "MlpPolicy",
                env,
                n_steps=n_steps,
                batch_size=n_steps * copies // self.minibatches,
                n_epochs=self.n_epochs,
                learning_rate=self.learning_rate,
                ent_coef=self.ent_coef,
                clip_range=self.clip_range,
                gamma=self.gamma,
                gae_lambda=self.gae_lambda,
                seed=seed,
                device="cpu",
            )
        logger = session_logger(run_dir)
        model.set_logger(logger)
        total = space.num_valid()
        callback = BudgetCallback(budgeted, lambda: save_model(model, path), self.patience, total)
        # The callback stops training within this many episodes: each run of `patience` episodes adds a candidate.
        episodes = (budgeted.remaining + 1) * (self.patience + 1)
        try:
            if budgeted.remaining > 0 and len(budgeted) < total:
                model.learn(episodes * self.steps_per_candidate(space), callback=callback, reset_num_timesteps=False)
        finally:
            save_model(model, path)
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
