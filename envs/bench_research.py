"""Exact research numbers of a bench table: each reward's optimum, the true Pareto front and hypervolume of an
objective pair, what a uniformly random policy gets on average, and normalised regrets.

What is read. Only the rows of the space's own candidates (:meth:`BenchTable.in_space`; the noise re-runs with
another seed are left out) and only measured values: a result whose provenance names a ``surrogate`` is a
prediction and never counts. Every number is on the selection side, what an agent optimises: rewards score the
row's :meth:`~distilsearch.kdlib.students.candidate.EvalResult.blinded` result (validation accuracy or retention,
OOD-dev retention, measured latency or speed-up: see :func:`reward_metric`); the objective pairs read validation
accuracy and the measured median latency or speed-up at batch 1 x sequence length 64. Test accuracies are never read.

Objective pairs (:data:`PAIRS`), both coordinates named as in :mod:`distilsearch.search.pareto`:

* ``accuracy-latency``: validation accuracy (up) vs measured median latency in ms at 1 x 64 (down); reference point
  (the majority-label validation rate recorded in the rows, else 0; the teacher's median latency at 1 x 64);
* ``accuracy-speedup``: validation accuracy (up) vs measured speed-up at 1 x 64, teacher / student (up); reference
  point (the majority rate as above; 1.0).

Dominance and volume are those of :mod:`distilsearch.search.pareto` (no worse in both, strictly better in one; equal
points are all kept; a point not strictly better than the reference in both adds nothing). They are computed here,
exactly for two objectives, because ``search`` imports ``envs``: ``envs`` importing ``search.pareto`` would reverse
the layers (``search -> envs -> kdlib``). The tests check both give the same volumes.

The uniform random policy draws each of the ``n`` rows with probability ``1/n``; random search draws ``k`` distinct
ones (without replacement, as :class:`~distilsearch.search.agents.random_search.RandomSearch` does; its draws are
uniform over the candidates when the space has no constraints, as KD-Bench's). Its expectations are exact, never
sampled: with the rewards sorted ``v_1 <= ... <= v_n``, ``E[best of k] = sum_i v_i C(i-1, k-1) / C(n, k)``; the
expected hypervolume of ``k`` draws sums, over the cells of the grid the points' coordinates cut the reference box
into, each cell's area times the chance that one of the ``k`` draws dominates it, ``1 - C(n-m, k) / C(n, k)`` for a
cell dominated by ``m`` of the ``n`` candidates. ``k`` above ``n`` is ``n`` (random search stops when every candidate
was drawn).

Regret definitions:

* :meth:`BenchResearch.normalized_regret` ``= (optimum - found) / (optimum - E[best of k])``: 0 at the optimum, 1 for
  what random search finds on average with ``k`` evaluations (``k = 1``: a single random candidate), above 1 worse;
* :meth:`BenchResearch.hypervolume_regret` ``= (HV* - hv) / HV*`` (the share of the optimum hypervolume missed), or
  with ``k``, ``(HV* - hv) / (HV* - E[HV of k random draws])``, read like the first.

An incomplete table (a build under way) is researched over the rows it holds: :attr:`BenchResearch.rows` of
:attr:`BenchResearch.candidates`. The builder writes them in a seeded random order, so they are a uniform sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from distilsearch.envs.bench_table import BenchTable
from distilsearch.envs.rewards import (
    DEFAULT_POINT,
    REWARDS,
    ConstrainedReward,
    MnasNetReward,
    Reward,
    WeightedReward,
    latency_ms,
    make_reward,
)
from distilsearch.envs.space import Choices
from distilsearch.envs.surrogate import is_predicted
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

Direction = Literal["up", "down"]


class BenchResearchError(ValueError):
    """A research question the table cannot answer (no rows of its space, nothing on a front, an undefined regret)."""


@dataclass(frozen=True)
class Axis:
    """One coordinate of an objective pair: its name (as in :mod:`distilsearch.search.pareto`), how to read it from a
    result, whether more (``up``) or less (``down``) is better and its reference value given the rows."""

    name: str
    label: str
    direction: Direction
    read: Callable[[EvalResult], float | None]
    reference: Callable[[Sequence[EvalResult]], float]

    @property
    def sign(self) -> float:
        """Factor taking a natural value to minimisation form."""
        return -1.0 if self.direction == "up" else 1.0


def _majority_rate(rows: Sequence[EvalResult]) -> float:
    rates = [row.majority_validation_accuracy for row in rows if row.majority_validation_accuracy is not None]
    return max(rates) if rates else 0.0


def _teacher_latency(rows: Sequence[EvalResult]) -> float:
    values = [p.teacher_median_ms for row in rows for p in row.latency if (p.batch, p.seq_len) == DEFAULT_POINT]
    if not values:
        raise BenchResearchError(f"no row records the teacher's latency at {DEFAULT_POINT}; no latency reference")
    return max(values)


ACCURACY = Axis("accuracy", "validation accuracy", "up", lambda r: r.validation_accuracy, _majority_rate)
LATENCY = Axis(
    "latency",
    f"median latency {DEFAULT_POINT[0]}x{DEFAULT_POINT[1]} (ms)",
    "down",
    lambda r: latency_ms(r, DEFAULT_POINT),
    _teacher_latency,
)
SPEEDUP = Axis(
    "speedup",
    f"measured speed-up {DEFAULT_POINT[0]}x{DEFAULT_POINT[1]}",
    "up",
    lambda r: r.speedup(*DEFAULT_POINT),
    lambda rows: 1.0,
)
PAIRS: dict[str, tuple[Axis, Axis]] = {"accuracy-latency": (ACCURACY, LATENCY), "accuracy-speedup": (ACCURACY, SPEEDUP)}


def get_pair(name: str) -> tuple[Axis, Axis]:
    """The objective pair called ``name``; ``ValueError`` naming it and the known ones otherwise."""
    if name not in PAIRS:
        raise ValueError(f"unknown objective pair {name!r}; known pairs: {', '.join(PAIRS)}")
    return PAIRS[name]


def reward_metric(reward: Reward) -> str:
    """What ``reward`` reads, in words."""
    if isinstance(reward, WeightedReward):
        terms = ("validation retention", "OOD-dev retention", f"ln measured speed-up at {reward.point}")
        return " + ".join(f"{w:g} x {term}" for w, term in zip(reward.weights, terms, strict=True) if w)
    if isinstance(reward, MnasNetReward):
        return (
            f"validation accuracy x (measured latency at {reward.point} / {reward.target_latency_ms:g} ms)^{reward.w:g}"
        )
    if isinstance(reward, ConstrainedReward):
        return f"validation accuracy within {reward.latency_budget_ms:g} ms measured latency at {reward.point}"
    return f"{reward.name} of the blinded (validation-side) result"


@dataclass(frozen=True)
class RewardOptimum:
    """The bench's best candidate under one reward (the reward object, with its settings), its value and what the
    reward reads."""

    reward: Reward
    metric: str
    value: float
    choices: Choices
    candidate: Candidate


@dataclass(frozen=True)
class ParetoFront:
    """The true front of an objective pair: members best first on the first objective, their natural values, the
    reference point (natural units) and the hypervolume."""

    pair: str
    members: list[EvalResult]
    values: list[tuple[float, float]]
    reference: tuple[float, float]
    hypervolume: float


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Ascending indices of the rows of ``points`` (minimisation form) no other row dominates (duplicates kept)."""
    keep = [not ((points <= p).all(axis=1) & (points < p).any(axis=1)).any() for p in points]
    return np.flatnonzero(np.array(keep, dtype=bool))


def hypervolume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """The area dominated by ``points`` (``(n, 2)``, minimisation form) inside the box bounded by ``reference``."""
    inside = points[(points < reference).all(axis=1)]
    area, best = 0.0, float(reference[1])
    for x, y in sorted(map(tuple, inside)):
        if y < best:
            area += (float(reference[0]) - x) * (best - y)
            best = y
    return float(area)


def expected_best_of(values: Sequence[float], k: int) -> float:
    """The expected maximum of ``k`` distinct draws from ``values`` (uniform, without replacement), exactly."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise BenchResearchError("no values to draw from")
    k = _draws(k, n)
    total = math.comb(n, k)
    return sum(value * math.comb(i, k - 1) for i, value in enumerate(ordered) if i >= k - 1) / total


def _draws(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be an int of at least 1 (evaluations)")
    return min(k, n)


def expected_hypervolume_2d(points: np.ndarray, reference: np.ndarray, population: int, k: int) -> float:
    """The expected hypervolume of ``k`` distinct uniform draws from ``population`` candidates, ``points`` being the
    minimisation-form values of those that have them (the others add no volume), exactly over the grid of cells."""
    if population < len(points) or population < 1:
        raise ValueError(f"population={population} must be at least the {len(points)} points and 1")
    k = _draws(k, population)
    inside = points[(points < reference).all(axis=1)]
    if not len(inside):
        return 0.0
    xs = np.unique(np.append(inside[:, 0], reference[0]))
    ys = np.unique(np.append(inside[:, 1], reference[1]))
    counts = np.zeros((len(xs) - 1, len(ys) - 1), dtype=np.int64)
    np.add.at(counts, (np.searchsorted(xs, inside[:, 0]), np.searchsorted(ys, inside[:, 1])), 1)
    dominating = counts.cumsum(axis=0).cumsum(axis=1)
    total = math.comb(population, k)
    covered = np.array([1.0 - math.comb(population - m, k) / total for m in range(population + 1)])
    area = np.diff(xs)[:, None] * np.diff(ys)[None, :]
    return float((area * covered[dominating]).sum())


def _default_latency(rows: Sequence[EvalResult]) -> float:
    values = [v for row in rows if row.status == "ok" and (v := latency_ms(row, DEFAULT_POINT)) is not None]
    if not values:
        raise BenchResearchError(f"no row records a measured latency at {DEFAULT_POINT}")
    return float(np.median(values))


class BenchResearch:
    """Exact answers from a bench table's rows of its own candidates (see the module docstring)."""

    def __init__(self, table: BenchTable) -> None:
        self.table = table
        self.by_choices: dict[Choices, EvalResult] = {
            choices: result for choices, result in table.in_space().items() if not is_predicted(result)
        }
        self.candidates = table.space.num_valid()
        if not self.by_choices:
            raise BenchResearchError(
                f"{table.path} holds none of its space's {self.candidates} candidates (0 rows to research)"
            )
        self.results = list(self.by_choices.values())

    @property
    def rows(self) -> int:
        """Candidates of the space the table holds a measured row for."""
        return len(self.results)

    # ---- rewards --------------------------------------------------------------------------------------------------

    def default_reward_options(self, name: str) -> dict[str, Any]:
        """The settings :meth:`reward_optima` gives reward ``name``: none for ``weighted`` (validation retention)
        and unknown names; the median measured latency of the rows at 1 x 64 as ``mnasnet``'s target and as
        ``constrained``'s budget."""
        if name == MnasNetReward.name:
            return {"target_latency_ms": _default_latency(self.results)}
        if name == ConstrainedReward.name:
            return {"latency_budget_ms": _default_latency(self.results)}
        return {}

    @staticmethod
    def _reward(reward: str | Reward, **options: Any) -> Reward:
        return reward if isinstance(reward, Reward) else make_reward(reward, **options)

    def reward_values(self, reward: str | Reward, **options: Any) -> np.ndarray:
        """The reward of every row, in :attr:`results` order (failed rows earn the reward's penalty)."""
        scorer = self._reward(reward, **options)
        return np.array([scorer(result.blinded()) for result in self.results], dtype=float)

    def optimum(self, reward: str | Reward, **options: Any) -> RewardOptimum:
        """The best row under ``reward`` (the first in enumeration order on ties) and its value."""
        scorer = self._reward(reward, **options)
        values = self.reward_values(scorer)
        best = int(np.argmax(values))
        choices = list(self.by_choices)[best]
        return RewardOptimum(scorer, reward_metric(scorer), float(values[best]), choices, self.results[best].candidate)

    def reward_optima(self, settings: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, RewardOptimum | str]:
        """Every registered reward's optimum, with ``settings[name]`` or :meth:`default_reward_options`; a reward
        that cannot be built with them or cannot score the rows maps to the reason instead."""
        optima: dict[str, RewardOptimum | str] = {}
        for name in REWARDS:
            try:
                given = (settings or {}).get(name)
                options = dict(given) if given is not None else self.default_reward_options(name)
                optima[name] = self.optimum(name, **options)
            except ValueError as error:
                optima[name] = str(error)
        return optima

    def random_expectation(self, reward: str | Reward, **options: Any) -> float:
        """The expected reward of one uniformly random candidate (the mean over the rows)."""
        return float(self.reward_values(reward, **options).mean())

    def expected_best_of(self, reward: str | Reward, k: int, **options: Any) -> float:
        """The expected best reward of ``k`` distinct uniformly random candidates (random search with ``k``
        evaluations), exactly by order statistics."""
        return expected_best_of(self.reward_values(reward, **options).tolist(), k)

    def normalized_regret(self, reward: str | Reward, found: float, k: int = 1, **options: Any) -> float:
        """``(optimum - found) / (optimum - E[best of k random])``; 0 at the optimum, 1 at random search's mean."""
        scorer = self._reward(reward, **options)
        optimum = self.optimum(scorer).value
        baseline = self.expected_best_of(scorer, k)
        if math.isclose(optimum, baseline, rel_tol=0.0, abs_tol=1e-12):
            raise BenchResearchError(
                f"normalized regret with k={k} is undefined: random search with {k} evaluations of the {self.rows} "
                f"rows finds the optimum {optimum:g} of {scorer.name!r} on average"
            )
        return (optimum - found) / (optimum - baseline)

    # ---- Pareto fronts --------------------------------------------------------------------------------------------

    def reference(self, pair: str) -> tuple[float, float]:
        """The reference point of ``pair`` in natural units (see the module docstring)."""
        first, second = get_pair(pair)
        return first.reference(self.results), second.reference(self.results)

    def _points(self, pair: str, results: Sequence[EvalResult]) -> tuple[list[EvalResult], np.ndarray]:
        """The measured ``ok`` results that carry both objectives, and their minimisation-form values."""
        axes = get_pair(pair)
        usable = [r for r in results if r.status == "ok" and not is_predicted(r)]
        kept = [r for r in usable if all(a.read(r) is not None for a in axes)]
        points = np.array([[a.sign * a.read(r) for a in axes] for r in kept], dtype=float).reshape(len(kept), 2)
        return kept, points

    def _bound(self, pair: str) -> np.ndarray:
        axes = get_pair(pair)
        return np.array([a.sign * value for a, value in zip(axes, self.reference(pair), strict=True)])

    def hypervolume(self, results: Sequence[EvalResult], pair: str = "accuracy-latency") -> float:
        """The hypervolume of any ``results`` (e.g. an agent's) under ``pair`` and the bench's reference point;
        predictions, failed results and results lacking an objective add nothing."""
        return hypervolume_2d(self._points(pair, results)[1], self._bound(pair))

    def front(self, pair: str = "accuracy-latency") -> ParetoFront:
        """The true Pareto front of the rows under ``pair`` and its hypervolume; :class:`BenchResearchError` when no
        row is strictly better than the reference point in both objectives."""
        kept, points = self._points(pair, self.results)
        bound = self._bound(pair)
        inside = [i for i in non_dominated(points) if (points[i] < bound).all()]
        if not inside:
            raise BenchResearchError(
                f"{self.table.path}: none of the {self.rows} rows beats the reference {self.reference(pair)} of "
                f"{pair!r} in both objectives; the front is empty"
            )
        order = sorted(inside, key=lambda i: (*points[i], kept[i].candidate.content_hash()))
        axes = get_pair(pair)
        values = [(float(axes[0].sign * points[i][0]), float(axes[1].sign * points[i][1])) for i in order]
        return ParetoFront(pair, [kept[i] for i in order], values, self.reference(pair), hypervolume_2d(points, bound))

    def expected_hypervolume(self, pair: str, k: int, population: int | None = None) -> float:
        """The expected hypervolume of ``k`` distinct uniformly random candidates, exactly.

        ``population`` is how many candidates the draws come from (default: the rows); candidates beyond the rows
        add no volume, as the space's candidates an incomplete table answers by prediction do.
        """
        population = self.rows if population is None else population
        if population < self.rows:
            raise ValueError(f"population={population} must be at least the table's {self.rows} rows")
        points = self._points(pair, self.results)[1]
        return expected_hypervolume_2d(points, self._bound(pair), population, k)

    def hypervolume_regret(self, hypervolume: float, pair: str = "accuracy-latency", k: int | None = None) -> float:
        """``(HV* - hv) / HV*``, or with ``k``, ``(HV* - hv) / (HV* - E[HV of k random draws])``."""
        optimum = self.front(pair).hypervolume
        baseline = 0.0 if k is None else self.expected_hypervolume(pair, k)
        if math.isclose(optimum, baseline, rel_tol=1e-12, abs_tol=0.0):
            raise BenchResearchError(
                f"hypervolume regret with k={k} is undefined: random search with {k} evaluations of the {self.rows} "
                f"rows reaches the optimum hypervolume {optimum:g} of {pair!r} on average"
            )
        return (optimum - hypervolume) / (optimum - baseline)
