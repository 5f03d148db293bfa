"""Evaluators turn a Candidate into an EvalResult: the :class:`Evaluator` protocol and a benchmark-table replay
(:class:`TableEvaluator`); :mod:`distilsearch.envs.surrogate` predicts candidates a table does not hold.

Benchmark tables (CSV or Parquet, chosen by the file suffix) hold one row per candidate; :func:`write_table` writes
them from EvalResults. Columns:

* ``candidate_hash`` -- ``Candidate.content_hash()``, the lookup key;
* ``candidate`` -- the Candidate as JSON. When absent, the candidate is rebuilt from the flattened ``spec.<field>``
  and ``kd.<field>`` columns (always written too, for analysis with pandas);
* ``task``, ``teacher_key``, ``fidelity`` -- what was measured, equal on every row;
* ``status``, ``error``, ``accuracy``, ``validation_accuracy``, ``teacher_accuracy``,
  ``teacher_validation_accuracy``, ``majority_validation_accuracy``, ``majority_test_accuracy``, ``flops``,
  ``params_total``, ``params_non_embedding``, ``size_bytes``,
  ``peak_memory_bytes``, ``train_seconds``, ``train_steps``, ``curve_seconds``, ``eval_seconds``, ``student_path``
  -- as in EvalResult (empty when absent);
* ``ood_accuracy``, ``ood_dev_accuracy``, ``teacher_ood_accuracy``, ``teacher_ood_dev_accuracy``,
  ``learning_curve``, ``latency``, ``provenance`` -- JSON text of those EvalResult fields.

Fidelity per request: evaluators that can train a candidate at several budgets implement
:class:`MultiFidelityEvaluator` (``evaluate(candidate, fidelity)`` and ``cost_steps``, the steps an evaluation
trains). A table replays its own fidelity and, from the rows' learning curves, any ``rung-<N>`` level whose step is a
recorded checkpoint (:meth:`TableEvaluator.evaluate`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from distilsearch.envs.fidelity import Fidelity, get_fidelity
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

META_COLUMNS = ("task", "teacher_key", "fidelity")
SCALAR_COLUMNS = (
    "status",
    "error",
    "accuracy",
    "validation_accuracy",
    "teacher_accuracy",
    "teacher_validation_accuracy",
    "majority_validation_accuracy",
    "majority_test_accuracy",
    "flops",
    "params_total",
    "params_non_embedding",
    "size_bytes",
    "peak_memory_bytes",
    "train_seconds",
    "train_steps",
    "curve_seconds",
    "eval_seconds",
    "student_path",
)
INT_COLUMNS = frozenset({"params_total", "params_non_embedding", "size_bytes", "peak_memory_bytes", "train_steps"})
JSON_COLUMNS = (
    "ood_accuracy",
    "ood_dev_accuracy",
    "teacher_ood_accuracy",
    "teacher_ood_dev_accuracy",
    "learning_curve",
    "latency",
    "provenance",
)
TEXT_COLUMNS = ("status", "error", "student_path", *JSON_COLUMNS)
SUFFIXES = (".csv", ".parquet")


@runtime_checkable
class Evaluator(Protocol):
    """Anything that evaluates candidates; ``task``, ``teacher_key`` and ``fidelity`` key the evaluation store."""

    fidelity: str
    task: str
    teacher_key: str

    def evaluate(self, candidate: Candidate) -> EvalResult:
        """Evaluate one candidate."""
        ...


@runtime_checkable
class BatchEvaluator(Evaluator, Protocol):
    """An evaluator that runs several candidates at once, e.g. on a pool of workers
    (:class:`~distilsearch.envs.ray_evaluator.RayEvaluator`); ``parallelism`` is how many it can run at the same
    time."""

    @property
    def parallelism(self) -> int:
        """Candidates evaluated at the same time (at least 1)."""
        ...

    def evaluate_many(self, candidates: Sequence[Candidate]) -> list[EvalResult]:
        """Evaluate ``candidates`` (in parallel where possible); results in input order."""
        ...


@runtime_checkable
class GroupBatchEvaluator(BatchEvaluator, Protocol):
    """A :class:`BatchEvaluator` that can keep candidates together: each group runs in order on one worker, so its
    later members can reuse what the first trained (e.g. an int8 twin measured from its fp32 twin's weights)."""

    def evaluate_groups(self, groups: Sequence[Sequence[Candidate]]) -> list[list[EvalResult]]:
        """Evaluate each group in order on one worker, the groups in parallel; results group by group."""
        ...


@runtime_checkable
class MultiFidelityEvaluator(Evaluator, Protocol):
    """An evaluator that trains a candidate at any of several budgets and prices each in training steps."""

    def evaluate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> EvalResult:
        """Evaluate one candidate at ``fidelity`` (None: the evaluator's own level)."""
        ...

    def cost_steps(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> int:
        """The training steps that evaluation runs."""
        ...


def parallelism_of(evaluator: Evaluator) -> int:
    """How many candidates ``evaluator`` evaluates at the same time: 1 unless it is a :class:`BatchEvaluator`."""
    return max(1, int(evaluator.parallelism)) if isinstance(evaluator, BatchEvaluator) else 1


class CandidateNotInTableError(LookupError):
    """A TableEvaluator without fallback was asked for a candidate its table does not hold."""

    def __init__(self, candidate: Candidate, path: Path) -> None:
        self.candidate = candidate
        self.path = path
        spec = candidate.spec
        super().__init__(
            f"candidate {candidate.content_hash()} (num_layers={spec.num_layers}, hidden_size={spec.hidden_size}, "
            f"num_heads={spec.num_heads}, ffn_size={spec.ffn_size}) is not in the table {path}; "
            "give the TableEvaluator a fallback evaluator to evaluate candidates outside it"
        )


def _suffix(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: table files must end in one of {SUFFIXES}, not {path.suffix!r}")
    return path.suffix


def _flat_candidate(candidate: Candidate) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for prefix, model in (("spec", candidate.spec), ("kd", candidate.kd)):
        for name, value in model.model_dump(mode="json").items():
            flat[f"{prefix}.{name}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def result_row(result: EvalResult, task: str, teacher_key: str, fidelity: str) -> dict[str, Any]:
    """One table row (see the module docstring) for an EvalResult."""
    data = result.model_dump(mode="json")
    row: dict[str, Any] = {
        "candidate_hash": result.candidate.content_hash(),
        "candidate": result.candidate.model_dump_json(),
        "task": task,
        "teacher_key": teacher_key,
        "fidelity": fidelity,
    }
    row.update({name: data[name] for name in SCALAR_COLUMNS})
    row.update({name: json.dumps(data[name], sort_keys=True) for name in JSON_COLUMNS})
    row.update(_flat_candidate(result.candidate))
    return row


def write_table(results: Iterable[EvalResult], path: str | Path, *, task: str, teacher_key: str, fidelity: str) -> Path:
    """Write EvalResults as a benchmark table (CSV or Parquet by suffix), atomically; returns the path."""
    path = Path(path)
    suffix = _suffix(path)
    rows = [result_row(result, task, teacher_key, fidelity) for result in results]
    if not rows:
        raise ValueError(f"{path}: no results to write")
    seen: dict[str, int] = {}
    for position, row in enumerate(rows):
        if row["candidate_hash"] in seen:
            raise ValueError(f"results {seen[row['candidate_hash']]} and {position} hold the same candidate")
        seen[row["candidate_hash"]] = position
    frame = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        if suffix == ".csv":
            frame.to_csv(tmp_name, index=False)
        else:
            frame.to_parquet(tmp_name, index=False)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return path


def _cell(value: Any) -> Any:
    """A table cell as a plain Python value; missing cells (NaN, None, empty text) become None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value == "":
        return None
    return value.item() if isinstance(value, np.generic) else value


class TableEvaluator:
    """Replays a benchmark table: ``evaluate`` returns the stored result of a candidate, found by content hash.

    A candidate not in the table raises :class:`CandidateNotInTableError`, or goes to ``fallback`` when one is given
    (its result then carries the fallback's provenance, e.g. ``{"surrogate": ...}``); nothing is ever invented.
    ``hits`` and ``misses`` count lookups. ``task`` / ``teacher_key`` default to the table's columns; given
    explicitly, they must match them.
    """

    def __init__(
        self,
        path: str | Path,
        fallback: Evaluator | None = None,
        task: str | None = None,
        teacher_key: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.fallback = fallback
        try:
            if _suffix(self.path) == ".csv":
                text = {name: str for name in ("candidate_hash", "candidate", *META_COLUMNS, *TEXT_COLUMNS)}
                frame = pd.read_csv(self.path, dtype=text, keep_default_na=False, na_values=[""])
            else:
                frame = pd.read_parquet(self.path)
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.path}: not a readable benchmark table ({error})") from None
        self._rows: list[dict[str, Any]] = [
            {name: _cell(value) for name, value in row.items()} for row in frame.to_dict("records")
        ]
        if not self._rows:
            raise ValueError(f"{self.path}: the table has no rows")
        meta = {name: self._meta(name) for name in META_COLUMNS}
        for name, given in (("task", task), ("teacher_key", teacher_key)):
            if given is not None and meta[name] not in (None, given):
                raise ValueError(f"{self.path}: the table's {name} is {meta[name]!r}, not {given!r}")
            meta[name] = given if given is not None else meta[name]
            if meta[name] is None:
                raise ValueError(f"{self.path}: the table has no {name!r} column; pass {name}=...")
        self.task: str = meta["task"]
        self.teacher_key: str = meta["teacher_key"]
        self.fidelity: str = meta["fidelity"] if meta["fidelity"] is not None else "table"
        if fallback is not None and (fallback.task, fallback.teacher_key) != (self.task, self.teacher_key):
            raise ValueError(
                f"the fallback evaluates task={fallback.task!r}, teacher_key={fallback.teacher_key!r} but the table "
                f"holds task={self.task!r}, teacher_key={self.teacher_key!r}"
            )
        self._results: dict[int, EvalResult] = {}
        self._memo: dict[Candidate, EvalResult] = {}
        self._by_hash: dict[str, int] = {}
        for position, row in enumerate(self._rows):
            try:
                key = row.get("candidate_hash") or self._materialise(position).candidate.content_hash()
            except ValueError as error:
                raise ValueError(f"{self.path}: row {position} is not a valid evaluation ({error})") from None
            if key in self._by_hash:
                raise ValueError(f"{self.path}: rows {self._by_hash[key]} and {position} both hold candidate {key}")
            self._by_hash[key] = position
        self.hits = 0
        self.misses = 0

    def _meta(self, name: str) -> str | None:
        values = {row.get(name) for row in self._rows}
        if len(values) > 1:
            raise ValueError(f"{self.path}: the table mixes several {name} values {sorted(map(str, values))}")
        (value,) = values
        return None if value is None else str(value)

    def _candidate(self, row: Mapping[str, Any], position: int) -> Candidate:
        if row.get("candidate") is not None:
            return Candidate.model_validate_json(row["candidate"])
        parts: dict[str, dict[str, Any]] = {"spec": {}, "kd": {}}
        for column, value in row.items():
            prefix, _, name = column.partition(".")
            if prefix in parts and name:
                parts[prefix][name] = json.loads(value) if name == "layers" and isinstance(value, str) else value
        if not parts["spec"]:
            raise ValueError(f"{self.path}: row {position} has neither a 'candidate' nor 'spec.*' columns")
        return Candidate.model_validate(parts)

    def _materialise(self, position: int) -> EvalResult:
        if position in self._results:
            return self._results[position]
        row = self._rows[position]
        try:
            candidate = self._candidate(row, position)
            fields: dict[str, Any] = {name: row.get(name) for name in SCALAR_COLUMNS}
            for name in INT_COLUMNS:
                if fields[name] is not None:
                    fields[name] = int(fields[name])
            for name in JSON_COLUMNS:
                if row.get(name) is not None:
                    fields[name] = json.loads(row[name])
            result = EvalResult(candidate=candidate, **{k: v for k, v in fields.items() if v is not None})
        except ValueError as error:
            raise ValueError(f"{self.path}: row {position} is not a valid result: {error}") from error
        stored = row.get("candidate_hash")
        if stored is not None and stored != candidate.content_hash():
            raise ValueError(
                f"{self.path}: row {position} has candidate_hash {stored} but its candidate hashes to "
                f"{candidate.content_hash()}; the table is stale or was edited"
            )
        self._results[position] = result
        return result

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, candidate: object) -> bool:
        return isinstance(candidate, Candidate) and candidate.content_hash() in self._by_hash

    def results(self) -> list[EvalResult]:
        """Every stored result, in table order."""
        return [self._materialise(position) for position in range(len(self._rows))]

    def evaluate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> EvalResult:
        """The stored result of ``candidate``; a miss raises or is delegated to the fallback.

        At a ``rung-<N>`` level the result is replayed from the row's learning curve: validation and OOD-dev
        accuracy are the best checkpoint up to step N (what restoring the best validated weights keeps), test
        accuracies are absent (never measured there), ``train_steps`` is N; everything that does not depend on
        training (latency, FLOPs, parameters, size) is the row's.
        """
        if fidelity is not None and get_fidelity(fidelity).name != self.fidelity:
            return _at_rung(self._stored(candidate), get_fidelity(fidelity), self.path)
        return self._stored(candidate)

    def cost_steps(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> int:
        """The steps the row's (or the rung's) training ran; ``ValueError`` when the table does not record them."""
        result = self.evaluate(candidate, fidelity)
        if result.train_steps is None:
            raise ValueError(f"{self.path}: candidate {candidate.content_hash()} records no train_steps")
        return result.train_steps

    def _stored(self, candidate: Candidate) -> EvalResult:
        result = self._memo.get(candidate)
        if result is not None:
            self.hits += 1
            return result
        position = self._by_hash.get(candidate.content_hash())
        if position is None:
            self.misses += 1
            if self.fallback is None:
                raise CandidateNotInTableError(candidate, self.path)
            return self.fallback.evaluate(candidate)
        self.hits += 1
        result = self._materialise(position)
        self._memo[candidate] = result
        return result


def _at_rung(result: EvalResult, level: Fidelity, path: Path) -> EvalResult:
    """``result`` as its first ``level.stop_after`` steps left it, from the learning curve (see TableEvaluator)."""
    if level.stop_after is None:
        raise ValueError(f"{path} replays its own fidelity and rung-<N> levels, not {level.describe()}")
    if result.status != "ok":
        return result
    points = [point for point in result.learning_curve if point.step <= level.stop_after]
    if not points or points[-1].step != level.stop_after:
        recorded = [point.step for point in result.learning_curve]
        raise ValueError(
            f"{path}: candidate {result.candidate.content_hash()} has no learning-curve checkpoint at step "
            f"{level.stop_after} (recorded: {recorded})"
        )
    best = max(points, key=lambda point: point.validation_accuracy)
    return result.model_copy(
        update={
            "validation_accuracy": best.validation_accuracy,
            "ood_dev_accuracy": best.ood_dev_accuracy,
            "accuracy": None,
            "ood_accuracy": {},
            "majority_test_accuracy": None,
            "learning_curve": points,
            "train_steps": level.stop_after,
            "train_seconds": points[-1].train_seconds,
            "student_path": None,
        }
    )
