"""Where a command may write a folder or file: never over a user's things without ``--force``, never over a run.

A destination that exists and is not empty is refused unless the user passes ``--force``; even then a folder that
holds a search run, the run folder being read, or a folder that contains the current directory, the home folder or
any protected folder is refused. The writers themselves build beside the destination and rename into place
(:func:`distilsearch.kdlib.core.atomic.staging_dir`), so an interrupted write leaves the old destination whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from distilsearch.search import run_layout

RUN_MARKERS = run_layout.MARKERS


class DestinationError(ValueError):
    """A destination the command must not write to."""


def _contains(folder: Path, inner: Path) -> bool:
    return folder == inner or folder in inner.parents


def check_folder_destination(path: Path, *, force: bool, protected: Iterable[Path] = ()) -> None:
    """Refuse ``path`` as an output folder when writing there could destroy something (see the module doc)."""
    if path.exists() and not path.is_dir():
        raise DestinationError(f"destination {path} is a file, not a folder")
    resolved = path.resolve()
    for folder in (*protected, Path.cwd(), Path.home()):
        if _contains(resolved, folder.resolve()):
            raise DestinationError(f"destination {path} is or contains {folder}; choose a new folder")
    if not path.exists() or not any(path.iterdir()):
        return
    markers = [name for name in RUN_MARKERS if (path / name).exists()]
    if markers:
        raise DestinationError(f"destination {path} holds a search run ({', '.join(markers)}); choose a new folder")
    if not force:
        raise DestinationError(f"destination {path} exists and is not empty; pass --force to replace it")


def check_file_destination(path: Path, *, force: bool) -> None:
    """Refuse ``path`` as an output file when it is a folder, or exists and ``force`` is not given."""
    if path.is_dir():
        raise DestinationError(f"destination {path} is a folder, not a file")
    if path.exists() and not force:
        raise DestinationError(f"destination {path} exists; pass --force to replace it")
