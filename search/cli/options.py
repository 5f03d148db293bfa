"""Command-line options generated from pydantic models: the one way every command's settings become flags.

Each field becomes a typer option (``--field-name``; ``--x/--no-x`` for booleans) that defaults to "not given";
values are validated by the pydantic model itself, so errors name the field and the allowed values. A command takes
``**values`` and is decorated with :func:`model_flags`; it reads the given values back with
:func:`collect_model_values`. The models must be light to import (no torch): ``--help`` builds every command.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Collection
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _is_sequence(annotation: Any) -> bool:
    inner = [a for a in get_args(annotation) if a is not type(None)] if _is_optional(annotation) else [annotation]
    return any(get_origin(a) is tuple for a in inner)


def _help(name: str, field: Any) -> str:
    annotation = field.annotation
    parts = [(field.description or name.replace("_", " ")).rstrip(".")]
    if get_origin(annotation) is Literal and not field.description:
        parts.append("one of " + ", ".join(str(choice) for choice in get_args(annotation)))
    if _is_sequence(annotation):
        parts.append("comma-separated")
    if _is_optional(annotation):
        parts.append("'none' for none")
    if not field.is_required():
        parts.append(f"default {field.default}")
    return "; ".join(parts)


def model_parameters(model: type[BaseModel], panel: str) -> list[inspect.Parameter]:
    """Keyword-only parameters, one per field of ``model``, carrying typer options (all default to None)."""
    parameters = []
    for name, field in model.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        if field.annotation is bool:
            option = typer.Option(
                f"{flag}/--no-{name.replace('_', '-')}", help=_help(name, field), rich_help_panel=panel
            )
            annotation: Any = Annotated[bool | None, option]
        else:
            option = typer.Option(flag, help=_help(name, field), rich_help_panel=panel, show_default=False)
            annotation = Annotated[str | None, option]
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return parameters


def model_flags(*groups: tuple[type[BaseModel], str], exclude: Collection[str] = ()) -> Callable[[_Command], _Command]:
    """Give a command that takes ``**values`` one flag per field of each ``(model, help panel)`` group, after its own
    parameters; fields named in ``exclude`` get none."""

    def decorate(command: _Command) -> _Command:
        own = inspect.signature(command, eval_str=True).parameters.values()
        flags = [p for model, panel in groups for p in model_parameters(model, panel) if p.name not in exclude]
        command.__signature__ = inspect.Signature([*(p for p in own if p.kind is not p.VAR_KEYWORD), *flags])
        return command

    return decorate


def collect_model_values(model: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``model`` that the user gave, in a form pydantic validates (tuples split, 'none' -> None)."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        raw = given.get(name)
        if raw is None:
            continue
        annotation = field.annotation
        if isinstance(raw, str) and _is_optional(annotation) and raw.lower() == "none":
            values[name] = None
        elif isinstance(raw, str) and _is_sequence(annotation):
            values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
        elif isinstance(raw, str) and get_origin(annotation) is Literal:
            choices = {str(choice): choice for choice in get_args(annotation)}
            values[name] = choices.get(raw, raw)
        else:
            values[name] = raw
    return values
