"""Where distilsearch keeps its cache: ``$DISTILSEARCH_HOME``, default ``~/.cache/distilsearch``."""

from __future__ import annotations

import os
from pathlib import Path


def distilsearch_home() -> Path:
    """The cache root (assets, prepared tasks, tokenized data, fine-tuned teachers), created on demand."""
    home = Path(os.environ.get("DISTILSEARCH_HOME") or Path.home() / ".cache" / "distilsearch").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(kind: str) -> Path:
    """A sub-folder of the cache root for one kind of cached thing (``assets``, ``teachers``, ...)."""
    path = distilsearch_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
