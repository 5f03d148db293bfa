"""Crash-safe and concurrency-safe writes: build in a private temporary folder, then rename into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    A crash leaves only a ``.tmp-*`` folder that is never read. An existing ``final`` is replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield staging
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.replace(final, retired / final.name)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def lock_for(path: Path) -> FileLock:
    """An inter-process lock guarding the building of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / f".{path.name}.lock"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that readers (and a later run after a crash) see either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` of ``text`` encoded as UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True))


def read_appended_lines(path: Path) -> list[str]:
    """The complete lines of an append-only text file (none when it is absent); a torn last line (a crash
    mid-append leaves no final newline) is cut off the file. ValueError naming ``path`` when it is not UTF-8."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not an append-only record file (not UTF-8 text: {error})") from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        with path.open("r+", encoding="utf-8") as out:
            out.truncate(len(text.encode("utf-8")))
    return text.splitlines()
