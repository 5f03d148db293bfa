"""The flags that bring a user's own data and teacher (``--data``, ``--ood``, ``--text-column``, ``--label-column``,
``--data-name``, ``--teacher``), shared by ``teacher``, ``distill`` and ``search``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from distilsearch.search.cli.console import fail

if TYPE_CHECKING:
    from distilsearch.kdlib.data.user_data import DataSpec

PANEL = "Your data"
_Command = TypeVar("_Command", bound=Callable[..., Any])

DATA_PARAMETERS = {
    "data": Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="Your labelled text instead of --task: PATH (split 80/10/10 by content hash) or SPLIT=PATH with "
            "SPLIT train, validation or test (repeatable); CSV, TSV, JSON Lines, Parquet or a datasets save_to_disk "
            "folder; 'hub:NAME[:CONFIG]' loads a Hugging Face hub dataset (online only).",
            rich_help_panel=PANEL,
            show_default=False,
        ),
    ],
    "ood": Annotated[
        list[str] | None,
        typer.Option(
            "--ood",
            help="An out-of-distribution set as NAME=PATH (repeatable), with the same columns.",
            rich_help_panel=PANEL,
            show_default=False,
        ),
    ],
    "text_column": Annotated[
        list[str] | None,
        typer.Option(
            "--text-column",
            help="Text column of --data; give it twice for sentence pairs. Default: text.",
            rich_help_panel=PANEL,
            show_default=False,
        ),
    ],
    "label_column": Annotated[
        str | None,
        typer.Option(help="Label column of --data. Default: label.", rich_help_panel=PANEL, show_default=False),
    ],
    "data_name": Annotated[
        str | None,
        typer.Option(
            help="Task name of --data (default: the first file's name).", rich_help_panel=PANEL, show_default=False
        ),
    ],
}


def data_flags(command: _Command) -> _Command:
    """Give a command that takes ``**values`` the data flags (read them back with :func:`data_spec`)."""
    signature = inspect.signature(command, eval_str=True)
    own = list(signature.parameters.values())
    keyword = [p for p in own if p.kind is p.VAR_KEYWORD]
    rest = [p for p in own if p.kind is not p.VAR_KEYWORD]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in DATA_PARAMETERS.items()
    ]
    command.__signature__ = signature.replace(parameters=[*rest, *added, *keyword])
    return command


def data_spec(values: dict[str, Any]) -> DataSpec | None:
    """The DataSpec the data flags in ``values`` describe (removed from ``values``), or None without ``--data``;
    a bad flag value exits with an error naming it."""
    from distilsearch.kdlib.data.user_data import DataFileError, data_spec_from_arguments

    given = {name: values.pop(name, None) for name in DATA_PARAMETERS}
    if not given["data"]:
        extra = [f"--{name.replace('_', '-')}" for name, value in given.items() if value]
        if extra:
            fail(f"{', '.join(extra)} describe(s) --data; give the data files with --data PATH")
        return None
    try:
        return data_spec_from_arguments(
            given["data"], given["ood"] or [], given["text_column"], given["label_column"], given["data_name"]
        )
    except DataFileError as error:
        fail(str(error))


TeacherOption = Annotated[
    Path | None,
    typer.Option(
        "--teacher",
        help="Your fine-tuned teacher: a local Hugging Face *ForSequenceClassification folder (BERT, RoBERTa, "
        "XLM-RoBERTa or ELECTRA; safetensors weights and its tokenizer). Default: fine-tune one from --base.",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]


def checked_task_source(task: str | None, data: DataSpec | None) -> str | DataSpec:
    """The user's data, else the registered ``task`` (default rt-polarity); exits naming a bad value."""
    from distilsearch.kdlib.data.tasks import TASKS

    if data is not None:
        if task is not None:
            fail(f"give --task ({task!r}) or --data, not both (name your data with --data-name)")
        return data
    task = task or "rt-polarity"
    if task not in TASKS:
        fail(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))} (or bring your own with --data)")
    return task
