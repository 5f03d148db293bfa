"""A durable, multi-process store of evaluations: one SQLite row per (candidate, task, teacher, fidelity).

Durability: the database runs in WAL mode with ``synchronous=FULL``, so every committed row is fsynced to the
write-ahead log before ``put`` returns -- a crash of the writer (even ``kill -9`` mid-write) or of the machine
loses nothing already committed; an interrupted transaction is simply rolled back when the store is next
opened. ``NORMAL`` would only survive process crashes (the last commits can vanish on power loss), and the one
fsync per row is negligible next to the minutes of distillation each row stands for.

Concurrency: each process and thread opens its own connection (a connection inherited across ``fork`` is never
used), waits on locks for ``timeout_seconds`` (``busy_timeout``) and retries short ``BEGIN IMMEDIATE``
transactions that still see ``database is locked``. Leases (:meth:`EvaluationStore.claim`) keep several workers
from distilling the same candidate at once; a worker that dies leaves a lease that simply expires. WAL needs
every worker on one host (shared memory), so the store must not live on a network file system.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import random
import re
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict

from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, Status

SCHEMA_VERSION = 1
STORE_FILE = "store.sqlite"  # the store's name in a run folder (search.run_layout.STORE) and a Ray run's default
LATENCY_POINT = (1, 64)
STATUSES: tuple[str, ...] = get_args(Status)
EXPORT_SUFFIXES = (".csv", ".jsonl")
_HEX = re.compile(r"[0-9a-f]+")
_T = TypeVar("_T")

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE evaluations (
    key TEXT PRIMARY KEY,
    candidate TEXT NOT NULL,
    candidate_hash TEXT NOT NULL,
    task TEXT NOT NULL,
    teacher_key TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'invalid')),
    error TEXT,
    accuracy REAL,
    mean_ood_accuracy REAL,
    latency_ms REAL,
    params_total INTEGER,
    train_seconds REAL,
    student_path TEXT,
    result TEXT NOT NULL,
    created TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL
)""",
    "CREATE INDEX evaluations_task_status ON evaluations (task, status)",
    "CREATE INDEX evaluations_candidate_hash ON evaluations (candidate_hash)",
    "CREATE TABLE leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)",
)
_COLUMNS = (
    "key",
    "candidate",
    "candidate_hash",
    "task",
    "teacher_key",
    "fidelity",
    "status",
    "error",
    "accuracy",
    "mean_ood_accuracy",
    "latency_ms",
    "params_total",
    "train_seconds",
    "student_path",
    "result",
    "created",
    "host",
    "pid",
)


class StoreError(RuntimeError):
    """The store file is missing, is not an evaluation store, has an unsupported schema, or stayed locked."""


class StoreTimeoutError(StoreError):
    """Another worker kept its claim on a key for longer than the caller was willing to wait."""


def evaluation_key(candidate: Candidate, task: str, teacher_key: str, fidelity: str) -> str:
    """The 64-hex-digit key of one evaluation: sha256 of the candidate hash, task, teacher key and fidelity."""
    for name, value in (("task", task), ("teacher_key", teacher_key), ("fidelity", fidelity)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name}={value!r} must be a non-empty string")
    return sha256_json(
        {"candidate": candidate.content_hash(), "task": task, "teacher_key": teacher_key, "fidelity": fidelity}
    )


class StoredEvaluation(BaseModel):
    """One stored row: the full :class:`EvalResult` plus its queryable columns and who wrote it when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    candidate_hash: str
    task: str
    teacher_key: str
    fidelity: str
    status: Status
    error: str | None
    accuracy: float | None
    mean_ood_accuracy: float | None
    latency_ms: float | None
    params_total: int | None
    train_seconds: float | None
    student_path: str | None
    created: str
    host: str
    pid: int
    result: EvalResult

    @property
    def candidate(self) -> Candidate:
        """The evaluated candidate."""
        return self.result.candidate

    def flat(self) -> dict[str, Any]:
        """The row's columns with the candidate as a JSON string (for CSV and tables)."""
        return self.model_dump(mode="json", exclude={"result"}) | {"candidate": self.candidate.model_dump_json()}


def _latency_ms(result: EvalResult) -> float | None:
    for point in result.latency:
        if (point.batch, point.seq_len) == LATENCY_POINT:
            return point.median_ms
    return None


def _is_locked(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive, finite number of seconds")


class EvaluationStore:
    """Evaluations keyed by :func:`evaluation_key`, shared safely by threads and processes on one host.

    ``create=False`` refuses to create a missing file or to turn an empty one into a store (for read-only tools).
    ``timeout_seconds`` bounds how long one operation waits for the database lock before raising
    :class:`StoreError`.
    """

    def __init__(self, path: str | Path, *, create: bool = True, timeout_seconds: float = 30.0) -> None:
        _check_positive("timeout_seconds", timeout_seconds)
        self.path = Path(path).expanduser()
        self.timeout_seconds = timeout_seconds
        if not self.path.exists():
            if not create:
                raise StoreError(f"no evaluation store at {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.create = create
        self._local = threading.local()
        self._inherited: list[sqlite3.Connection] = []
        self._nonce = uuid.uuid4().hex[:8]
        self._retry(self._initialise)

    def __reduce__(self) -> tuple[Callable[..., EvaluationStore], tuple[Path]]:
        """Pickle as the path and settings only: the copy opens its own connections wherever it is unpickled."""
        return functools.partial(type(self), timeout_seconds=self.timeout_seconds), (self.path,)

    def __repr__(self) -> str:
        return f"EvaluationStore({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection in this process, opened on first use (never one inherited across fork)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            inherited = getattr(local, "connection", None)
            if inherited is not None:
                # SQLite forbids using (even closing) a connection opened before fork: keep it alive, untouched.
                self._inherited.append(inherited)
            connection = sqlite3.connect(self.path, timeout=self.timeout_seconds, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout = {int(self.timeout_seconds * 1000)}")
            connection.execute("PRAGMA synchronous = FULL")
            local.connection, local.pid = connection, os.getpid()
        return local.connection

    def close(self) -> None:
        """Close this thread's connection; the next call in this thread opens a fresh one."""
        if getattr(self._local, "pid", None) == os.getpid():
            self._local.connection.close()
            del self._local.connection, self._local.pid

    def _retry(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        deadline = time.monotonic() + self.timeout_seconds
        delay = 0.005
        while True:
            try:
                return operation(self._connection())
            except sqlite3.OperationalError as error:
                if not _is_locked(error):
                    raise StoreError(f"evaluation store {self.path}: {error}") from error
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"evaluation store {self.path} stayed locked for {self.timeout_seconds:g} s: {error}"
                    ) from error
            except sqlite3.DatabaseError as error:
                raise StoreError(f"evaluation store {self.path}: {error}") from error
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)

    def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in one short ``BEGIN IMMEDIATE`` transaction, retried while the database is locked."""

        def transaction(connection: sqlite3.Connection) -> _T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                value = body(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return value

        return self._retry(transaction)

    def _initialise(self, connection: sqlite3.Connection) -> None:
        """Check the schema before touching the file (a foreign or newer database is left as it is), then
        switch to WAL and create the schema in one transaction if the file is new."""
        exists = self._check_schema(connection)
        if not exists and not self.create:
            raise StoreError(f"{self.path} is not an evaluation store (it holds no tables)")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"evaluation store {self.path} cannot use WAL mode (journal_mode={mode!r})")
        if not exists:
            self._write(self._create_schema_if_missing)

    def _check_schema(self, connection: sqlite3.Connection) -> bool:
        """True for a store of this schema version, False for an empty database; StoreError otherwise."""
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                names = ", ".join(sorted(tables))
                raise StoreError(f"{self.path} is an SQLite database but not an evaluation store (tables: {names})")
            return False
        version = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            hint = "upgrade distilsearch to read it" if newer else "it was not written by distilsearch"
            raise StoreError(
                f"evaluation store {self.path} has schema version {version!r}, but this distilsearch reads only "
                f"version {SCHEMA_VERSION}; {hint}"
            )
        return True

    def _create_schema_if_missing(self, connection: sqlite3.Connection) -> None:
        if self._check_schema(connection):
            return
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def get(self, key: str) -> EvalResult | None:
        """The stored result of ``key``, or None when it was never stored."""
        row = self._retry(lambda c: c.execute("SELECT result FROM evaluations WHERE key = ?", (key,)).fetchone())
        return None if row is None else EvalResult.model_validate_json(row[0])

    def __getitem__(self, key: str) -> EvalResult:
        result = self.get(key)
        if result is None:
            raise KeyError(f"no evaluation with key {key!r} in {self.path}")
        return result

    def __contains__(self, key: object) -> bool:
        query = "SELECT 1 FROM evaluations WHERE key = ?"
        return isinstance(key, str) and self._retry(lambda c: c.execute(query, (key,)).fetchone()) is not None

    def __len__(self) -> int:
        return self._retry(lambda c: c.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    def put(
        self,
        key: str,
        result: EvalResult,
        *,
        task: str,
        teacher_key: str,
        fidelity: str,
        replace_failed: bool = False,
    ) -> bool:
        """Store ``result`` under ``key``; return False (keeping the first row) when ``key`` is already stored, unless
        ``replace_failed`` and the stored row is ``failed`` (a retry): then it is replaced.

        ``key`` must equal ``evaluation_key(result.candidate, task, teacher_key, fidelity)``.
        """
        expected = evaluation_key(result.candidate, task, teacher_key, fidelity)
        if key != expected:
            raise ValueError(
                f"key={key!r} does not match the result: evaluation_key(candidate {result.candidate.content_hash()}, "
                f"task={task!r}, teacher_key={teacher_key!r}, fidelity={fidelity!r}) is {expected!r}"
            )
        values = (
            key,
            result.candidate.model_dump_json(),
            result.candidate.content_hash(),
            task,
            teacher_key,
            fidelity,
            result.status,
            result.error,
            result.accuracy,
            result.mean_ood_accuracy,
            _latency_ms(result),
            result.params_total,
            result.train_seconds,
            result.student_path,
            result.model_dump_json(),
            datetime.now(UTC).isoformat(timespec="milliseconds"),
            socket.gethostname(),
            os.getpid(),
        )
        conflict = "DO NOTHING"
        if replace_failed:
            updates = ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS if column != "key")
            conflict = f"DO UPDATE SET {updates} WHERE evaluations.status = 'failed'"
        statement = (
            f"INSERT INTO evaluations ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
            f"ON CONFLICT (key) {conflict}"
        )
        return self._write(lambda c: c.execute(statement, values).rowcount == 1)

    def rows(self, task: str | None = None, status: str | None = None) -> list[StoredEvaluation]:
        """Stored rows in insertion order, optionally only those of one task and/or one status."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status={status!r} must be one of {', '.join(STATUSES)}")
        clauses = [(name, value) for name, value in (("task", task), ("status", status)) if value is not None]
        where = " AND ".join(f"{name} = ?" for name, _ in clauses)
        query = f"SELECT {', '.join(_COLUMNS)} FROM evaluations {'WHERE ' + where if where else ''} ORDER BY rowid"
        return self._select(query, tuple(value for _, value in clauses))

    def match(self, prefix: str) -> list[StoredEvaluation]:
        """Stored rows whose key starts with ``prefix`` (lowercase hex digits)."""
        if not _HEX.fullmatch(prefix):
            raise ValueError(f"key prefix {prefix!r} must be one or more lowercase hex digits")
        query = f"SELECT {', '.join(_COLUMNS)} FROM evaluations WHERE key GLOB ? ORDER BY rowid"
        return self._select(query, (prefix + "*",))

    def _select(self, query: str, parameters: tuple[str, ...]) -> list[StoredEvaluation]:
        rows = self._retry(lambda c: c.execute(query, parameters).fetchall())
        stored = []
        for row in rows:
            fields = dict(zip(_COLUMNS, row, strict=True))
            del fields["candidate"]
            fields["result"] = EvalResult.model_validate_json(fields["result"])
            stored.append(StoredEvaluation.model_validate(fields))
        return stored

    def export(self, path: str | Path) -> int:
        """Write every row to ``path`` (``.csv``: flat columns; ``.jsonl``: full records); return the row count.

        The file appears complete or not at all (written beside it, then renamed).
        """
        path = Path(path).expanduser()
        if path.suffix not in EXPORT_SUFFIXES:
            raise ValueError(f"export path {str(path)!r} must end in {' or '.join(EXPORT_SUFFIXES)}")
        rows = self.rows()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
                if path.suffix == ".csv":
                    writer = csv.DictWriter(out, fieldnames=[c for c in _COLUMNS if c != "result"])
                    writer.writeheader()
                    writer.writerows(row.flat() for row in rows)
                else:
                    out.writelines(row.model_dump_json() + "\n" for row in rows)
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return len(rows)

    def _owner(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{self._nonce}"

    def claim(self, key: str, ttl_seconds: float) -> bool:
        """Lease ``key`` to this store object in this thread for ``ttl_seconds``; False if another holds it.

        Claiming a key this caller already holds renews the lease. A lease nobody renews or releases expires.
        """
        return self._claim(key, ttl_seconds, self._owner())

    def _claim(self, key: str, ttl_seconds: float, owner: str) -> bool:
        _check_positive("ttl_seconds", ttl_seconds)

        def body(connection: sqlite3.Connection) -> bool:
            now = time.time()
            row = connection.execute("SELECT owner, expires FROM leases WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            connection.execute(
                "INSERT INTO leases (key, owner, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
                (key, owner, now + ttl_seconds),
            )
            return True

        return self._write(body)

    def release(self, key: str) -> bool:
        """Give up this caller's lease on ``key``; False when it held none (a lease of another is left alone)."""
        return self._release(key, self._owner())

    def _release(self, key: str, owner: str) -> bool:
        statement = "DELETE FROM leases WHERE key = ? AND owner = ?"
        return self._write(lambda c: c.execute(statement, (key, owner)).rowcount == 1)

    def holder(self, key: str) -> str | None:
        """Who holds a live lease on ``key`` (``host:pid:thread:nonce``), or None."""
        query = "SELECT owner FROM leases WHERE key = ? AND expires > ?"
        row = self._retry(lambda c: c.execute(query, (key, time.time())).fetchone())
        return None if row is None else row[0]

    @contextlib.contextmanager
    def _renewing(self, key: str, ttl_seconds: float, owner: str) -> Iterator[None]:
        """Renew ``owner``'s lease every third of its TTL from a background thread while the block runs."""
        stop = threading.Event()

        def renew() -> None:
            try:
                while not stop.wait(ttl_seconds / 3):
                    if not self._claim(key, ttl_seconds, owner):
                        break
            finally:
                self.close()

        thread = threading.Thread(target=renew, name=f"lease-{key[:12]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def get_or_evaluate(
        self,
        key: str,
        evaluate: Callable[[], EvalResult],
        *,
        task: str,
        teacher_key: str,
        fidelity: str,
        lease_seconds: float = 60.0,
        wait_seconds: float | None = None,
        poll_seconds: float = 1.0,
        retry_failed: bool = False,
    ) -> EvalResult:
        """The stored result of ``key``; otherwise claim it, run ``evaluate()``, store the result and release.

        While another live worker holds the claim, poll every ``poll_seconds`` until it stores the result or its
        lease expires (then claim it here); :class:`StoreTimeoutError` after ``wait_seconds`` (None: no limit).
        The lease is renewed while ``evaluate`` runs, so it may take longer than ``lease_seconds``; if it raises,
        nothing is stored and the claim is released. With ``retry_failed``, a stored ``failed`` result is evaluated
        again (once) and replaced; if another worker holds the claim, its result is taken whatever it is.
        """
        _check_positive("lease_seconds", lease_seconds)
        _check_positive("poll_seconds", poll_seconds)
        if wait_seconds is not None:
            _check_positive("wait_seconds", wait_seconds)
        deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
        owner = self._owner()
        retry = retry_failed
        while True:
            stored = self.get(key)
            if stored is not None and not (retry and stored.status == "failed"):
                return stored
            if self._claim(key, lease_seconds, owner):
                try:
                    stored = self.get(key)
                    if stored is not None and not (retry and stored.status == "failed"):
                        return stored
                    with self._renewing(key, lease_seconds, owner):
                        result = evaluate()
                    inserted = self.put(
                        key, result, task=task, teacher_key=teacher_key, fidelity=fidelity, replace_failed=retry
                    )
                    return result if inserted else self[key]
                finally:
                    self._release(key, owner)
            retry = False
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreTimeoutError(
                    f"key {key!r} in {self.path} is still claimed by {self.holder(key)} after {wait_seconds:g} s"
                )
            time.sleep(poll_seconds)
