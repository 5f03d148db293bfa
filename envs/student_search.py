"""Gymnasium environments whose actions choose a student and its KD recipe from a :class:`SearchSpace`.

``StudentSearchEnv`` (``distilsearch/StudentSearch-v0``) takes one decision per step, in the space's dimension order,
with a ``Discrete(max choices)`` action and ``action_masks()`` for MaskablePPO; ``StudentSearchOneShotEnv``
(``distilsearch/StudentSearchOneShot-v0``) takes every decision in one step with a ``MultiDiscrete`` action.
``StudentSearchMOEnv`` (``distilsearch/StudentSearchMO-v0``) and ``StudentSearchOneShotMOEnv``
(``distilsearch/StudentSearchOneShotMO-v0``) are the same with a vector reward (below).

Defaults: with no argument, an environment searches KD-Bench -- the space the shipped table
:data:`~distilsearch.envs.bench_table.BENCH_TABLE` records, evaluated by replaying its rows; ``table=PATH`` names
another bench table (see :func:`envs.bench_env.bench_setup`). A ``space=`` that is not the table's is refused at
construction (:class:`~distilsearch.envs.bench_table.BenchTableError` naming both hashes); a missing table is an
error that says how to build it. While the table lacks candidates of its space, a surrogate fitted on its rows
predicts them (construction warns ``"KD-Bench holds n of N candidates; the others are surrogate predictions"``).
``evaluator=`` and ``space=`` given together use no table.

Observations are one flat float32 Box in [0, 1]: for the sequential env, the one-hot of every decision made so far
(``sum(space.sizes)`` entries), the one-hot of the step (``len(space.names) + 1`` entries, the last meaning "done")
and the descriptor; for the one-shot env the descriptor alone. The descriptor is the teacher's
:meth:`~distilsearch.envs.space.TeacherShape.features` followed by the caller's ``task_features`` (each in [0, 1]).
The one-shot env's observation is therefore the same on every reset and every step: it is a contextual bandit with
one fixed context, and an agent learns a distribution over actions, not a mapping from states.

Rewards are terminal; non-terminal steps earn 0 (the zero vector for the vector-reward envs). Scalar envs earn
``reward(evaluator.evaluate(candidate))`` for a :class:`~distilsearch.envs.rewards.Reward` (default
:class:`~distilsearch.envs.rewards.WeightedReward`: validation retention in [0, 2], penalty -1), within
``reward.range``. The vector-reward envs follow MO-Gymnasium's convention: ``reward`` is a
:class:`~distilsearch.envs.vector_reward.VectorReward` and ``step`` returns a float32 vector
``(validation accuracy in [0, 1], mean OOD-dev accuracy in [0, 1], ln speed-up in [-ln 100, ln 100])``, penalty
``(-1, -1, -ln 100 - 1)``, inside the env's ``reward_space`` Box. They are registered without Gymnasium's passive
checker (it warns on any non-scalar reward); :class:`~distilsearch.envs.vector_reward.LinearReward` scalarises them
for single-objective learners.

The terminal ``info`` holds:

* ``choices``, ``candidate`` (JSON), ``candidate_hash``, ``invalid_reason``, ``status``;
* ``objectives`` (see :func:`envs.rewards.objectives`; None unless the result is ``ok``) and ``provenance`` (JSON of
  the result's provenance);
* ``predicted``: True when the result is a surrogate prediction (a ``"surrogate"`` provenance key), not a measurement;
* ``simulated_seconds``: what this evaluation cost, the ``train_seconds + eval_seconds`` the result records, charged
  again each time a candidate repeats, as a simulator backend would (a result that records no cost, such as a
  surrogate prediction, is charged the median cost of the bench's measured rows, or 0 with a caller's evaluator; an
  invalid action costs 0);
* ``simulated_time``: the sum of ``simulated_seconds`` since the env was created or last reset with a seed (also the
  attribute ``simulated_time``), so agents can be compared at equal simulated cost. A seeded reset begins a new run,
  so the same seed and actions give the same info; seed only the first reset, as Gymnasium and SB3 do, to accumulate
  over a run;
* every metric of :func:`envs.rewards.result_metrics` of the
  :meth:`~distilsearch.kdlib.students.candidate.EvalResult.blinded` result: test and OOD-test metrics are None, since
  an agent selects on validation and OOD-dev data only.

A non-terminal step's ``info`` holds ``dimension`` and ``value``.
An invalid action -- out of range for the current dimension, masked out by the constraints, or a one-shot combination
that breaks them -- never raises: the episode terminates with ``reward.penalty``, ``info["status"] == "invalid"`` and
the reason in ``info["invalid_reason"]``; the evaluator is not called.

``limits`` (:class:`~distilsearch.envs.limits.Limits` or ``{"min_speedup": 3, "max_params": ..., "max_size_mb": ...}``)
adds deployment limits to the space (each replacing the space's own): the env's ``space`` is then
``space.with_limits(limits)``, so masks and validity keep every candidate inside them.

Rendering: ``"ansi"`` gives a line of text; ``"rgb_array"`` a uint8 image of the decisions, one row of
:data:`RENDER_CELL`-pixel cells per dimension and one cell per choice (black: no such choice, grey: a choice, green:
the one taken). Stable-Baselines3's ``make_vec_env`` asks for ``"rgb_array"``.

Vectorising: ``gymnasium.make_vec``, SB3's ``make_vec_env`` and ``SubprocVecEnv`` build every copy from the id and
keyword arguments. A ``SubprocVecEnv`` worker started by ``fork`` inherits the registration; one started by ``spawn``
or ``forkserver`` re-imports the main script, which must ``import distilsearch.envs`` (or use the id
``"distilsearch.envs:distilsearch/StudentSearch-v0"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from distilsearch.envs.bench_env import bench_setup, recorded_seconds
from distilsearch.envs.evaluators import Evaluator
from distilsearch.envs.limits import Limits
from distilsearch.envs.rewards import Reward, WeightedReward, objectives, result_metrics
from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.envs.vector_reward import VectorReward
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

CACHE_SIZE = 100_000
RENDER_CELL = 8
"""Side, in pixels, of one choice's cell in an ``rgb_array`` rendering."""
NO_CHOICE, CHOICE, CHOSEN = (0, 0, 0), (96, 96, 96), (64, 200, 96)

RewardValue = float | np.ndarray
Step = tuple[np.ndarray, RewardValue, bool, bool, dict[str, Any]]


class _Decoded(NamedTuple):
    candidate: Candidate | None
    candidate_hash: str | None
    candidate_json: str | None
    reason: str | None


def decision_grid(sizes: Sequence[int], choices: Sequence[int], cell: int = RENDER_CELL) -> np.ndarray:
    """An RGB uint8 image of ``choices`` over dimensions of ``sizes`` choices: one row of ``cell``-pixel cells per
    dimension, black past its choices, grey for a choice, green for the one taken (indices out of range light none)."""
    grid = np.zeros((len(sizes), max(sizes), 3), dtype=np.uint8)
    grid[:] = NO_CHOICE
    for row, size in enumerate(sizes):
        grid[row, :size] = CHOICE
    for row, choice in enumerate(choices):
        if 0 <= choice < sizes[row]:
            grid[row, choice] = CHOSEN
    return np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)


class _SearchEnv(gym.Env[np.ndarray, Any]):
    """What every environment shares: configuration, caches, evaluation, simulated time and the terminal info."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012
    _reward_kind: ClassVar[type] = Reward
    _default_reward: ClassVar[Callable[[], Reward | VectorReward]] = WeightedReward
    _final_choices: Callable[[Any], Choices | None]
    """Each environment's rule: the complete choice vector ``step(action)`` would end the episode with, if any."""
    _shown: Callable[[], tuple[str, Sequence[int]]]
    """Each environment's rendering: the ``ansi`` line and the choices the ``rgb_array`` image lights."""

    def __init__(
        self,
        evaluator: Evaluator | None = None,
        space: SearchSpace | None = None,
        reward: Reward | VectorReward | None = None,
        task_features: Sequence[float] = (),
        render_mode: str | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        table: str | Path | None = None,
    ) -> None:
        if evaluator is not None and not isinstance(evaluator, Evaluator):
            raise TypeError(f"evaluator={evaluator!r} has no evaluate(candidate) / task / teacher_key / fidelity")
        if space is not None and not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        if reward is not None and not isinstance(reward, self._reward_kind):
            raise TypeError(f"{type(self).__name__} needs a {self._reward_kind.__name__} reward, got {reward!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not one of {[None, *self.metadata['render_modes']]}")
        extra = np.asarray(task_features, dtype=np.float32).reshape(-1)
        if not np.all((extra >= 0.0) & (extra <= 1.0)):
            raise ValueError(f"task_features={list(task_features)} must all lie in [0, 1]")
        setup = bench_setup(evaluator, space, table)
        space = setup.space if limits is None else setup.space.with_limits(limits)
        self.evaluator = setup.evaluator
        self.space = space
        self.reward = reward if reward is not None else self._default_reward()
        self.render_mode = render_mode
        self.descriptor = np.concatenate([space.teacher.features(), extra]).astype(np.float32)
        self.simulated_time = 0.0
        self._unrecorded_seconds = setup.unrecorded_seconds
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

    def _start(self, seed: int | None) -> None:
        """Begin an episode: seed the RNG and, with a seed (a new run), restart the simulated clock."""
        super().reset(seed=seed)
        if seed is not None:
            self.simulated_time = 0.0

    def _zero_reward(self) -> RewardValue:
        return np.zeros(self.reward.space.shape, dtype=np.float32) if isinstance(self.reward, VectorReward) else 0.0

    def _reward_of(self, result: EvalResult) -> RewardValue:
        value = self.reward(result)
        return value if isinstance(value, np.ndarray) else float(value)

    def _invalid(self, choices: Choices, reason: str) -> tuple[RewardValue, dict[str, Any]]:
        penalty = self.reward.penalty
        self._last = f"invalid: {reason}; reward {_show(penalty)}"
        info = {
            "choices": choices,
            "candidate": None,
            "candidate_hash": None,
            "invalid_reason": reason,
            "objectives": None,
            "provenance": None,
            "predicted": False,
            "simulated_seconds": 0.0,
            "simulated_time": self.simulated_time,
            "status": "invalid",
        }
        return penalty, info

    def _finish(self, choices: Choices) -> tuple[RewardValue, dict[str, Any]]:
        decoded = self._decode(choices)
        if decoded.candidate is None:
            return self._invalid(choices, decoded.reason or "invalid choices")
        result: EvalResult = self.evaluator.evaluate(decoded.candidate)
        reward = self._reward_of(result)
        seconds = recorded_seconds(result)
        seconds = self._unrecorded_seconds if seconds is None else seconds
        self.simulated_time += seconds
        info: dict[str, Any] = {
            "choices": choices,
            "candidate": decoded.candidate_json,
            "candidate_hash": decoded.candidate_hash,
            "invalid_reason": None,
            "objectives": objectives(result, self.reward.point) if result.status == "ok" else None,
            "provenance": json.dumps(result.provenance, sort_keys=True, default=str),
            "predicted": "surrogate" in result.provenance,
            "simulated_seconds": seconds,
            "simulated_time": self.simulated_time,
        }
        info.update(result_metrics(result.blinded()))
        self._last = f"{decoded.candidate_hash} {info['status']}: reward {_show(reward)}"
        return reward, info

    def _describe(self, choices: Sequence[int]) -> str:
        return ", ".join(
            f"{name}={self.space.dimensions[name][c]!r}" for name, c in zip(self.space.names, choices, strict=False)
        )

    def render(self) -> str | np.ndarray | None:
        """The ``render_mode``'s rendering: a text line (``ansi``), an RGB image (``rgb_array``) or None."""
        if self.render_mode is None:
            return None
        text, choices = self._shown()
        return text if self.render_mode == "ansi" else decision_grid(self.space.sizes, choices)


class StudentSearchEnv(_SearchEnv):
    """One decision per step, in dimension order; the episode ends after the last one (or an invalid action).

    ``action_masks()`` marks the choices of the current dimension that keep a valid candidate reachable (indices
    past that dimension's choice count are always masked), so a masked agent never meets an invalid action.
    """

    def __init__(
        self,
        evaluator: Evaluator | None = None,
        space: SearchSpace | None = None,
        reward: Reward | VectorReward | None = None,
        task_features: Sequence[float] = (),
        render_mode: str | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        table: str | Path | None = None,
    ) -> None:
        super().__init__(evaluator, space, reward, task_features, render_mode, limits, table)
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
        self._start(seed)
        self._chosen = []
        self._done = False
        self._obs[:] = 0.0
        self._obs[self._step_offset] = 1.0
        self._obs[-len(self.descriptor) :] = self.descriptor
        self._last = "episode started"
        return self._obs.copy(), {}

    def step(self, action: Any) -> Step:
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
            return self._obs.copy(), self._zero_reward(), False, False, info
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

    def _end_invalid(self, reason: str) -> Step:
        self._done = True
        reward, info = self._invalid(tuple(self._chosen), reason)
        return self._obs.copy(), reward, True, False, info

    def _shown(self) -> tuple[str, Sequence[int]]:
        step = f"step {len(self._chosen)}/{len(self.space.names)}"
        return f"{step}: {self._describe(self._chosen) or '(no decision yet)'} | {self._last}\n", self._chosen


class StudentSearchOneShotEnv(_SearchEnv):
    """One-step episodes: a ``MultiDiscrete(space.sizes)`` action picks every dimension at once.

    A contextual bandit with one fixed context: every observation (after ``reset`` and after ``step``) is the same
    descriptor. ``action_masks()`` (flat, for MaskablePPO) marks the choices valid in at least one full candidate;
    combinations of individually allowed choices can still break a constraint and are penalised.
    """

    def __init__(
        self,
        evaluator: Evaluator | None = None,
        space: SearchSpace | None = None,
        reward: Reward | VectorReward | None = None,
        task_features: Sequence[float] = (),
        render_mode: str | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        table: str | Path | None = None,
    ) -> None:
        super().__init__(evaluator, space, reward, task_features, render_mode, limits, table)
        self.action_space = spaces.MultiDiscrete(np.asarray(self.space.sizes, dtype=np.int64))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(self.descriptor),), dtype=np.float32)
        self._static_mask = np.concatenate(self.space.validity_mask([]))
        self._taken: Choices = ()

    def action_masks(self) -> np.ndarray:
        """Concatenated per-dimension masks of choices that appear in some valid candidate."""
        return self._static_mask.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        self._start(seed)
        self._last = "episode started"
        self._taken = ()
        return self.descriptor.copy(), {}

    def step(self, action: Any) -> Step:
        choices = self._final_choices(action)
        if choices is None:
            self._taken = ()
            reward, info = self._invalid((), f"action {action!r} is not {len(self.space.names)} integer choice indices")
        else:
            self._taken = choices
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

    def _shown(self) -> tuple[str, Sequence[int]]:
        return f"{self._last}\n", self._taken


class _VectorRewards:
    """What the vector-reward environments add: a :class:`~distilsearch.envs.vector_reward.VectorReward` (default
    ``VectorReward()``) and MO-Gymnasium's ``reward_space``."""

    _reward_kind = VectorReward
    _default_reward = VectorReward
    reward: VectorReward

    @property
    def reward_space(self) -> spaces.Box:
        """The Box holding every reward vector, penalty included."""
        return self.reward.space


class StudentSearchMOEnv(_VectorRewards, StudentSearchEnv):
    """:class:`StudentSearchEnv` with MO-Gymnasium's vector reward (``reward_space``, float32 vector rewards)."""


class StudentSearchOneShotMOEnv(_VectorRewards, StudentSearchOneShotEnv):
    """:class:`StudentSearchOneShotEnv` with MO-Gymnasium's vector reward (``reward_space``, float32 vector rewards)."""


def _show(reward: RewardValue) -> str:
    """A reward (scalar or vector) as text, four decimals."""
    if isinstance(reward, np.ndarray):
        return np.array2string(reward, precision=4, separator=", ")
    return f"{reward:.4f}"


def _as_index(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (Python or NumPy, not bool), else None."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        return None
    return int(value)
