"""A vector reward for multi-objective agents, following MO-Gymnasium's convention (a float32 vector per step and a
``reward_space`` Box that holds every value, penalty included).

:class:`VectorReward` maps an :class:`~distilsearch.kdlib.students.candidate.EvalResult` to
``(validation accuracy, mean OOD-dev accuracy, ln speed-up at point)``, all to be maximised (:data:`VECTOR_OBJECTIVES`):

* the accuracies are clipped to [0, 1];
* ``ln speed-up`` (teacher latency / student latency, measured at ``(batch, seq_len) = point``) to
  ``[-max_log_speedup, max_log_speedup]`` (default ``ln 100``).

A failed or invalid result earns the penalty vector ``(-1, -1, -max_log_speedup - 1)``: one below each objective's
lowest value, so on every objective any successful candidate beats any broken one. Like the scalar rewards of
:mod:`envs.rewards`, it reads only validation and OOD-dev metrics; a successful result without them (or without
latency at ``point``) is a setup error and raises ``ValueError`` naming the metric and the candidate.

:class:`LinearReward` (MO-Gymnasium's wrapper of that name) scalarises such an environment for single-objective
learners.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from distilsearch.envs.rewards import DEFAULT_POINT, Point
from distilsearch.kdlib.students.candidate import EvalResult

VECTOR_OBJECTIVES = ("validation_accuracy", "mean_ood_dev_accuracy", "log_speedup")


class VectorReward:
    """``(validation accuracy, mean OOD-dev accuracy, ln speed-up at point)`` as float32; ``space`` bounds it."""

    def __init__(self, point: Point = DEFAULT_POINT, max_log_speedup: float = math.log(100.0)) -> None:
        if len(point) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in point):
            raise ValueError(f"point={point!r} must be a (batch, seq_len) pair of positive ints")
        if not math.isfinite(max_log_speedup) or max_log_speedup <= 0:
            raise ValueError(f"max_log_speedup={max_log_speedup!r} must be a positive finite number")
        self.point: Point = (point[0], point[1])
        self.max_log_speedup = float(max_log_speedup)
        self.high = np.array([1.0, 1.0, self.max_log_speedup], dtype=np.float32)
        self.low = np.array([0.0, 0.0, -self.max_log_speedup], dtype=np.float32)
        self.space = spaces.Box(self.low - 1.0, self.high, dtype=np.float32)

    @property
    def penalty(self) -> np.ndarray:
        """The vector a failed or invalid result earns (a fresh copy)."""
        return self.low - 1.0

    def __call__(self, result: EvalResult) -> np.ndarray:
        if result.status != "ok":
            return self.penalty
        speedup = self._need(result, f"the speedup at {self.point}", result.speedup(*self.point))
        log_speedup = math.log(speedup) if speedup > 0 else -self.max_log_speedup
        values = (
            self._need(result, "validation_accuracy", result.validation_accuracy),
            self._need(result, "mean_ood_dev_accuracy", result.mean_ood_dev_accuracy),
            log_speedup,
        )
        return np.clip(np.array(values, dtype=np.float32), self.low, self.high)

    @staticmethod
    def _need(result: EvalResult, metric: str, value: float | None) -> float:
        if value is None:
            raise ValueError(
                f"VectorReward needs {metric}, which the result for candidate {result.candidate.content_hash()} lacks"
            )
        return value


class LinearReward(gym.Wrapper):
    """MO-Gymnasium's ``LinearReward``: the weighted sum ``weight . reward`` of a vector-reward environment as a Python
    float (what single-objective learners such as Stable-Baselines3 need), the vector kept in
    ``info["vector_reward"]``. ``weight`` defaults to all ones."""

    def __init__(self, env: gym.Env, weight: Sequence[float] | np.ndarray | None = None) -> None:
        super().__init__(env)
        shape = env.unwrapped.reward_space.shape
        self.weight = np.ones(shape, dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
        if self.weight.shape != shape or not np.all(np.isfinite(self.weight)):
            raise ValueError(f"weight={weight!r} must be {shape[0]} finite numbers (one per objective)")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        info["vector_reward"] = reward
        return observation, float(np.dot(self.weight, reward)), terminated, truncated, info
