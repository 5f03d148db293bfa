"""A vectorised environment whose copies evaluate their candidates together, through one budgeted batch.

SB3's :class:`~stable_baselines3.common.vec_env.DummyVecEnv` steps its environments one after another, so ``K``
copies of a search environment would still distil one student at a time. :class:`BatchedSearchVecEnv` first asks
each copy which candidate its action would evaluate
(:meth:`~distilsearch.envs.student_search.StudentSearchEnv.pending_candidate`), sends the new ones to
:meth:`~distilsearch.search.budget.BudgetedEvaluator.evaluate_many` in one call (``K`` Ray workers distil them at once),
then steps every copy, each finding its result in the run's ledger at no further cost.

Budget: when the copies propose more new candidates than the budget has left, the first ones (in copy order) are
evaluated and the others' episodes end as truncated, reward 0, ``info["budget_exhausted"] = True``, without calling
the evaluator; the run's stopping callback ends training on that very step, so no policy update sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.search.budget import BudgetedEvaluator


class BatchedSearchVecEnv(DummyVecEnv):
    """``envs`` (search environments evaluating through ``budgeted``), each wrapped in a
    :class:`~stable_baselines3.common.monitor.Monitor`, stepped with their evaluations batched."""

    def __init__(self, envs: Sequence[gym.Env], budgeted: BudgetedEvaluator) -> None:
        if not envs:
            raise ValueError("BatchedSearchVecEnv needs at least one environment")
        for env in envs:
            if not hasattr(env.unwrapped, "pending_candidate"):
                raise TypeError(f"{type(env.unwrapped).__name__} has no pending_candidate(action)")
        super().__init__([lambda env=env: Monitor(env) for env in envs])
        self.budgeted = budgeted

    def _pending(self) -> list[Candidate | None]:
        return [env.unwrapped.pending_candidate(action) for env, action in zip(self.envs, self.actions, strict=True)]

    def step_wait(self) -> VecEnvStepReturn:
        """Evaluate the pending candidates in one batch (as many new ones as the budget allows), then step."""
        pending = self._pending()
        batch: list[Candidate] = []
        blocked: set[int] = set()
        new: set[str] = set()
        left = self.budgeted.remaining
        for index, candidate in enumerate(pending):
            if candidate is None:
                continue
            key = candidate.content_hash()
            if candidate not in self.budgeted and key not in new:
                price = self.budgeted.cost(candidate)
                if price > left:
                    blocked.add(index)
                    continue
                left -= price
                new.add(key)
            batch.append(candidate)
        if batch:
            self.budgeted.evaluate_many(batch)
        for index in range(self.num_envs):
            if index in blocked:
                observation, self.buf_rews[index], terminated, truncated = None, 0.0, False, True
                self.buf_infos[index] = {"budget_exhausted": True}
            else:
                observation, self.buf_rews[index], terminated, truncated, self.buf_infos[index] = self.envs[index].step(
                    self.actions[index]
                )
            self.buf_dones[index] = terminated or truncated
            self.buf_infos[index]["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[index]:
                if observation is None:
                    observation = self._last_observation(index)
                self.buf_infos[index]["terminal_observation"] = observation
                observation, self.reset_infos[index] = self.envs[index].reset()
            self._save_obs(index, observation)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), deepcopy(self.buf_infos)

    def _last_observation(self, index: int) -> np.ndarray:
        """The observation copy ``index`` returned last (its episode is cut before its final step)."""
        return np.copy(self.buf_obs[None][index])
