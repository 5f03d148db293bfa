"""Gymnasium environments whose actions choose a student and its KD recipe from a :class:`SearchSpace`.

``StudentSearchEnv`` (``distilsearch/StudentSearch-v0``) takes one decision per step, in the space's dimension order,
with a ``Discrete(max choices)`` action and ``action_masks()`` for MaskablePPO; ``StudentSearchOneShotEnv``
(``distilsearch/StudentSearchOneShot-v0``) takes every decision in one step with a ``MultiDiscrete`` action.

Observations are one flat float32 Box in [0, 1]: for the sequential env, the one-hot of every decision made so far
(``sum(space.sizes)`` entries), the one-hot of the step (``len(space.names) + 1`` entries, the last meaning "done")
and the descriptor; for the one-shot env the descriptor alone. The descriptor is the teacher's
:meth:`~distilsearch.envs.space.TeacherShape.features` followed by the caller's ``task_features`` (each in [0, 1]).

The only reward is terminal: ``reward(evaluator.evaluate(candidate))``. The terminal ``info`` holds ``choices``,
``candidate`` (JSON), ``candidate_hash``, ``invalid_reason``, ``objectives`` (see
:func:`envs.rewards.objectives`; None unless the result is ``ok``), ``provenance`` (JSON of the result's provenance:
a ``"surrogate"`` key marks a prediction, not a measurement) and every metric of
:func:`envs.rewards.result_metrics` of the :meth:`~distilsearch.kdlib.students.candidate.EvalResult.blinded` result:
test and OOD-test metrics are None, since an agent selects on validation and OOD-dev data only. An invalid action -- out
of range for the current dimension, masked out by
the constraints, or a one-shot combination that breaks them -- never raises: the episode terminates with
``reward.penalty``, ``info["status"] == "invalid"`` and the reason in ``info["invalid_reason"]``; the evaluator is
not called.

``limits`` (:class:`~distilsearch.envs.limits.Limits` or ``{"min_speedup": 3, "max_params": ..., "max_size_mb": ...}``)
adds deployment limits to the space (each replacing the space's own): the env's ``space`` is then
``space.with_limits(limits)``, so masks and validity keep every candidate inside them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from distilsearch.envs.evaluators import Evaluator
from distilsearch.envs.limits import Limits
from distilsearch.envs.rewards import Reward, WeightedReward, objectives, result_metrics
from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

CACHE_SIZE = 100_000


class _Decoded(NamedTuple):
    candidate: Candidate | None
    candidate_hash: str | None
    candidate_json: str | None
    reason: str | None


class _SearchEnv(gym.Env[np.ndarray, Any]):
    """What both environments share: configuration, caches, evaluation and the terminal info."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012
    _final_choices: Callable[[Any], Choices | None]
    """Each environment's rule: the complete choice vector ``step(action)`` would end the episode with, if any."""

    def __init__(
        self,
        evaluator: Evaluator,
        space: SearchSpace,
        reward: Reward | None = None,
        task_features: Sequence[float] = (),
        render_mode: str | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(evaluator, Evaluator):
            raise TypeError(f"evaluator={evaluator!r} has no evaluate(candidate) / task / teacher_key / fidelity")
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not one of {[None, *self.metadata['render_modes']]}")
        if limits is not None:
            space = space.with_limits(limits)
        extra = np.asarray(task_features, dtype=np.float32).reshape(-1)
        if not np.all((extra >= 0.0) & (extra <= 1.0)):
            raise ValueError(f"task_features={list(task_features)} must all lie in [0, 1]")
        self.evaluator = evaluator
        self.space = space
        self.reward = reward if reward is not None else WeightedReward()
        self.render_mode = render_mode
        self.descriptor = np.concatenate([space.teacher.features(), extra]).astype(np.float32)
        self._decoded: dict[Choices, _Decoded] = {}
        self._last: str = "no step taken yet"

    def _decode(self, choices: Choices) -> _Decoded:
        decoded = self._decoded.get(choices)
        if decoded is None:
            validity = self.space.is_valid(choices)
            if validity:
                candidate = self.space.decode(choices)
                decoded = _Decoded(candidate, candidate.content_hash(), candidate.model_dump_json(), None)
            else:
                decoded = _Decoded(None, None, None, validity.reason)
            if len(self._decoded) >= CACHE_SIZE:
                self._decoded.clear()
            self._decoded[choices] = decoded
        return decoded

    def pending_candidate(self, action: Any) -> Candidate | None:
        """The candidate that ``step(action)`` would evaluate now, or None when that step would evaluate nothing (it
        is not the episode's last decision, or the choices are invalid). Changes no state: a vectorised runner uses
        it to evaluate the candidates of several environments together before stepping them."""
        choices = self._final_choices(action)
        return None if choices is None else self._decode(choices).candidate

    def _invalid(self, choices: Choices, reason: str) -> tuple[float, dict[str, Any]]:
        self._last = f"invalid: {reason}; reward {self.reward.penalty:.4f}"
        info = {
            "choices": choices,
            "candidate": None,
            "candidate_hash": None,
            "invalid_reason": reason,
            "objectives": None,
            "provenance": None,
            "status": "invalid",
        }
        return self.reward.penalty, info

    def _finish(self, choices: Choices) -> tuple[float, dict[str, Any]]:
        decoded = self._decode(choices)
        if decoded.candidate is None:
            return self._invalid(choices, decoded.reason or "invalid choices")
        result: EvalResult = self.evaluator.evaluate(decoded.candidate)
        reward = float(self.reward(result))
        info: dict[str, Any] = {
            "choices": choices,
            "candidate": decoded.candidate_json,
            "candidate_hash": decoded.candidate_hash,
            "invalid_reason": None,
            "objectives": objectives(result, self.reward.point) if result.status == "ok" else None,
            "provenance": json.dumps(result.provenance, sort_keys=True, default=str),
        }
        info.update(result_metrics(result.blinded()))
        self._last = f"{decoded.candidate_hash} {info['status']}: reward {reward:.4f}"
        return reward, info

    def _describe(self, choices: Sequence[int]) -> str:
        return ", ".join(
            f"{name}={self.space.dimensions[name][c]!r}" for name, c in zip(self.space.names, choices, strict=False)
        )


class StudentSearchEnv(_SearchEnv):
    """One decision per step, in dimension order; the episode ends after the last one (or an invalid action).

    ``action_masks()`` marks the choices of the current dimension that keep a valid candidate reachable (indices
    past that dimension's choice count are always masked), so a masked agent never meets an invalid action.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        space: SearchSpace,
        reward: Reward | None = None,
        task_features: Sequence[float] = (),
        render_mode: str | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(evaluator, space, reward, task_features, render_mode, limits)
        steps = len(self.space.names) + 1
        width = sum(self.space.sizes) + steps + len(self.descriptor)
        self.action_space = spaces.Discrete(max(self.space.sizes))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(width,), dtype=np.float32)
        self._step_offset = sum(self.space.sizes)
        self._masks: dict[Choices, np.ndarray] = {}
        self._chosen: list[int] = []
        self._done = False
        self._obs = np.zeros(width, dtype=np.float32)

    def _mask(self, prefix: Choices) -> np.ndarray:
        mask = self._masks.get(prefix)
        if mask is None:
            mask = np.zeros(self.action_space.n, dtype=bool)
            valid = self.space.validity_mask(prefix)[len(prefix)]
            mask[: len(valid)] = valid
            if len(self._masks) >= CACHE_SIZE:
                self._masks.clear()
            self._masks[prefix] = mask
        return mask

    def action_masks(self) -> np.ndarray:
        """Boolean mask over ``Discrete(max choices)`` for the current decision (all True once the episode ended)."""
        if self._done:
            return np.ones(self.action_space.n, dtype=bool)
        return self._mask(tuple(self._chosen)).copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._chosen = []
        self._done = False
        self._obs[:] = 0.0
        self._obs[self._step_offset] = 1.0
        self._obs[-len(self.descriptor) :] = self.descriptor
        self._last = "episode started"
        return self._obs.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode is over; call reset() before step()")
        d = len(self._chosen)
        name, size = self.space.names[d], self.space.sizes[d]
        choice = _as_index(action)
        if choice is None or not 0 <= choice < size:
            return self._end_invalid(f"action {action!r} is not a choice index of {name} (0..{size - 1})")
        if not self._mask(tuple(self._chosen))[choice]:
            reason = self.space.explain([*self._chosen, choice]) or "no valid completion"
            return self._end_invalid(f"{name}={self.space.dimensions[name][choice]!r} is masked out: {reason}")
        self._obs[self._step_offset + d] = 0.0
        self._obs[self._step_offset + d + 1] = 1.0
        self._obs[self.space.offsets[d] + choice] = 1.0
        self._chosen.append(choice)
        if len(self._chosen) < len(self.space.names):
            self._last = self._describe(self._chosen)
            info = {"dimension": name, "value": self.space.dimensions[name][choice]}
            return self._obs.copy(), 0.0, False, False, info
        self._done = True
        reward, info = self._finish(tuple(self._chosen))
        return self._obs.copy(), reward, True, False, info

    def _final_choices(self, action: Any) -> Choices | None:
        if self._done or len(self._chosen) != len(self.space.names) - 1:
            return None
        choice = _as_index(action)
        if choice is None or not 0 <= choice < self.space.sizes[-1]:
            return None
        return (*self._chosen, choice)

    def _end_invalid(self, reason: str) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._done = True
        reward, info = self._invalid(tuple(self._chosen), reason)
        return self._obs.copy(), reward, True, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        step = f"step {len(self._chosen)}/{len(self.space.names)}"
        return f"{step}: {self._describe(self._chosen) or '(no decision yet)'} | {self._last}\n"


class StudentSearchOneShotEnv(_SearchEnv):
    """One-step episodes: a ``MultiDiscrete(space.sizes)`` action picks every dimension at once.

    ``action_masks()`` (flat, for MaskablePPO) marks the choices valid in at least one full candidate; combinations
    of individually allowed choices can still break a constraint and are penalised.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        space: SearchSpace,
        reward: Reward | None = None,
        task_features: Sequence[float] = (),
        render_mode: str | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(evaluator, space, reward, task_features, render_mode, limits)
        self.action_space = spaces.MultiDiscrete(np.asarray(self.space.sizes, dtype=np.int64))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(self.descriptor),), dtype=np.float32)
        self._static_mask = np.concatenate(self.space.validity_mask([]))

    def action_masks(self) -> np.ndarray:
        """Concatenated per-dimension masks of choices that appear in some valid candidate."""
        return self._static_mask.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._last = "episode started"
        return self.descriptor.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        choices = self._final_choices(action)
        if choices is None:
            reward, info = self._invalid((), f"action {action!r} is not {len(self.space.names)} integer choice indices")
        else:
            reward, info = self._finish(choices)
        return self.descriptor.copy(), reward, True, False, info

    def _final_choices(self, action: Any) -> Choices | None:
        try:
            array = np.asarray(action)
        except (TypeError, ValueError):
            return None
        if array.dtype.kind not in "iu" or array.shape != (len(self.space.names),):
            return None
        return tuple(array.tolist())

    def render(self) -> str | None:
        return f"{self._last}\n" if self.render_mode == "ansi" else None


def _as_index(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (Python or NumPy, not bool), else None."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        return None
    return int(value)
