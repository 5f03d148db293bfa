"""User data: the user's own labelled text files as a task (:class:`DataSpec` -> :func:`load_data` -> ``TaskData``).

Sources (the values of ``DataSpec.files`` and ``DataSpec.ood``):

- ``.csv`` (comma-separated, quoted as spreadsheets write it) and ``.tsv`` (tab-separated, no quoting: a field is
  everything between two tabs): the first line is the header (names stripped of surrounding spaces); every cell is
  text, so ``NA`` or ``null`` stays a text. Blank lines are skipped.
- ``.jsonl`` or ``.json``: JSON Lines, one object per line (a JSON array is not read); blank lines are skipped.
- ``.parquet``.
- a folder written by ``datasets``' ``save_to_disk``: a ``Dataset``, or a ``DatasetDict`` whose own splits are used
  (``train``; ``validation``, ``dev`` or ``valid``; ``test``; any other split is ignored).
- ``hub:<dataset>[:<config>]``: ``datasets.load_dataset(dataset, config)`` from the Hugging Face hub, read like a
  ``DatasetDict`` folder. The hub is used only when a value has this prefix.

Text files must be UTF-8 (a leading byte-order mark is allowed). Every source needs the text column(s)
(``text_columns``: one, or two for sentence pairs) and ``label_column``; other columns are ignored.

Splits (the keys of ``files``):

- ``all`` alone, or ``train`` alone: duplicate texts are removed (``splits.drop_duplicate_texts``: a text counts once
  after lower-casing and collapsing whitespace, and a text seen with two labels is dropped), then the rows are split
  80/10/10 into train / validation / test by the sha256 of their (normalised, joined) text columns: the split depends
  on the content alone, not on row order or where the file lives, and no text is in two splits.
- ``train`` + ``test``: validation is 10 % of train (duplicates removed first) by the same text hash.
- ``train`` + ``validation``: test is 10 % of train (duplicates removed first) by the same text hash; the notes say so.
- ``train`` + ``validation`` + ``test``: used as given (no row dropped). For a given validation or test file the notes
  count its texts that also occur in train; they are kept.
- ``all`` with any other key is an error, and so are validation or test without train. A ``DatasetDict`` (folder or
  hub) under ``all`` gives its own splits, under the same rules (it must have a train split); under a split key it
  gives its split of that name.

Labels:

- Labels are text: an integer is read as its text form (``0`` -> ``"0"``), surrounding spaces are stripped, and a
  ``ClassLabel`` column is read as its names. A float, a boolean or any other JSON value is an error.
- Label order (label id ``i`` is ``label_names[i]``): ``DataSpec.label_names`` when given (every train label must be
  one of them); else the ``ClassLabel`` names of a train dataset that has them; else the train labels sorted,
  numerically when all are integers (``"2"`` before ``"10"``).
- Train needs at least 2 labels; every validation, test and OOD label must occur in train.

OOD sets (``ood``: name -> source, the same columns): duplicate texts removed, capped at ``ood_limit`` rows
(hash-chosen), then split into dev and test halves by text hash, as for the registered tasks.

Errors are :class:`DataFileError` (a ``ValueError``) naming the file and, where there is one, the line or row and the
column: ``line N`` in CSV, TSV and JSON Lines files is the line an editor shows (the CSV header is line 1; a quoted
text spanning lines is named by its first line); ``row N`` in Parquet files and datasets counts rows from 1. Errors: a
path that does not exist; an unsupported file type; bytes that are not UTF-8 (the line of the first bad one); a CSV
line with the wrong number of fields; a JSON Lines line that is not a JSON object; a source with no rows; a missing
text or label column (the error lists the columns there are); an empty or missing text or label; a label outside
``label_names``, or one in validation, test or OOD that does not occur in train; fewer than 2 train labels; too few
rows for a hash split to give every split a row.

Fingerprint: the task's fingerprint hashes its name, label order and rows (``task_data_from_frames``), so the same
rows under the same task name give the same fingerprint wherever the files live, and changed rows a different one.
The task name defaults to a slug of the train (or ``all``) file's name without its extension.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distilsearch.kdlib.core.progress import datasets_progress
from distilsearch.kdlib.data.splits import (
    SPLIT_NAMES,
    drop_duplicate_texts,
    normalise_text,
    split_by_group,
    stable_sample,
)
from distilsearch.kdlib.data.task_registry import DEFAULT_OOD_LIMIT, TaskData, task_data_from_frames

if TYPE_CHECKING:
    import datasets
    import pandas as pd

SPLIT_KEYS = ("all", *SPLIT_NAMES)
SPLIT_ALIASES = {"dev": "validation", "valid": "validation"}
FILE_TYPES = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON Lines", ".json": "JSON Lines", ".parquet": "Parquet"}
HUB_PREFIX = "hub:"
ARGUMENT_NAMES = {"files": "data", "text_columns": "text columns", "label_column": "label column", "name": "task name"}
HASH_FRACTIONS = {
    frozenset({"train"}): (0.8, 0.1, 0.1),
    frozenset({"train", "test"}): (0.9, 0.1, 0.0),
    frozenset({"train", "validation"}): (0.9, 0.0, 0.1),
}
_ROW = "\x00row"  # the frame column holding each row's line or row number (a name no user column has)
_KEY = "\x00key"  # the frame column holding each row's normalised text, the hash-split key


class DataFileError(ValueError):
    """Bad user data: the message names the file and, where there is one, the line or row and the column."""


class DataSpec(BaseModel):
    """The user's labelled text data: files for the splits, the columns to read, optional OOD sets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: dict[str, str] = Field(
        description="split -> source: key 'all' (hash-split 80/10/10) or any of 'train', 'validation', 'test'; a "
        ".csv, .tsv, .jsonl/.json (JSON Lines) or .parquet file, a datasets save_to_disk folder, or "
        "hub:<dataset>[:<config>]"
    )
    text_columns: tuple[str, ...] = Field(
        ("text",), description="the text column, or two columns for sentence pairs", min_length=1, max_length=2
    )
    label_column: str = Field("label", description="the label column (labels are read as text)", min_length=1)
    ood: dict[str, str] = Field(default_factory=dict, description="name -> source of an out-of-distribution set")
    name: str | None = Field(None, description="task name (default: a slug of the train file's name)")
    label_names: tuple[str, ...] | None = Field(
        None,
        description="label order, label id i = label_names[i] (default: the train labels sorted, numerically when all "
        "are integers)",
    )

    @field_validator("files")
    @classmethod
    def _check_files(cls, files: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(files) - set(SPLIT_KEYS))
        if unknown:
            raise ValueError(f"unknown split {unknown[0]!r}; the splits are {', '.join(SPLIT_KEYS)}")
        if "all" in files and len(files) > 1:
            raise ValueError("'all' is split by hash into train, validation and test: give it alone")
        if "all" not in files and "train" not in files:
            raise ValueError("no training data: give 'all' or 'train'")
        return _check_sources(files)

    @field_validator("ood")
    @classmethod
    def _check_ood(cls, ood: dict[str, str]) -> dict[str, str]:
        for name in ood:
            if not name or "/" in name:
                raise ValueError(f"OOD set name {name!r} must be non-empty and contain no '/'")
        return _check_sources(ood)

    @field_validator("text_columns")
    @classmethod
    def _check_text_columns(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(columns)) != len(columns) or not all(columns):
            raise ValueError(f"text columns must be distinct, non-empty names, got {list(columns)}")
        if "label" in columns:
            raise ValueError("a text column may not be named 'label' (the task's label column)")
        return columns

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
            raise ValueError(f"task name {name!r} must be letters, digits, '.', '_' or '-' (it names cache folders)")
        return name

    @field_validator("label_names")
    @classmethod
    def _check_label_names(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is not None and (len(set(names)) != len(names) or len(names) < 2 or not all(n.strip() for n in names)):
            raise ValueError(f"label names must be at least 2 distinct, non-empty texts, got {list(names)}")
        return names

    @model_validator(mode="after")
    def _check_label_column(self) -> DataSpec:
        if self.label_column in self.text_columns:
            raise ValueError(f"the label column {self.label_column!r} is also a text column")
        return self

    @property
    def task_name(self) -> str:
        """``name``, or a slug of the train (or ``all``) source's name without its extension."""
        if self.name is not None:
            return self.name
        source = self.files.get("all", self.files.get("train", ""))
        if source.startswith(HUB_PREFIX):
            stem = source.removeprefix(HUB_PREFIX).rsplit("/", 1)[-1]
        else:
            stem = Path(source).name
            suffix = Path(stem).suffix.lower()
            stem = stem[: -len(suffix)] if suffix in FILE_TYPES else stem
        return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "user-data"


def _check_sources(sources: dict[str, str]) -> dict[str, str]:
    """Every source is a non-empty path or hub name."""
    for key, source in sources.items():
        if source.strip() in ("", HUB_PREFIX):
            raise ValueError(f"{key!r} has an empty source")
    return sources


def data_spec_from_arguments(
    data: list[str], ood: list[str], text_columns: list[str] | None, label_column: str | None, name: str | None
) -> DataSpec:
    """The :class:`DataSpec` of command-line strings: ``data`` items ``PATH`` (= ``all``) or ``SPLIT=PATH`` (``all``,
    ``train``, ``validation`` (or ``dev``, ``valid``), ``test``); ``ood`` items ``NAME=PATH``."""
    files: dict[str, str] = {}
    for item in data:
        split, separator, path = item.partition("=")
        split = SPLIT_ALIASES.get(split, split)
        if not separator or split not in SPLIT_KEYS:
            if separator and re.fullmatch(r"\w+", split) and not Path(item).exists():
                raise DataFileError(
                    f"bad data value {item!r}: the split before '=' must be one of {', '.join(SPLIT_KEYS)}"
                )
            split, path = "all", item
        if split in files:
            raise DataFileError(f"bad data value {item!r}: {split!r} is given twice")
        files[split] = path
    ood_files: dict[str, str] = {}
    for item in ood:
        ood_name, separator, path = item.partition("=")
        if not separator or not ood_name or not path:
            raise DataFileError(f"bad OOD value {item!r}: expected NAME=PATH")
        if ood_name in ood_files:
            raise DataFileError(f"bad OOD value {item!r}: {ood_name!r} is given twice")
        ood_files[ood_name] = path
    options: dict[str, Any] = {"files": files, "ood": ood_files, "name": name}
    if text_columns:
        options["text_columns"] = tuple(text_columns)
    if label_column is not None:
        options["label_column"] = label_column
    try:
        return DataSpec(**options)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ARGUMENT_NAMES.get(str(problem["loc"][0]), str(problem["loc"][0])) if problem["loc"] else "data"
        message = problem["msg"].removeprefix("Value error, ")
        raise DataFileError(f"bad {field} {problem['input']!r}: {message}") from None


def load_data(spec: DataSpec, *, ood_limit: int | None = DEFAULT_OOD_LIMIT, progress: bool = True) -> TaskData:
    """The task of ``spec`` (the rules are in this module's docstring). ``ood_limit`` caps each OOD set (hash-chosen
    rows; None = all); ``progress`` shows the progress bars of ``datasets`` while folders or hub data load."""
    if ood_limit is not None and ood_limit < 1:
        raise ValueError(f"ood_limit must be >= 1 or None, got {ood_limit}")
    columns = (*spec.text_columns, spec.label_column)
    with datasets_progress(progress):
        given = _given_splits(spec, columns)
        ood = {name: _rows(_single_table(_read(source, columns), source), spec) for name, source in spec.ood.items()}
    splits, notes = _split(given, spec.text_columns)
    label_names, label_note = _label_names(spec, splits["train"])
    train_labels = set(splits["train"].frame["label"])
    for split in ("validation", "test"):
        _check_labels_in_train(splits[split], train_labels, spec.label_column, derived=split not in given)
    for rows in ood.values():
        _check_labels_in_train(rows, train_labels, spec.label_column, derived=False)
    notes = {"source": ", ".join(f"{key}={value}" for key, value in spec.files.items())} | notes
    notes["labels"] = label_note
    ood_frames = {}
    for name, rows in ood.items():
        frame = drop_duplicate_texts(rows.frame, spec.text_columns)
        ood_frames[name] = stable_sample(frame.drop(columns=_ROW), ood_limit, spec.text_columns)
        notes[f"ood/{name}"] = f"user data {spec.ood[name]} ({len(ood_frames[name])} rows)"
    split_frames = {split: rows.frame.drop(columns=_ROW) for split, rows in splits.items()}
    return task_data_from_frames(spec.task_name, spec.text_columns, label_names, split_frames, ood_frames, notes)


@dataclass(frozen=True)
class _Table:
    """What a source holds: ``values`` of the wanted columns it has (``None`` where a row lacks one)."""

    source: str
    unit: str  # "line" (text files) or "row" (Parquet, datasets): how a position is named in errors
    positions: list[int]
    columns: list[str]
    values: dict[str, list[Any]]
    class_names: tuple[str, ...] | None = None  # the label column's ClassLabel names


@dataclass(frozen=True)
class _Rows:
    """A source's rows as a frame: the text columns, ``label`` (text) and each row's position (column ``_ROW``)."""

    frame: pd.DataFrame
    source: str
    unit: str
    class_names: tuple[str, ...] | None

    def where(self, index: int, column: str | None = None) -> str:
        """The file, line or row, and column of row ``index``, for an error message."""
        return _where(self.source, self.unit, int(self.frame[_ROW].iloc[index]), column)


def _where(source: str, unit: str | None = None, position: int | None = None, column: str | None = None) -> str:
    parts = [source]
    if position is not None:
        parts.append(f"{unit} {position}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts)


def _given_splits(spec: DataSpec, columns: tuple[str, ...]) -> dict[str, _Rows]:
    """The rows of each given split: ``train`` and any of ``validation``, ``test`` (``all`` counts as ``train``)."""
    if "all" in spec.files:
        source = spec.files["all"]
        loaded = _read(source, columns)
        if isinstance(loaded, _Table):
            return {"train": _rows(loaded, spec)}
        if "train" not in loaded:
            raise DataFileError(f"{source}: no train split (its splits: {', '.join(loaded) or 'none'})")
        return {split: _rows(table, spec) for split, table in loaded.items()}
    tables = {}
    for split, source in spec.files.items():
        loaded = _read(source, columns)
        if not isinstance(loaded, _Table):
            if split not in loaded:
                raise DataFileError(f"{source}: no {split} split (its splits: {', '.join(loaded) or 'none'})")
            loaded = loaded[split]
        tables[split] = _rows(loaded, spec)
    return tables


def _single_table(loaded: _Table | dict[str, _Table], source: str) -> _Table:
    """An OOD source's one table: a dataset dictionary must have a test split (used) or a single split."""
    if isinstance(loaded, _Table):
        return loaded
    if "test" in loaded or len(loaded) == 1:
        return loaded.get("test") or next(iter(loaded.values()))
    raise DataFileError(f"{source}: an OOD set needs one split or a test split (its splits: {', '.join(loaded)})")


def _split(given: dict[str, _Rows], text_columns: tuple[str, ...]) -> tuple[dict[str, _Rows], dict[str, str]]:
    """Train / validation / test by the module's rules, and the notes that describe them."""
    train = given["train"]
    if set(given) == set(SPLIT_NAMES):
        splits, notes = dict(given), {"split": "train, validation and test as given"}
    else:
        unique = drop_duplicate_texts(train.frame, text_columns)
        fractions = HASH_FRACTIONS[frozenset(given)]
        parts = split_by_group(unique.assign(**{_KEY: _text_keys(unique, text_columns)}), _KEY, fractions)
        hashed = [split for split in SPLIT_NAMES if split == "train" or split not in given]
        splits = {split: given[split] for split in given if split != "train"}
        splits |= {split: replace(train, frame=parts[split].drop(columns=_KEY)) for split in hashed}
        for split in hashed:
            if splits[split].frame.empty:
                raise DataFileError(
                    f"{train.source}: {len(unique)} distinct rows are too few for a hash split: {split} is empty"
                )
        percent = "/".join(str(round(100 * fractions[SPLIT_NAMES.index(split)])) for split in hashed)
        notes = {
            "split": f"{' / '.join(hashed)}: {percent} % of {train.source} by sha256 of the normalised text, after "
            f"removing {len(train.frame) - len(unique)} duplicate rows (no text is in two of them)"
            + "".join(f"; {split}: as given" for split in given if split != "train")
        }
    train_keys = set(_text_keys(splits["train"].frame, text_columns))
    for split in ("validation", "test"):
        if split in given:
            keys = _text_keys(splits[split].frame, text_columns)
            notes[f"overlap/{split}"] = (
                f"{int(keys.isin(train_keys).sum())} of {len(keys)} {split} texts also occur in train (kept)"
            )
    return splits, notes


def _text_keys(frame: pd.DataFrame, text_columns: tuple[str, ...]) -> pd.Series:
    """Each row's normalised text columns, joined: the form under which texts are duplicates."""
    return frame[list(text_columns)].map(normalise_text).agg("\x1f".join, axis=1)


def _label_names(spec: DataSpec, train: _Rows) -> tuple[tuple[str, ...], str]:
    """The label order and a note on where it came from; checks train has at least 2 labels, all known."""
    labels = train.frame["label"]
    present = set(labels)
    if len(present) < 2:
        raise DataFileError(
            f"{train.source}: train has {len(present)} label ({', '.join(present)}); a classifier needs at least 2"
        )
    if spec.label_names is not None:
        unknown = ~labels.isin(set(spec.label_names))
        if unknown.any():
            index = int(unknown.to_numpy().argmax())
            raise DataFileError(
                f"{train.where(index, spec.label_column)}: label {labels.iloc[index]!r} is not one of the given label "
                f"names ({', '.join(spec.label_names)})"
            )
        return spec.label_names, f"label order as given: {', '.join(spec.label_names)}"
    if train.class_names is not None:
        return train.class_names, f"label order of the train data's ClassLabel: {', '.join(train.class_names)}"
    if all(re.fullmatch(r"[+-]?\d+", label) for label in present):
        names = tuple(sorted(present, key=lambda label: (int(label), label)))
        return names, f"label order: the train labels, numerically: {', '.join(names)}"
    names = tuple(sorted(present))
    return names, f"label order: the train labels, sorted: {', '.join(names)}"


def _check_labels_in_train(rows: _Rows, train_labels: set[str], column: str, *, derived: bool) -> None:
    """Every label of ``rows`` occurs in train; the error names the first row whose label does not."""
    unknown = ~rows.frame["label"].isin(train_labels)
    if unknown.any():
        index = int(unknown.to_numpy().argmax())
        hint = " (the hash split put every row with it outside train)" if derived else ""
        raise DataFileError(
            f"{rows.where(index, column)}: label {rows.frame['label'].iloc[index]!r} does not occur in train{hint} "
            f"(train labels: {', '.join(sorted(train_labels))})"
        )


def _rows(table: _Table, spec: DataSpec) -> _Rows:
    """The table's text and label columns as text, checked: every column present, no empty text or label."""
    import pandas as pd

    if not table.positions:
        raise DataFileError(f"{table.source}: no rows")
    for column in (*spec.text_columns, spec.label_column):
        if column not in table.columns:
            kind = "label" if column == spec.label_column else "text"
            raise DataFileError(
                f"{table.source}: no {kind} column {column!r} (its columns: {', '.join(table.columns) or 'none'})"
            )
    data: dict[str, list[Any]] = {}
    for column in (*spec.text_columns, spec.label_column):
        kind = "label" if column == spec.label_column else "text"
        cells = []
        for position, value in zip(table.positions, table.values[column], strict=True):
            where = _where(table.source, table.unit, position, column)
            if kind == "label" and table.class_names is not None and isinstance(value, int):
                if not 0 <= value < len(table.class_names):
                    raise DataFileError(f"{where}: label id {value} is not a class of its ClassLabel (-1: unlabelled)")
                value = table.class_names[value]
            try:
                text = _cell_text(value, label=kind == "label")
            except TypeError:
                raise DataFileError(
                    f"{where}: {value!r} is not {'text or an integer' if kind == 'label' else 'text'}"
                ) from None
            if not text.strip():
                raise DataFileError(f"{where}: empty {kind}")
            cells.append(text)
        data["label" if kind == "label" else column] = cells
    data[_ROW] = table.positions
    return _Rows(pd.DataFrame(data), table.source, table.unit, table.class_names)


def _cell_text(value: Any, *, label: bool) -> str:
    """A cell as text ('' when missing): strings as they are (labels stripped), integers (and, for texts, floats) in
    their text form; a TypeError for any other value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value.strip() if label else value
    if isinstance(value, bool) or not isinstance(value, int | float) or (label and isinstance(value, float)):
        raise TypeError(type(value).__name__)
    return str(value)


def _read(source: str, columns: tuple[str, ...]) -> _Table | dict[str, _Table]:
    """The rows of one source; a dataset dictionary (folder or hub) gives a table per split."""
    if source.startswith(HUB_PREFIX):
        return _read_hub(source, columns)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataFileError(f"{source}: no such file or folder")
    if path.is_dir():
        return _read_disk(path, source, columns)
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        supported = ", ".join(f"{extension} ({kind})" for extension, kind in FILE_TYPES.items())
        raise DataFileError(
            f"{source}: unsupported file type {suffix or '(none)'!r}; supported: {supported}, a datasets "
            f"save_to_disk folder, or {HUB_PREFIX}<dataset>[:<config>]"
        )
    if suffix == ".parquet":
        return _read_parquet(path, source, columns)
    text = _utf8(path, source)
    if suffix in (".jsonl", ".json"):
        return _read_json_lines(text, source, columns)
    return _read_delimited(text, source, columns, tsv=suffix == ".tsv")


def _utf8(path: Path, source: str) -> str:
    """The file decoded strictly as UTF-8 (a leading byte-order mark dropped); the error names the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataFileError(f"{source}: cannot read it ({error.strerror})") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataFileError(
            f"{source}, line {line}: not UTF-8 (byte 0x{data[error.start]:02x} at byte {column} of the line); "
            "save the file as UTF-8"
        ) from None


def _read_delimited(text: str, source: str, columns: tuple[str, ...], *, tsv: bool) -> _Table:
    """A CSV or TSV file with a header line; every cell is text."""
    options: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, **options)
    header: list[str] | None = None
    positions: list[int] = []
    cells: list[list[str]] = []
    last_line = 0
    try:
        for fields in reader:
            line, last_line = last_line + 1, reader.line_num
            if not fields:
                continue
            if header is None:
                header = [name.strip() for name in fields]
                twice = sorted({name for name in header if header.count(name) > 1})
                if twice:
                    raise DataFileError(f"{source}, line {line}: the header names column {twice[0]!r} twice")
                continue
            if len(fields) != len(header):
                hint = "a text may not contain a tab" if tsv else "quote a text that contains a comma"
                raise DataFileError(
                    f"{source}, line {line}: {len(fields)} fields, but the header has {len(header)} ({hint})"
                )
            positions.append(line)
            cells.append(fields)
    except csv.Error as error:
        raise DataFileError(f"{source}, line {last_line + 1}: {error}") from None
    header = header or []
    index = {name: i for i, name in enumerate(header)}
    values = {column: [fields[index[column]] for fields in cells] for column in columns if column in index}
    return _Table(source, "line", positions, header, values)


def _read_json_lines(text: str, source: str, columns: tuple[str, ...]) -> _Table:
    """A JSON Lines file: one object per non-blank line."""
    positions: list[int] = []
    seen: dict[str, None] = {}
    values: dict[str, list[Any]] = {column: [] for column in columns}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(
                f"{source}, line {number}: not valid JSON ({error.msg}, character {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise DataFileError(
                f"{source}, line {number}: not a JSON object (JSON Lines: one {{...}} object per line), got "
                f"{type(record).__name__}"
            )
        seen.update(dict.fromkeys(record))
        positions.append(number)
        for column in columns:
            values[column].append(record.get(column))
    return _Table(
        source, "line", positions, list(seen), {column: values[column] for column in columns if column in seen}
    )


def _read_parquet(path: Path, source: str, columns: tuple[str, ...]) -> _Table:
    """A Parquet file (the wanted columns only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[column for column in columns if column in names])
    except (pa.ArrowException, OSError) as error:
        raise DataFileError(f"{source}: not a readable Parquet file ({error})") from None
    values = {column: table.column(column).to_pylist() for column in table.column_names}
    return _Table(source, "row", list(range(1, table.num_rows + 1)), names, values)


def _read_disk(path: Path, source: str, columns: tuple[str, ...]) -> _Table | dict[str, _Table]:
    """A folder written by ``save_to_disk``."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataFileError(f"{source}: a folder that datasets' save_to_disk did not write") from None
    return _from_datasets(loaded, source, columns)


def _read_hub(source: str, columns: tuple[str, ...]) -> _Table | dict[str, _Table]:
    """``hub:<dataset>[:<config>]`` from the Hugging Face hub."""
    import datasets

    dataset, _, config = source.removeprefix(HUB_PREFIX).partition(":")
    try:
        loaded = datasets.load_dataset(dataset, config or None)
    except Exception as error:  # the hub's errors are many (network, auth, unknown name): each is this source's
        raise DataFileError(f"{source}: cannot load it from the Hugging Face hub ({error})") from error
    return _from_datasets(loaded, source, columns)


def _from_datasets(
    loaded: datasets.Dataset | datasets.DatasetDict, source: str, columns: tuple[str, ...]
) -> _Table | dict[str, _Table]:
    """A table, or a table per split (named train / validation / test) of a dataset dictionary."""
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return _dataset_table(loaded, source, columns)
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataFileError(f"{source}: a {type(loaded).__name__}, not a Dataset or DatasetDict")
    tables: dict[str, _Table] = {}
    for name, dataset in loaded.items():
        split = SPLIT_ALIASES.get(name, name)
        if split not in SPLIT_NAMES:
            continue
        if split in tables:
            raise DataFileError(
                f"{source}: two validation splits ({', '.join(n for n in loaded if SPLIT_ALIASES.get(n, n) == split)})"
            )
        tables[split] = _dataset_table(dataset, f"{source} [{name}]", columns)
    return tables


def _dataset_table(dataset: datasets.Dataset, source: str, columns: tuple[str, ...]) -> _Table:
    import datasets

    present = [column for column in columns if column in dataset.column_names]
    values = dataset.with_format(None).select_columns(present).to_dict()
    label = dataset.features.get(columns[-1])
    class_names = tuple(label.names) if isinstance(label, datasets.ClassLabel) else None
    return _Table(source, "row", list(range(1, len(dataset) + 1)), list(dataset.column_names), values, class_names)
