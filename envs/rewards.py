"""Reward functions mapping an :class:`~distilsearch.kdlib.students.candidate.EvalResult` to a float, plus metric
vectors for agents.

Every reward declares, in the manner of CompilerGym's reward spaces, its ``range`` (the lowest and highest value it
can return, penalty included), whether it is ``deterministic`` (re-evaluating a candidate gives the same value:
false as soon as it reads measured latency, which is noisy) and ``platform_dependent`` (it reads latency, which
depends on the machine).

Selection discipline: every reward and :func:`objectives` read only what a search may select on -- validation
accuracy and the OOD *dev* halves (:meth:`~distilsearch.kdlib.students.candidate.EvalResult.blinded` keeps exactly
those) -- never the test split or the OOD test halves, which are for reporting.

A result with status ``failed`` or ``invalid`` earns the reward's ``penalty``. Unless given, the penalty is one below
the lowest value a successful result can earn, so any successful candidate beats any broken one. A successful
result that lacks a metric the reward needs (no teacher accuracy, no OOD set, no latency at the reward's point) is a
setup error and raises ``ValueError`` naming the metric and the candidate.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from distilsearch.kdlib.students.candidate import EvalResult

Point = tuple[int, int]
DEFAULT_POINT: Point = (1, 64)
OBJECTIVES = ("validation_accuracy", "ood_dev_accuracy", "neg_latency_ms", "neg_params")


def latency_ms(result: EvalResult, point: Point) -> float | None:
    """Median latency (ms per batch) of ``result`` at ``(batch, seq_len)``, or None when not measured."""
    for measured in result.latency:
        if (measured.batch, measured.seq_len) == tuple(point):
            return measured.median_ms
    return None


def objectives(result: EvalResult, point: Point = DEFAULT_POINT) -> np.ndarray:
    """``(validation accuracy, mean OOD-dev accuracy, -latency_ms at point, -params_total)`` as float64, all to be
    maximised (see :data:`OBJECTIVES`).

    Entries the result does not have (no OOD set, no latency at ``point``, a failed or invalid result) are NaN.
    """
    values = [result.validation_accuracy, result.mean_ood_dev_accuracy, latency_ms(result, point), result.params_total]
    signs = (1.0, 1.0, -1.0, -1.0)
    return np.array([math.nan if v is None else sign * v for sign, v in zip(signs, values, strict=True)])


def result_metrics(result: EvalResult) -> dict[str, Any]:
    """Every metric of a result as a flat dict of scalars (None when absent).

    Keys: ``status``, ``error``, the scalar fields of EvalResult, ``retention``, ``validation_retention``,
    ``mean_ood_accuracy``, ``mean_ood_dev_accuracy``, ``ood_retention``, ``ood_dev_retention``,
    ``ood_accuracy/<set>``, ``ood_dev_accuracy/<set>``, ``teacher_ood_accuracy/<set>``,
    ``teacher_ood_dev_accuracy/<set>``, and per latency point ``BxS``: ``latency_ms/BxS``,
    ``teacher_latency_ms/BxS``, ``speedup/BxS``, ``theoretical_speedup/BxS``. Test-derived keys are None for a
    :meth:`~distilsearch.kdlib.students.candidate.EvalResult.blinded` result.
    """
    metrics: dict[str, Any] = {
        "status": result.status,
        "error": result.error,
        "validation_accuracy": result.validation_accuracy,
        "teacher_validation_accuracy": result.teacher_validation_accuracy,
        "validation_retention": result.validation_retention,
        "mean_ood_dev_accuracy": result.mean_ood_dev_accuracy,
        "ood_dev_retention": result.ood_dev_retention,
        "accuracy": result.accuracy,
        "teacher_accuracy": result.teacher_accuracy,
        "retention": result.retention,
        "mean_ood_accuracy": result.mean_ood_accuracy,
        "ood_retention": result.ood_retention,
        "flops": result.flops,
        "params_total": result.params_total,
        "params_non_embedding": result.params_non_embedding,
        "size_bytes": result.size_bytes,
        "peak_memory_bytes": result.peak_memory_bytes,
        "train_seconds": result.train_seconds,
        "train_steps": result.train_steps,
        "curve_seconds": result.curve_seconds,
        "eval_seconds": result.eval_seconds,
    }
    for prefix, values in (
        ("ood_dev_accuracy", result.ood_dev_accuracy),
        ("teacher_ood_dev_accuracy", result.teacher_ood_dev_accuracy),
        ("ood_accuracy", result.ood_accuracy),
        ("teacher_ood_accuracy", result.teacher_ood_accuracy),
    ):
        for name, value in values.items():
            metrics[f"{prefix}/{name}"] = value
    for point in result.latency:
        key = f"{point.batch}x{point.seq_len}"
        metrics[f"latency_ms/{key}"] = point.median_ms
        metrics[f"teacher_latency_ms/{key}"] = point.teacher_median_ms
        metrics[f"speedup/{key}"] = point.speedup
        metrics[f"theoretical_speedup/{key}"] = point.theoretical_speedup
    return metrics


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    return float(value)


def _check_point(point: Point) -> Point:
    if len(point) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in point):
        raise ValueError(f"point={point!r} must be a (batch, seq_len) pair of positive ints")
    return (point[0], point[1])


class Reward(ABC):
    """Base of all rewards: ``reward(result)`` is ``penalty`` for failed/invalid results, else :meth:`score`."""

    name: ClassVar[str]

    def __init__(self, penalty: float | None, point: Point) -> None:
        self.point = _check_point(point)
        low, _ = self.ok_range
        self.penalty = low - 1.0 if penalty is None else _finite("penalty", penalty)

    @property
    @abstractmethod
    def ok_range(self) -> tuple[float, float]:
        """Lowest and highest value :meth:`score` can return."""

    @property
    def range(self) -> tuple[float, float]:
        """Lowest and highest value the reward can return, penalty included."""
        low, high = self.ok_range
        return min(low, self.penalty), max(high, self.penalty)

    @property
    def deterministic(self) -> bool:
        """Whether evaluating the same candidate again gives the same reward (False when latency is read)."""
        return not self.platform_dependent

    @property
    @abstractmethod
    def platform_dependent(self) -> bool:
        """Whether the reward reads quantities that depend on the machine (measured latency)."""

    @abstractmethod
    def score(self, result: EvalResult) -> float:
        """The reward of a successful (``status == "ok"``) result."""

    def __call__(self, result: EvalResult) -> float:
        return self.penalty if result.status != "ok" else self.score(result)

    def _need(self, result: EvalResult, metric: str, value: float | None) -> float:
        if value is None:
            points = [(p.batch, p.seq_len) for p in result.latency]
            raise ValueError(
                f"{type(self).__name__} needs {metric}, which the result for candidate "
                f"{result.candidate.content_hash()} lacks (latency points: {points}, "
                f"OOD dev sets: {sorted(result.ood_dev_accuracy)}, teacher validation accuracy: "
                f"{result.teacher_validation_accuracy})"
            )
        return value

    def _latency(self, result: EvalResult) -> float:
        return self._need(result, f"the latency at (batch, seq_len)={self.point}", latency_ms(result, self.point))


class WeightedReward(Reward):
    """``w_acc * validation retention + w_ood * OOD-dev retention + w_speed * ln(speedup)`` at ``point``.

    Retentions (student / teacher accuracy on validation and on the OOD dev halves) are clipped to
    [0, ``max_retention``] and ``ln(speedup)`` to
    ``[-max_log_speedup, max_log_speedup]`` so the declared range holds. Terms with weight 0 are not read.
    """

    name = "weighted"

    def __init__(
        self,
        w_acc: float = 1.0,
        w_ood: float = 0.0,
        w_speed: float = 0.0,
        point: Point = DEFAULT_POINT,
        penalty: float | None = None,
        max_retention: float = 2.0,
        max_log_speedup: float = math.log(100.0),
    ) -> None:
        self.weights = (_finite("w_acc", w_acc), _finite("w_ood", w_ood), _finite("w_speed", w_speed))
        self.max_retention = _finite("max_retention", max_retention)
        self.max_log_speedup = _finite("max_log_speedup", max_log_speedup)
        if self.max_retention <= 0 or self.max_log_speedup <= 0:
            raise ValueError(f"max_retention={max_retention} and max_log_speedup={max_log_speedup} must be > 0")
        super().__init__(penalty, point)

    @property
    def ok_range(self) -> tuple[float, float]:
        bounds = ((0.0, self.max_retention), (0.0, self.max_retention), (-self.max_log_speedup, self.max_log_speedup))
        low = sum(min(w * lo, w * hi) for w, (lo, hi) in zip(self.weights, bounds, strict=True))
        high = sum(max(w * lo, w * hi) for w, (lo, hi) in zip(self.weights, bounds, strict=True))
        return low, high

    @property
    def platform_dependent(self) -> bool:
        return self.weights[2] != 0.0

    def score(self, result: EvalResult) -> float:
        w_acc, w_ood, w_speed = self.weights
        total = 0.0
        if w_acc:
            retention = self._need(result, "validation_retention", result.validation_retention)
            total += w_acc * min(max(retention, 0.0), self.max_retention)
        if w_ood:
            retention = self._need(result, "ood_dev_retention", result.ood_dev_retention)
            total += w_ood * min(max(retention, 0.0), self.max_retention)
        if w_speed:
            speedup = self._need(result, f"the speedup at {self.point}", result.speedup(*self.point))
            log_speedup = math.log(speedup) if speedup > 0 else -self.max_log_speedup
            total += w_speed * min(max(log_speedup, -self.max_log_speedup), self.max_log_speedup)
        return total


class MnasNetReward(Reward):
    """MnasNet's soft constraint: ``validation accuracy * (latency / target_latency_ms) ** w`` at ``point``.

    ``latency / target`` is clipped to ``[1 / max_ratio, max_ratio]`` so the declared range holds.
    """

    name = "mnasnet"

    def __init__(
        self,
        target_latency_ms: float,
        w: float = -0.07,
        point: Point = DEFAULT_POINT,
        penalty: float | None = None,
        max_ratio: float = 100.0,
    ) -> None:
        self.target_latency_ms = _finite("target_latency_ms", target_latency_ms)
        self.w = _finite("w", w)
        self.max_ratio = _finite("max_ratio", max_ratio)
        if self.target_latency_ms <= 0 or self.max_ratio <= 1:
            raise ValueError(f"target_latency_ms={target_latency_ms} must be > 0 and max_ratio={max_ratio} > 1")
        super().__init__(penalty, point)

    @property
    def ok_range(self) -> tuple[float, float]:
        factors = (self.max_ratio**self.w, self.max_ratio ** (-self.w))
        return 0.0, max(factors)

    @property
    def platform_dependent(self) -> bool:
        return True

    def score(self, result: EvalResult) -> float:
        accuracy = min(max(self._need(result, "validation_accuracy", result.validation_accuracy), 0.0), 1.0)
        ratio = self._latency(result) / self.target_latency_ms
        ratio = min(max(ratio, 1.0 / self.max_ratio), self.max_ratio)
        return accuracy * ratio**self.w


class ConstrainedReward(Reward):
    """Validation accuracy when the latency at ``point`` is within ``latency_budget_ms``; otherwise the overshoot
    penalty ``-min(latency / budget - 1, 1)`` in [-1, 0), so every candidate within budget beats every one over it and
    smaller overshoots are preferred. Failed/invalid results get ``penalty`` (default -2)."""

    name = "constrained"

    def __init__(self, latency_budget_ms: float, point: Point = DEFAULT_POINT, penalty: float | None = None) -> None:
        self.latency_budget_ms = _finite("latency_budget_ms", latency_budget_ms)
        if self.latency_budget_ms <= 0:
            raise ValueError(f"latency_budget_ms={latency_budget_ms} must be > 0")
        super().__init__(penalty, point)

    @property
    def ok_range(self) -> tuple[float, float]:
        return -1.0, 1.0

    @property
    def platform_dependent(self) -> bool:
        return True

    def score(self, result: EvalResult) -> float:
        latency = self._latency(result)
        if latency <= self.latency_budget_ms:
            return min(max(self._need(result, "validation_accuracy", result.validation_accuracy), 0.0), 1.0)
        return -min(latency / self.latency_budget_ms - 1.0, 1.0)


REWARDS: dict[str, type[Reward]] = {cls.name: cls for cls in (WeightedReward, MnasNetReward, ConstrainedReward)}


def register_reward(cls: type[Reward]) -> type[Reward]:
    """Add a Reward subclass to the registry under its ``name`` (usable as a class decorator)."""
    if cls.name in REWARDS and REWARDS[cls.name] is not cls:
        raise ValueError(f"a reward named {cls.name!r} is already registered ({REWARDS[cls.name].__name__})")
    REWARDS[cls.name] = cls
    return cls


def make_reward(name: str, **kwargs: Any) -> Reward:
    """Build a registered reward by name, e.g. ``make_reward("mnasnet", target_latency_ms=5.0)``."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; registered rewards: {sorted(REWARDS)}")
    try:
        return REWARDS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"make_reward({name!r}, ...): {error}") from None
