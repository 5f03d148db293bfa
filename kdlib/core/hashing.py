"""Stable content hashes used as cache keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def first_mismatch(folder: Path, recorded: Mapping[str, str]) -> tuple[Path, str | None, str] | None:
    """The first file of ``recorded`` (name under ``folder`` -> sha256), in name order, that is missing (actual
    None) or whose bytes hash otherwise: ``(path, actual, recorded)``; None when every file matches."""
    for name, expected in sorted(recorded.items()):
        path = folder / name
        actual = sha256_file(path) if path.is_file() else None
        if actual != expected:
            return path, actual, expected
    return None


def sha256_json(value: Any) -> str:
    """Hex sha256 of a JSON-serialisable value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
