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

    from distilsearch.kdlib.data.user_data import DataSpec

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

    def in_memory(self) -> TaskData:
        """This task with every set held in memory (a set memory-mapped from a local cache file is copied), so it can
        be sent to a worker on another machine."""
        import dataclasses

        import datasets

        def loaded(data: datasets.Dataset) -> datasets.Dataset:
            if not data.cache_files:
                return data
            return datasets.Dataset.from_dict(data.to_dict(), features=data.features)

        return dataclasses.replace(
            self,
            splits=datasets.DatasetDict({name: loaded(data) for name, data in self.splits.items()}),
            ood={name: loaded(data) for name, data in self.ood.items()},
            ood_dev={name: loaded(data) for name, data in self.ood_dev.items()},
        )

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


def load_task(task: str | DataSpec, *, ood_limit: int | None = DEFAULT_OOD_LIMIT, progress: bool = True) -> TaskData:
    """Build ``task`` deterministically: a registered task name, or user data (a ``DataSpec``, loaded by
    :func:`distilsearch.kdlib.data.user_data.load_data`). OOD sets are capped at ``ood_limit`` rows (hash-chosen;
    None = all), then split into dev and test halves by content hash."""
    if not isinstance(task, str):
        from distilsearch.kdlib.data.user_data import load_data

        return load_data(task, ood_limit=ood_limit, progress=progress)
    definition = get_task_definition(task)
    if ood_limit is not None and ood_limit < 1:
        raise ValueError(f"ood_limit must be >= 1 or None, got {ood_limit}")
    split_frames, ood_frames, notes = definition.build(ood_limit, progress)
    return task_data_from_frames(task, definition.text_fields, definition.label_names, split_frames, ood_frames, notes)


def task_data_from_frames(
    name: str,
    text_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    split_frames: dict[str, pd.DataFrame],
    ood_frames: dict[str, pd.DataFrame],
    notes: dict[str, str],
) -> TaskData:
    """The :class:`TaskData` of built frames: datasets with a ``ClassLabel`` label, OOD halves and fingerprints.

    Each frame has the ``text_fields`` and a ``label`` column holding either label ids (integers, as the registered
    tasks build them) or label names (strings, as user files give them). The fingerprints hash the rows as given;
    with label names they also hash ``label_names`` (the order fixes the ids).
    """
    import datasets
    import pandas as pd

    missing = set(SPLIT_NAMES) - set(split_frames)
    if missing:
        raise ValueError(f"task {name!r} built no {sorted(missing)} split")
    named = not pd.api.types.is_integer_dtype(split_frames["train"]["label"])
    if named:
        _check_label_names(name, label_names, [*split_frames.values(), *ood_frames.values()])
    features = datasets.Features(
        {column: datasets.Value("string") for column in text_fields}
        | {"label": datasets.ClassLabel(names=list(label_names))}
    )
    columns = [*text_fields, "label"]
    label_ids = {label: index for index, label in enumerate(label_names)}

    def to_dataset(frame: pd.DataFrame) -> datasets.Dataset:
        frame = frame[columns]
        if named:
            frame = frame.assign(label=frame["label"].map(label_ids).astype(int))
        return datasets.Dataset.from_pandas(frame, features=features, preserve_index=False)

    def fingerprint(sets: list[tuple[str, pd.DataFrame]]) -> str:
        return _fingerprint(name, columns, sets, label_names if named else None)

    splits = datasets.DatasetDict({split: to_dataset(split_frames[split]) for split in SPLIT_NAMES})
    halves = {ood_name: split_halves(frame, text_fields) for ood_name, frame in ood_frames.items()}
    ood = {ood_name: to_dataset(test) for ood_name, (_, test) in halves.items()}
    ood_dev = {ood_name: to_dataset(dev) for ood_name, (dev, _) in halves.items()}
    return TaskData(
        name,
        text_fields,
        label_names,
        splits,
        ood,
        notes,
        fingerprint([(split, split_frames[split]) for split in SPLIT_NAMES]),
        {ood_name: fingerprint([(f"{ood_name}/test", test)]) for ood_name, (_, test) in halves.items()},
        ood_dev,
        {ood_name: fingerprint([(f"{ood_name}/dev", dev)]) for ood_name, (dev, _) in halves.items()},
    )


def _check_label_names(name: str, label_names: tuple[str, ...], frames: list[pd.DataFrame]) -> None:
    """Every label name in ``frames`` is one of ``label_names``."""
    unknown = sorted({str(label) for frame in frames for label in frame["label"].unique()} - set(label_names))
    if unknown:
        raise ValueError(f"task {name!r} has labels {unknown} that are not among its label names {list(label_names)}")


def _fingerprint(
    name: str, columns: list[str], frames: list[tuple[str, pd.DataFrame]], label_names: tuple[str, ...] | None
) -> str:
    """sha256 of every row of the given sets (and of the label order when labels are names): the identity of the
    data a model was trained or scored on."""
    digest = hashlib.sha256(name.encode())
    if label_names is not None:
        digest.update(("\x1elabels\x1e" + "\x1f".join(label_names)).encode())
    for set_name, frame in frames:
        digest.update(f"\x1e{set_name}\x1e".encode())
        for row in frame[columns].itertuples(index=False):
            digest.update("\x1f".join(map(str, row)).encode("utf-8", "replace") + b"\x1d")
    return digest.hexdigest()
