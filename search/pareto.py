"""Pareto frontiers and hypervolume of evaluated candidates over named objectives.

Objectives are named (see :data:`OBJECTIVES`): ``accuracy`` (validation accuracy) and ``ood_accuracy`` (mean
accuracy on the OOD dev halves) are maximised -- the selection objectives, on data a search may look at;
``test_accuracy`` and ``ood_test_accuracy`` (the test split and the OOD test halves) are post-hoc views for reports
and are never the default; ``latency`` (median ms per batch at batch 1 x sequence length 64; ``latency@32x128``
picks another measured point),
``params`` (total parameters) and ``size`` (bytes) are minimised. :func:`objective_matrix`, :func:`non_dominated`
and :func:`hypervolume` work in minimisation form (maximised objectives negated); reference points given as
mappings, tables and teacher values are in natural units.

Only ``ok`` results that carry every chosen objective take part (:func:`usable`); the others are skipped, and so is
a student whose accuracy objective is no better than always answering the training set's majority label
(``majority_validation_accuracy`` / ``majority_test_accuracy``): the constant answer beats it at no cost. The default
reference of an accuracy objective is that majority rate where the results record it.

Dominance: ``a`` dominates ``b`` when ``a`` is no worse in every objective and strictly better in one. A point equal
to another is therefore not dominated, so exact duplicates are all kept on the frontier (each is its own candidate).

Reference point (:func:`default_reference`, natural units, every entry overridable): ``accuracy`` and
``test_accuracy`` the majority rate (0 where not recorded), the other accuracies 0, ``speedup`` 1, ``latency`` the
teacher's median latency at the same point (the largest recorded in the results), ``params`` and ``size`` 1.1 x the
largest value among the results, rounded up (results do not record the teacher's count). Derived defaults depend on
the results given, so compare runs by passing all of them at once, or fix the reference. A point not strictly better
than the reference in every objective adds no volume.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV

from distilsearch.envs.rewards import DEFAULT_POINT, Point, latency_ms, result_metrics
from distilsearch.kdlib.students.candidate import EvalResult

Direction = Literal["up", "down"]
SIZE_MARGIN = 1.1
_LATENCY_AT = re.compile(r"latency@(\d+)x(\d+)")


@dataclass(frozen=True)
class Objective:
    """One named objective: how to read it from a result and whether more (``up``) or less (``down``) is better.

    ``point`` is the (batch, sequence length) of a latency objective; ``floor`` is the default reference value of an
    ``up`` objective (the value that adds no hypervolume).
    """

    name: str
    direction: Direction
    label: str
    read: Callable[[EvalResult], float | None]
    point: Point | None = None
    floor: float = 0.0
    majority: Callable[[EvalResult], float | None] | None = None

    @property
    def sign(self) -> float:
        """Factor taking a natural value to minimisation form (-1 for ``up``, +1 for ``down``)."""
        return -1.0 if self.direction == "up" else 1.0


def _latency_objective(point: Point) -> Objective:
    name = "latency" if point == DEFAULT_POINT else f"latency@{point[0]}x{point[1]}"
    return Objective(name, "down", f"latency {point[0]}x{point[1]} (ms)", lambda r: latency_ms(r, point), point)


def _as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective(
            "accuracy",
            "up",
            "validation accuracy",
            lambda r: r.validation_accuracy,
            majority=lambda r: r.majority_validation_accuracy,
        ),
        Objective("ood_accuracy", "up", "mean OOD-dev accuracy", lambda r: r.mean_ood_dev_accuracy),
        Objective(
            "test_accuracy",
            "up",
            "test accuracy (post hoc)",
            lambda r: r.accuracy,
            majority=lambda r: r.majority_test_accuracy,
        ),
        Objective("ood_test_accuracy", "up", "mean OOD-test accuracy (post hoc)", lambda r: r.mean_ood_accuracy),
        _latency_objective(DEFAULT_POINT),
        Objective(
            "speedup",
            "up",
            f"measured speed-up {DEFAULT_POINT[0]}x{DEFAULT_POINT[1]} (teacher / student)",
            lambda r: r.speedup(*DEFAULT_POINT),
            floor=1.0,
        ),
        Objective("params", "down", "parameters", lambda r: _as_float(r.params_total)),
        Objective("size", "down", "size (bytes)", lambda r: _as_float(r.size_bytes)),
    )
}


def get_objective(name: str) -> Objective:
    """The objective called ``name`` (``latency@BxS`` for latency at batch B, sequence length S)."""
    match = _LATENCY_AT.fullmatch(name)
    if match and int(match[1]) >= 1 and int(match[2]) >= 1:
        return _latency_objective((int(match[1]), int(match[2])))
    if name not in OBJECTIVES:
        raise ValueError(
            f"unknown objective {name!r}; known objectives: {', '.join(OBJECTIVES)} "
            "(latency@BxS, e.g. latency@32x128, for latency at another batch x sequence length)"
        )
    return OBJECTIVES[name]


def objective_names(text: str) -> tuple[str, ...]:
    """Parse a comma-separated objective list such as ``"accuracy,latency@32x128"`` into canonical names."""
    names = tuple(get_objective(part.strip()).name for part in text.split(",") if part.strip())
    if not names:
        raise ValueError(f"objectives={text!r} names no objective; known objectives: {', '.join(OBJECTIVES)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"objectives={text!r} repeats {', '.join(repeated)}")
    return names


def _objectives(names: Sequence[str]) -> list[Objective]:
    if isinstance(names, str):
        raise TypeError(f"names={names!r} must be a sequence of objective names, not a string")
    objectives = [get_objective(name) for name in names]
    if not objectives:
        raise ValueError("names must name at least one objective")
    return objectives


def usable(results: Iterable[EvalResult], names: Sequence[str]) -> list[EvalResult]:
    """The ``ok`` results that carry every objective in ``names`` and beat the majority rate on each accuracy
    objective that records one, in their given order."""
    objectives = _objectives(names)
    return [r for r in results if r.status == "ok" and all(_useful(o, r) for o in objectives)]


def _useful(objective: Objective, result: EvalResult) -> bool:
    value = objective.read(result)
    if value is None:
        return False
    majority = objective.majority(result) if objective.majority is not None else None
    return majority is None or value > majority


def majority_value(results: Iterable[EvalResult], name: str) -> float | None:
    """The majority-label rate of objective ``name`` recorded in the results (the largest seen), or None."""
    objective = get_objective(name)
    if objective.majority is None:
        return None
    values = [value for result in results if (value := objective.majority(result)) is not None]
    return max(values) if values else None


def objective_matrix(results: Iterable[EvalResult], names: Sequence[str]) -> np.ndarray:
    """An ``(n, len(names))`` float array in minimisation form, one row per :func:`usable` result, in order."""
    objectives = _objectives(names)
    rows = [[o.sign * o.read(r) for o in objectives] for r in usable(results, names)]
    return np.array(rows, dtype=float).reshape(len(rows), len(objectives))


def _check_points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"points must be a 2-D (n_points, n_objectives) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        rows = np.flatnonzero(~np.isfinite(array).all(axis=1)).tolist()
        raise ValueError(f"points must be finite; rows {rows} are not")
    return array


def non_dominated(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Ascending indices of the rows of ``points`` (minimisation form) that no other row dominates.

    Exact duplicates do not dominate each other, so all copies of a frontier point are returned. An empty
    ``(0, d)`` input gives an empty index array.
    """
    array = _check_points(points)
    keep = np.ones(len(array), dtype=bool)
    for index, point in enumerate(array):
        no_worse = (array <= point).all(axis=1)
        better = (array < point).any(axis=1)
        keep[index] = not (no_worse & better).any()
    return np.flatnonzero(keep)


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], reference: np.ndarray | Sequence[float]) -> float:
    """The volume dominated by ``points`` and bounded by ``reference``, both in minimisation form (pymoo's HV).

    No points give 0.0; points not strictly better than ``reference`` in every objective add nothing.
    """
    array = _check_points(points)
    bound = np.asarray(reference, dtype=float)
    if bound.ndim != 1 or not np.isfinite(bound).all():
        raise ValueError(f"reference={reference!r} must be a 1-D sequence of finite numbers")
    if array.shape[1] != len(bound):
        raise ValueError(f"points have {array.shape[1]} objectives but reference={bound.tolist()} has {len(bound)}")
    inside = array[(array < bound).all(axis=1)]
    return float(HV(ref_point=bound)(inside)) if len(inside) else 0.0


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"reference value {name}={value!r} must be a finite number")
    return float(value)


def reference_point(names: Sequence[str], reference: Mapping[str, float]) -> np.ndarray:
    """The minimisation-form reference vector for ``names`` from natural-unit values (extra keys are ignored)."""
    objectives = _objectives(names)
    given = {get_objective(key).name: value for key, value in reference.items()}
    missing = [o.name for o in objectives if o.name not in given]
    if missing:
        raise ValueError(f"reference={dict(reference)!r} lacks {', '.join(missing)}")
    return np.array([o.sign * _finite(o.name, given[o.name]) for o in objectives], dtype=float)


def teacher_value(results: Iterable[EvalResult], name: str) -> float | None:
    """The teacher's value of objective ``name`` as recorded in the results (largest one seen), or None.

    Known for the accuracy objectives, ``latency`` and ``speedup`` (1 wherever a speed-up was measured); results do
    not record the teacher's params or size.
    """
    objective = get_objective(name)
    teacher_sets = {"ood_accuracy": "teacher_ood_dev_accuracy", "ood_test_accuracy": "teacher_ood_accuracy"}
    values: list[float] = []
    for result in results:
        if objective.name == "accuracy":
            value = result.teacher_validation_accuracy
        elif objective.name == "test_accuracy":
            value = result.teacher_accuracy
        elif objective.name in teacher_sets:
            teacher = getattr(result, teacher_sets[objective.name])
            value = sum(teacher.values()) / len(teacher) if teacher else None
        elif objective.point is not None:
            value = next((p.teacher_median_ms for p in result.latency if (p.batch, p.seq_len) == objective.point), None)
        elif objective.name == "speedup":
            value = None if objective.read(result) is None else 1.0
        else:
            value = None
        if value is not None:
            values.append(float(value))
    return max(values) if values else None


def default_reference(
    results: Iterable[EvalResult], names: Sequence[str], given: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The reference point in natural units: ``given`` values where present, the module's defaults elsewhere.

    Raises ValueError when a default cannot be derived (e.g. no result records the teacher's latency).
    """
    results = list(results)
    chosen = {get_objective(key).name: _finite(key, value) for key, value in (given or {}).items()}
    reference: dict[str, float] = {}
    for objective in _objectives(names):
        if objective.name in chosen:
            reference[objective.name] = chosen[objective.name]
        elif objective.direction == "up":
            majority = majority_value(results, objective.name)
            reference[objective.name] = objective.floor if majority is None else majority
        elif objective.point is not None:
            teacher = teacher_value(results, objective.name)
            if teacher is None:
                raise ValueError(
                    f"cannot choose a reference for {objective.name}: none of the {len(results)} evaluations records "
                    f"the teacher's latency there; give one, e.g. {objective.name}=20"
                )
            reference[objective.name] = teacher
        else:
            values = [v for r in results if r.status == "ok" and (v := objective.read(r)) is not None]
            if not values:
                raise ValueError(
                    f"cannot choose a reference for {objective.name}: none of the {len(results)} evaluations "
                    f"records it; give one, e.g. {objective.name}=1e8"
                )
            reference[objective.name] = float(math.ceil(SIZE_MARGIN * max(values)))
    return reference


def hypervolume_trace(
    results_in_order: Iterable[EvalResult], names: Sequence[str], reference: Mapping[str, float]
) -> list[float]:
    """One value per evaluation: the hypervolume of the usable evaluations up to it (never decreasing).

    A failed, invalid or incomplete evaluation (see :func:`usable`) repeats the previous value (0.0 at the start).
    """
    bound = reference_point(names, reference)
    objectives = _objectives(names)
    front = np.empty((0, len(objectives)))
    trace: list[float] = []
    for result in results_in_order:
        value = trace[-1] if trace else 0.0
        if usable([result], names):
            point = np.array([[o.sign * o.read(result) for o in objectives]])
            dominated = ((front <= point).all(axis=1) & (front < point).any(axis=1)).any()
            if not dominated and (point < bound).all():
                front = np.vstack([front, point])
                front = front[non_dominated(front)]
                # Adding a non-dominated point inside the box can only grow the volume; max() absorbs round-off.
                value = max(value, hypervolume(front, bound))
        trace.append(value)
    return trace


def most_trained(results: Iterable[EvalResult]) -> list[EvalResult]:
    """One result per candidate: the one trained for the most steps (a multi-fidelity run evaluates a candidate at
    several rungs; its frontier point is its highest rung). Order of first appearance is kept; among equal step
    counts the later result wins."""
    chosen: dict[str, EvalResult] = {}
    for result in results:
        key = result.candidate.content_hash()
        held = chosen.get(key)
        if held is None or (result.train_steps or 0) >= (held.train_steps or 0):
            chosen[key] = result
    return list(chosen.values())


def frontier(results: Iterable[EvalResult], names: Sequence[str]) -> list[EvalResult]:
    """The non-dominated :func:`usable` results, best first by the first objective (ties: the next, then hash)."""
    kept = usable(results, names)
    points = objective_matrix(kept, names)
    indices = non_dominated(points)
    order = sorted(indices, key=lambda i: (*points[i], kept[i].candidate.content_hash()))
    return [kept[i] for i in order]


def frontier_table(results: Iterable[EvalResult], names: Sequence[str]) -> pd.DataFrame:
    """The :func:`frontier` as a table: candidate summary and hash, the objectives, then every metric.

    Objective columns are in natural units and named by objective; metric columns are those of
    :func:`envs.rewards.result_metrics` (``status`` and ``error`` dropped: every row is ``ok``), its test accuracy
    ``accuracy`` named ``test_accuracy`` so it neither overwrites nor is mistaken for the ``accuracy`` objective
    (validation accuracy).
    """
    objectives = _objectives(names)
    rows = []
    for result in frontier(results, names):
        metrics = result_metrics(result)
        del metrics["status"], metrics["error"]
        metrics = {("test_accuracy" if key == "accuracy" else key): value for key, value in metrics.items()}
        rows.append(
            {
                "candidate": result.candidate.summary(),
                "candidate_hash": result.candidate.content_hash(),
                **{o.name: o.read(result) for o in objectives},
                **metrics,
            }
        )
    columns = ["candidate", "candidate_hash", *(o.name for o in objectives)]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
