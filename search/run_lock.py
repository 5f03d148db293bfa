"""An exclusive lock on a run folder for the whole of a search, naming its holder to whoever else tries.

The lock is an OS file lock (``flock`` via :mod:`filelock`) on ``RUN_DIR/.lock``: the operating system releases it
when the holding process ends, however it ends, so a crashed search never leaves a stale lock. The holder writes
who it is (host, pid, start time) to ``RUN_DIR/.lock.holder`` once it has the lock; a second search reads that to
name the holder in its error. Read-only commands (``pareto``, ``store``, ``export``) never take the lock.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from distilsearch.kdlib.core.atomic import write_json_atomic
from distilsearch.search import run_layout

LOCK_FILE = run_layout.LOCK
HOLDER_FILE = run_layout.LOCK_HOLDER


class RunLocked(RuntimeError):
    """Another process holds the run folder's lock."""


def _holder(run_dir: Path) -> str:
    try:
        holder = json.loads((run_dir / HOLDER_FILE).read_text(encoding="utf-8"))
        return f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder exclusively or raises :class:`RunLocked` at once."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock = FileLock(str(run_dir / LOCK_FILE), timeout=0)

    def __enter__(self) -> RunLock:
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLocked(
                f"run folder {self.run_dir} is in use by another search ({_holder(self.run_dir)}); "
                "wait for it to end or use another --out"
            ) from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        write_json_atomic(
            self.run_dir / HOLDER_FILE, {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
        self._lock.release()
