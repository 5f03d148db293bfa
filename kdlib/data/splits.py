"""Deterministic, content-based splitting, de-duplication and sub-sampling of text tables."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SPLIT_NAMES = ("train", "validation", "test")
# The default salt of every content split. It keeps the project's first name: changing it would move rows between
# splits and invalidate every stored result.
SPLIT_SALT = "kdsearch"


def stable_fraction(key: str, salt: str = SPLIT_SALT) -> float:
    """A number in [0, 1) fixed by ``key`` alone (sha256), independent of row order, platform and library versions."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_group(
    frame: pd.DataFrame, group_column: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, pd.DataFrame]:
    """Assign whole groups (e.g. movies) to train / validation / test so no group is in two splits."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    position = frame[group_column].astype(str).map(stable_fraction)
    train_end, validation_end = fractions[0], fractions[0] + fractions[1]
    masks = {
        "train": position < train_end,
        "validation": (position >= train_end) & (position < validation_end),
        "test": position >= validation_end,
    }
    return {name: frame[mask].reset_index(drop=True) for name, mask in masks.items()}


def normalise_text(text: str) -> str:
    """Lower-case, collapse whitespace: the form under which two texts count as duplicates."""
    return re.sub(r"\s+", " ", text).strip().lower()


def drop_duplicate_texts(frame: pd.DataFrame, text_columns: tuple[str, ...]) -> pd.DataFrame:
    """Keep the first copy of each (normalised) text; drop every copy of a text seen with conflicting labels."""
    key = frame[list(text_columns)].astype(str).map(normalise_text).agg("\x1f".join, axis=1)
    labels_per_key = frame.groupby(key)["label"].nunique()
    conflicting = key.isin(labels_per_key[labels_per_key > 1].index)
    keep = ~key.duplicated() & ~conflicting & (key.str.replace("\x1f", "").str.len() > 0)
    return frame[keep].reset_index(drop=True)


def stable_sample(frame: pd.DataFrame, limit: int | None, key_columns: tuple[str, ...]) -> pd.DataFrame:
    """At most ``limit`` rows, chosen by the hash of their key columns (the same rows on every machine)."""
    if limit is None or len(frame) <= limit:
        return frame.reset_index(drop=True)
    order = frame[list(key_columns)].astype(str).agg("\x1f".join, axis=1).map(stable_fraction)
    return frame.loc[order.sort_values(kind="stable").index[:limit]].sort_index().reset_index(drop=True)


def split_halves(frame: pd.DataFrame, key_columns: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(dev, test)`` halves of an evaluation set, chosen by the hash of each row's key columns (salt ``ood-dev``):
    the same rows on every machine, independent of row order."""
    position = (
        frame[list(key_columns)].astype(str).agg("\x1f".join, axis=1).map(lambda key: stable_fraction(key, "ood-dev"))
    )
    dev = position < 0.5
    return frame[dev].reset_index(drop=True), frame[~dev].reset_index(drop=True)
