"""Task definitions and loading: train / validation / test splits, named OOD sets, labels and text fields.

Every OOD set is split in two halves by content hash (:func:`kdlib.data.splits.split_halves`): ``ood_dev`` (a search may
select on it) and ``ood`` (the OOD test half, for reporting only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from distilsearch.kdlib.data.splits import SPLIT_NAMES, split_halves

if TYPE_CHECKING:
    import datasets
    import pandas as pd

DEFAULT_OOD_LIMIT = 2000


@dataclass(frozen=True)
class TaskData:
    """A loaded task: ``splits`` (train / validation / test), ``ood`` (OOD test halves) and ``ood_dev`` (OOD dev
    halves) sets, each with text fields and ``label``.

    ``fingerprint`` hashes the three splits (the data a model is trained and selected on); each OOD half has its own.
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    splits: datasets.DatasetDict
    ood: dict[str, datasets.Dataset]
    notes: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    ood_fingerprints: dict[str, str] = field(default_factory=dict)
    ood_dev: dict[str, datasets.Dataset] = field(default_factory=dict)
    ood_dev_fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def evaluation_sets(self) -> dict[str, datasets.Dataset]:
        """Every set a model is scored on: ``validation``, ``test``, ``ood-dev/<name>`` and ``ood/<name>`` (test
        half) for each OOD set."""
        sets = {"validation": self.splits["validation"], "test": self.splits["test"]}
        sets.update({f"ood-dev/{name}": data for name, data in self.ood_dev.items()})
        sets.update({f"ood/{name}": data for name, data in self.ood.items()})
        return sets


@dataclass(frozen=True)
class TaskDefinition:
    """How to build a task. ``build(ood_limit, progress)`` returns split and OOD frames plus notes."""

    name: str
    description: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    build: Callable[[int | None, bool], tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, str]]]
    needs_hub: bool = False


TASKS: dict[str, TaskDefinition] = {}


def register_task(definition: TaskDefinition) -> TaskDefinition:
    """Add a task to the registry (a later registration under the same name replaces the earlier one)."""
    TASKS[definition.name] = definition
    return definition


def get_task_definition(name: str) -> TaskDefinition:
    """The definition of task ``name``; the error lists the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def load_task(name: str, *, ood_limit: int | None = DEFAULT_OOD_LIMIT, progress: bool = True) -> TaskData:
    """Build task ``name`` deterministically. OOD sets are capped at ``ood_limit`` rows (hash-chosen; None = all),
    then split into dev and test halves by content hash."""
    import datasets

    definition = get_task_definition(name)
    if ood_limit is not None and ood_limit < 1:
        raise ValueError(f"ood_limit must be >= 1 or None, got {ood_limit}")
    split_frames, ood_frames, notes = definition.build(ood_limit, progress)
    missing = set(SPLIT_NAMES) - set(split_frames)
    if missing:
        raise ValueError(f"task {name!r} built no {sorted(missing)} split")
    features = datasets.Features(
        {column: datasets.Value("string") for column in definition.text_fields}
        | {"label": datasets.ClassLabel(names=list(definition.label_names))}
    )
    columns = [*definition.text_fields, "label"]

    def to_dataset(frame: pd.DataFrame) -> datasets.Dataset:
        return datasets.Dataset.from_pandas(frame[columns], features=features, preserve_index=False)

    splits = datasets.DatasetDict({split: to_dataset(split_frames[split]) for split in SPLIT_NAMES})
    halves = {ood_name: split_halves(frame, definition.text_fields) for ood_name, frame in ood_frames.items()}
    ood = {ood_name: to_dataset(test) for ood_name, (_, test) in halves.items()}
    ood_dev = {ood_name: to_dataset(dev) for ood_name, (dev, _) in halves.items()}
    fingerprint = _fingerprint(name, columns, [(split, split_frames[split]) for split in SPLIT_NAMES])
    ood_fingerprints = {n: _fingerprint(name, columns, [(f"{n}/test", test)]) for n, (_, test) in halves.items()}
    ood_dev_fingerprints = {n: _fingerprint(name, columns, [(f"{n}/dev", dev)]) for n, (dev, _) in halves.items()}
    return TaskData(
        name,
        definition.text_fields,
        definition.label_names,
        splits,
        ood,
        notes,
        fingerprint,
        ood_fingerprints,
        ood_dev,
        ood_dev_fingerprints,
    )


def _fingerprint(name: str, columns: list[str], frames: list[tuple[str, pd.DataFrame]]) -> str:
    """sha256 of every row of the given sets: the identity of the data a model was trained or scored on."""
    digest = hashlib.sha256(name.encode())
    for set_name, frame in frames:
        digest.update(f"\x1e{set_name}\x1e".encode())
        for row in frame[columns].itertuples(index=False):
            digest.update("\x1f".join(map(str, row)).encode("utf-8", "replace") + b"\x1d")
    return digest.hexdigest()
