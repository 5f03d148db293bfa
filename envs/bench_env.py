"""KD-Bench as the environments' default: the evaluator and space an environment gets when the caller omits them.

:func:`bench_setup` fills in what the caller left out from a bench table (default: the shipped
:data:`~distilsearch.envs.bench_table.BENCH_TABLE`): the space is the one the table records, and a space the caller
gives must be that one (:class:`~distilsearch.envs.bench_table.BenchTableError` naming both hashes, at construction).
The evaluator replays the table's rows; while the table lacks some candidates of its space (it is built row by row),
a :class:`~distilsearch.envs.surrogate.SurrogateEvaluator` fitted on its rows answers for them -- results marked
``{"surrogate": ...}`` in their provenance -- and the setup warns (:class:`IncompleteBenchWarning`).

Simulated cost: a result costs the ``train_seconds + eval_seconds`` it records (:func:`recorded_seconds`), what the
evaluation took when the table was built. A result that records neither (a surrogate prediction) is charged the median
cost of the table's measured candidates (``unrecorded_seconds``; 0 when the caller's own evaluator is used).
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

from distilsearch.envs.bench_table import BENCH_TABLE, BenchTable, BenchTableError
from distilsearch.envs.evaluators import Evaluator
from distilsearch.envs.space import SearchSpace
from distilsearch.envs.surrogate import SurrogateEvaluator
from distilsearch.kdlib.students.candidate import EvalResult


class IncompleteBenchWarning(UserWarning):
    """The bench table lacks some candidates of its space: surrogate predictions answer for them."""


@dataclass(frozen=True)
class BenchSetup:
    """What an environment evaluates with: ``evaluator`` over ``space``, and the simulated seconds charged for a result
    that records no cost (a surrogate prediction)."""

    evaluator: Evaluator
    space: SearchSpace
    unrecorded_seconds: float


def recorded_seconds(result: EvalResult) -> float | None:
    """``train_seconds + eval_seconds`` of ``result`` (a missing one counts 0), or None when it records neither."""
    if result.train_seconds is None and result.eval_seconds is None:
        return None
    return (result.train_seconds or 0.0) + (result.eval_seconds or 0.0)


def load_bench(path: str | Path | None = None) -> BenchTable:
    """The bench table at ``path`` (default: the shipped one); a clear :class:`BenchTableError` when it is absent."""
    path = BENCH_TABLE if path is None else Path(path)
    if not path.is_file():
        build = "distilsearch bench build" + ("" if path == BENCH_TABLE else f" --out {path}")
        raise BenchTableError(
            f"the KD-Bench table {path} does not exist: build it with `{build}` (it trains every candidate of the "
            "bench space and can be resumed), or give the environment evaluator= and space="
        )
    return BenchTable.load(path)


def bench_setup(
    evaluator: Evaluator | None = None, space: SearchSpace | None = None, table: str | Path | None = None
) -> BenchSetup:
    """Fill in a missing ``evaluator`` and/or ``space`` from the bench table ``table`` (default: the shipped one).

    With both given, the table is not read (and ``table`` must not be given). A given ``space`` must be the table's
    own. The default evaluator predicts the candidates the table lacks with a surrogate, warning
    ``"KD-Bench holds n of N candidates; the others are surrogate predictions"`` once per call.
    """
    if evaluator is not None and space is not None:
        if table is not None:
            raise ValueError(f"table={str(table)!r} is unused when evaluator= and space= are both given; drop one")
        return BenchSetup(evaluator, space, 0.0)
    bench = load_bench(table)
    if space is None:
        space = bench.space
    else:
        bench.check_space(space)
    if evaluator is not None:
        return BenchSetup(evaluator, space, 0.0)
    measured = bench.in_space()
    costs = [seconds for seconds in map(recorded_seconds, measured.values()) if seconds is not None]
    unrecorded = statistics.median(costs) if costs else 0.0
    missing = len(bench.missing())
    if missing:
        try:
            bench.evaluator.fallback = SurrogateEvaluator.from_table(bench.evaluator)
        except ValueError as error:
            raise BenchTableError(f"{bench.path}: cannot predict the {missing} missing candidates ({error})") from None
        total = bench.space.num_valid()
        warnings.warn(
            f"KD-Bench holds {total - missing} of {total} candidates; the others are surrogate predictions "
            f"(table {bench.path})",
            IncompleteBenchWarning,
            stacklevel=2,
        )
    return BenchSetup(bench.evaluator, space, unrecorded)
