"""Build KD-Bench: evaluate every candidate of the bench space live and write the shipped table, resumably.

:func:`build_plan` orders the work: the space's trainings (a candidate and its int8 twin share one) in a seeded random
order, so a partial table is a uniform sample of the space; the first :data:`NOISE_TRAININGS` of them are run again
with seed :data:`NOISE_SEED` right after they are done, so a partial table already measures its seed noise.
:func:`build_bench` evaluates what the table at ``path`` does not hold yet and rewrites the table (atomically) after
every result, so an interrupted build, on this machine or on a fresh clone holding the committed table, continues
where the file stops. Each run of the builder adds a session (host, CPU, rows added, CPU and wall seconds) to the
table's build record.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from distilsearch.envs.bench_table import BenchTable, write_bench_table
from distilsearch.envs.evaluators import BatchEvaluator, Evaluator, GroupBatchEvaluator, parallelism_of
from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.core.versions import runtime_versions
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

NOISE_TRAININGS = 30
NOISE_SEED = 1
PLAN_SEED = 0
BENCH_FIDELITY = "full"


def training_key(candidate: Candidate) -> str:
    """Candidates with the same key train the same fp32 weights (they differ only in fp32 vs int8 deployment)."""
    if candidate.spec.weight_bits == 2:
        return candidate.content_hash()
    fp32 = candidate.model_copy(update={"spec": candidate.spec.model_copy(update={"weight_bits": 32})})
    return fp32.content_hash()


def build_plan(
    space: SearchSpace, noise_trainings: int = NOISE_TRAININGS, seed: int = PLAN_SEED, noise_seed: int = NOISE_SEED
) -> list[Candidate]:
    """Every candidate of ``space``, twins adjacent (fp32 first) in a seeded random order of trainings; the first
    ``noise_trainings`` trainings of that order are followed by the same trainings again with ``noise_seed``, then
    come the rest."""
    groups: dict[str, list[Candidate]] = {}
    for choices in space.enumerate_valid():
        candidate = space.decode(choices)
        groups.setdefault(training_key(candidate), []).append(candidate)
    if not 0 <= noise_trainings <= len(groups):
        raise ValueError(f"noise_trainings={noise_trainings} must be between 0 and the {len(groups)} trainings")
    ordered = [groups[key] for key in np.random.default_rng(seed).permutation(sorted(groups))]
    ordered = [sorted(group, key=lambda c: -c.spec.weight_bits) for group in ordered]
    primary = [candidate for group in ordered for candidate in group]
    noise = [
        candidate.model_copy(update={"kd": candidate.kd.model_copy(update={"seed": noise_seed})})
        for group in ordered[:noise_trainings]
        for candidate in group
    ]
    first = sum(len(group) for group in ordered[:noise_trainings])
    return primary[:first] + noise + primary[first:]


@dataclass(frozen=True)
class BuildReport:
    """What one run of the builder did, and what is left."""

    path: Path
    rows: int
    added: int
    remaining: int
    cpu_seconds: float
    wall_seconds: float
    build: dict[str, Any]


def hardware() -> dict[str, Any]:
    """The machine a session ran on: CPU model and count, platform."""
    model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_model": model or platform.processor() or None,
        "cpus": os.cpu_count(),
    }


def _check_existing(table: BenchTable, evaluator: Evaluator, space: SearchSpace) -> None:
    table.check_space(space)
    for name in ("task", "teacher_key"):
        ours, theirs = getattr(evaluator, name), getattr(table.evaluator, name)
        if ours != theirs:
            raise ValueError(
                f"{table.path} was built with {name}={theirs!r}; this evaluator has {name}={ours!r}: "
                "continue it with the same teacher, or build a new table with --out"
            )


def _annotated(result: EvalResult, machine: dict[str, Any]) -> EvalResult:
    """The result with the machine it ran on and its load average when it was stored (latency is only as quiet as the
    machine)."""
    load = [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return result.model_copy(update={"provenance": result.provenance | {"hardware": machine, "load_average": load}})


def _trainings(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """``candidates`` cut into runs of consecutive candidates that share one training (twins; a seed is its own)."""
    groups: list[list[Candidate]] = []
    for candidate in candidates:
        key = (training_key(candidate), candidate.kd.seed)
        if groups and (training_key(groups[-1][0]), groups[-1][0].kd.seed) == key:
            groups[-1].append(candidate)
        else:
            groups.append([candidate])
    return groups


def _chunks(todo: Sequence[Candidate], evaluator: Evaluator) -> list[list[Candidate]]:
    """The candidates evaluated together: as many whole trainings as the evaluator runs at once."""
    step = parallelism_of(evaluator)
    trainings = _trainings(todo)
    return [[c for group in trainings[start : start + step] for c in group] for start in range(0, len(trainings), step)]


def _evaluate_chunk(evaluator: Evaluator, chunk: list[Candidate]) -> list[EvalResult]:
    """Evaluate ``chunk``: twins on one worker, in order, where the evaluator can keep them together."""
    if isinstance(evaluator, GroupBatchEvaluator):
        return [result for group in evaluator.evaluate_groups(_trainings(chunk)) for result in group]
    if isinstance(evaluator, BatchEvaluator) and len(chunk) > 1:
        return evaluator.evaluate_many(chunk)
    return [evaluator.evaluate(candidate) for candidate in chunk]


def build_bench(
    evaluator: Evaluator,
    space: SearchSpace,
    path: Path,
    *,
    plan: Sequence[Candidate] | None = None,
    max_new: int | None = None,
    on_result: Callable[[EvalResult, int, int], None] | None = None,
) -> BuildReport:
    """Evaluate the candidates of ``plan`` (default :func:`build_plan`) that the table at ``path`` lacks, rewriting
    the table after each result; at most ``max_new`` new rows in this run. ``evaluator`` must evaluate at the
    ``full`` level (each candidate's own budget); a :class:`BatchEvaluator` (e.g. a RayEvaluator) gets as many
    trainings at once as it runs in parallel, a twin beside its fp32 twin on one worker where it is a
    :class:`GroupBatchEvaluator`. ``on_result(result, done, total)`` is called after each stored row.
    """
    if evaluator.fidelity != BENCH_FIDELITY:
        raise ValueError(f"a bench is built at the {BENCH_FIDELITY!r} level, not {evaluator.fidelity!r}")
    if max_new is not None and (isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1):
        raise ValueError(f"max_new={max_new!r} must be a positive int")
    plan = list(build_plan(space) if plan is None else plan)
    rows: list[EvalResult] = []
    build: dict[str, Any] = {"task": evaluator.task, "teacher_key": evaluator.teacher_key, "sessions": []}
    if path.exists():
        table = BenchTable.load(path)
        _check_existing(table, evaluator, space)
        rows = table.results()
        build = table.build | {"sessions": list(table.build.get("sessions", []))}
    done = {row.candidate.content_hash() for row in rows}
    todo = [candidate for candidate in plan if candidate.content_hash() not in done]
    if max_new is not None:
        todo = todo[:max_new]
    session: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "versions": runtime_versions(),
        "rows_added": 0,
        "cpu_seconds": 0.0,
        "wall_seconds": 0.0,
    }
    previous = list(build.get("sessions", []))
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    total = len(done) + len(todo)
    for chunk in _chunks(todo, evaluator):
        results = _evaluate_chunk(evaluator, chunk)
        for planned, result in zip(chunk, results, strict=True):
            if result.candidate.content_hash() != planned.content_hash():
                raise RuntimeError(
                    f"the evaluator trained {result.candidate.content_hash()} for planned candidate "
                    f"{planned.content_hash()}: it changes candidates' budgets, so it cannot build a bench"
                )
            rows.append(_annotated(result, session["hardware"]))
        session |= {
            "rows_added": session["rows_added"] + len(chunk),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            "wall_seconds": round(time.perf_counter() - wall_start, 1),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        build["sessions"] = [*previous, dict(session)]
        write_bench_table(
            rows,
            path,
            space=space,
            task=evaluator.task,
            teacher_key=evaluator.teacher_key,
            fidelity=BENCH_FIDELITY,
            build=build,
        )
        if on_result is not None:
            for stored, result in enumerate(results, start=len(rows) - len(results) + 1):
                on_result(result, stored, total)
    stored = {row.candidate.content_hash() for row in rows}
    remaining = sum(candidate.content_hash() not in stored for candidate in plan)
    return BuildReport(
        path=path,
        rows=len(rows),
        added=session["rows_added"],
        remaining=remaining,
        cpu_seconds=session["cpu_seconds"],
        wall_seconds=session["wall_seconds"],
        build=build,
    )
