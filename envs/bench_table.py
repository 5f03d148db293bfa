"""KD-Bench's shipped table: a Parquet benchmark table that records the space it covers.

The file holds the rows of :func:`envs.evaluators.write_table` (one per evaluated candidate) plus ``seed`` and
``in_space`` columns, and three keys in the Parquet schema's metadata:

* ``distilsearch.space`` -- the JSON of the space's :meth:`~distilsearch.envs.space.SearchSpace.to_dict`;
* ``distilsearch.space_hash`` -- its :meth:`~distilsearch.envs.space.SearchSpace.space_hash`;
* ``distilsearch.build`` -- JSON: how the rows were made (build sessions, CPU seconds, hardware, versions).

Rows whose candidate belongs to the space (``in_space``) are what environments replay; the others are the same
candidates re-run with another seed (the noise level). :class:`BenchTable` loads a table, binds it to its space and
refuses a different one with an error naming both hashes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distilsearch.envs.evaluators import TableEvaluator, result_row
from distilsearch.envs.space import Choices, SearchSpace
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

BENCH_DIR = Path(__file__).with_name("kdbench")
BENCH_TABLE = BENCH_DIR / "rt-polarity.parquet"
SPACE_KEY = b"distilsearch.space"
SPACE_HASH_KEY = b"distilsearch.space_hash"
BUILD_KEY = b"distilsearch.build"


class BenchTableError(ValueError):
    """A bench table that cannot be read, or that does not cover the space it is used with."""


def space_choices(space: SearchSpace, candidate: Candidate) -> Choices | None:
    """The candidate's choice vector in ``space``, or None when it is not one of the space's candidates."""
    try:
        return space.encode(candidate)
    except ValueError:
        return None


def write_bench_table(
    results: Iterable[EvalResult],
    path: str | Path,
    *,
    space: SearchSpace,
    task: str,
    teacher_key: str,
    fidelity: str,
    build: Mapping[str, Any],
) -> Path:
    """Write ``results`` as a bench table bound to ``space`` (atomically: a crash leaves the previous file)."""
    path = Path(path)
    if path.suffix != ".parquet":
        raise BenchTableError(f"{path}: a bench table is a .parquet file")
    rows = []
    seen: set[str] = set()
    for result in results:
        row = result_row(result, task, teacher_key, fidelity)
        if row["candidate_hash"] in seen:
            raise BenchTableError(f"{path}: candidate {row['candidate_hash']} is given twice")
        seen.add(row["candidate_hash"])
        row["seed"] = result.candidate.kd.seed
        row["in_space"] = space_choices(space, result.candidate) is not None
        rows.append(row)
    if not rows:
        raise BenchTableError(f"{path}: no results to write")
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[SPACE_KEY] = json.dumps(space.to_dict()).encode()  # key order kept: it is the dimension order
    metadata[SPACE_HASH_KEY] = space.space_hash().encode()
    metadata[BUILD_KEY] = json.dumps(dict(build), sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".parquet", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(table, tmp_name)
        with open(tmp_name, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return path


@dataclass
class BenchTable:
    """A loaded bench table: its space, build record and rows (replayed through a :class:`TableEvaluator`)."""

    path: Path
    space: SearchSpace
    space_hash: str
    build: dict[str, Any]
    evaluator: TableEvaluator = field(repr=False)

    @classmethod
    def load(cls, path: str | Path = BENCH_TABLE) -> BenchTable:
        """Read a bench table; :class:`BenchTableError` when the file is missing, unreadable or has no space."""
        path = Path(path)
        if not path.is_file():
            raise BenchTableError(f"{path}: no bench table there (build one with `distilsearch bench build`)")
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, pa.ArrowInvalid) as error:
            raise BenchTableError(f"{path}: not a readable Parquet file ({error})") from None
        if SPACE_KEY not in metadata or SPACE_HASH_KEY not in metadata:
            raise BenchTableError(f"{path}: the table does not record its space; it is not a bench table")
        try:
            space = SearchSpace.from_dict(json.loads(metadata[SPACE_KEY]))
        except (ValueError, TypeError) as error:
            raise BenchTableError(f"{path}: the recorded space is not valid ({error})") from None
        recorded = metadata[SPACE_HASH_KEY].decode()
        if space.space_hash() != recorded:
            raise BenchTableError(
                f"{path}: the recorded space hashes to {space.space_hash()}, not to its recorded hash {recorded}"
            )
        build = json.loads(metadata.get(BUILD_KEY, b"{}"))
        return cls(path, space, recorded, build, TableEvaluator(path))

    def check_space(self, space: SearchSpace) -> None:
        """Raise :class:`BenchTableError` unless ``space`` is the table's own (same dimensions, fixed fields, teacher
        shape, constraints and limits), naming both hashes and the first difference."""
        if space.space_hash() == self.space_hash:
            return
        ours, theirs = self.space.to_dict(), space.to_dict()
        differing = [key for key in ours if ours[key] != theirs.get(key)]
        raise BenchTableError(
            f"the space {space.space_hash()} is not the space {self.space_hash} the table {self.path} covers "
            f"(they differ in {', '.join(differing) or 'dimension order'}); use BenchTable.load(...).space"
        )

    def results(self) -> list[EvalResult]:
        """Every row, in file order."""
        return self.evaluator.results()

    def in_space(self) -> dict[Choices, EvalResult]:
        """The rows of the space's candidates, by choice vector."""
        rows: dict[Choices, EvalResult] = {}
        for result in self.results():
            choices = space_choices(self.space, result.candidate)
            if choices is not None:
                rows[choices] = result
        return rows

    def missing(self) -> list[Choices]:
        """The space's candidates without a row, in enumeration order."""
        present = self.in_space()
        return [choices for choices in self.space.enumerate_valid() if choices not in present]

    @property
    def complete(self) -> bool:
        """Whether every candidate of the space has a row."""
        return not self.missing()

    def seed_pairs(self) -> list[tuple[EvalResult, EvalResult]]:
        """``(seed-0 row, other-seed row)`` pairs: the same candidate trained with two seeds."""
        by_hash = {result.candidate.content_hash(): result for result in self.in_space().values()}
        pairs = []
        for result in self.results():
            seed = self.space.fixed.get("seed", 0)
            if result.candidate.kd.seed == seed:
                continue
            twin = result.candidate.model_copy(update={"kd": result.candidate.kd.model_copy(update={"seed": seed})})
            base = by_hash.get(twin.content_hash())
            if base is not None:
                pairs.append((base, result))
        return pairs
