"""Command-line options generated from pydantic models, so every StudentSpec / KDConfig field has a flag."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import click
from pydantic import BaseModel


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return None


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_sequence(annotation: Any) -> bool:
    inner = [a for a in get_args(annotation) if a is not type(None)] if _is_optional(annotation) else [annotation]
    return any(get_origin(a) is tuple for a in inner)


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def model_options(model: type[BaseModel], prefix: str = "") -> list[click.Option]:
    """One ``--field-name`` option per field (``--x/--no-x`` for booleans, a choice list for literals)."""
    options = []
    for name, field in model.model_fields.items():
        flag = f"--{prefix}{name.replace('_', '-')}"
        annotation = field.annotation
        default = None if field.is_required() else field.default
        shown = f" [default: {default}]" if default is not None else ""
        if _is_bool(annotation):
            negative = f"--{prefix}no-{name.replace('_', '-')}"
            options.append(click.Option([f"{flag}/{negative}", name], default=None, help=f"{name}{shown}"))
            continue
        choices = _choices(annotation)
        if choices is not None:
            kind: click.ParamType = click.Choice([str(choice) for choice in choices])
        else:
            kind = click.STRING
        extra = " (comma-separated)" if _is_sequence(annotation) else ""
        extra += " ('none' for none)" if _is_optional(annotation) else ""
        options.append(click.Option([flag, name], type=kind, default=None, help=f"{name}{extra}{shown}"))
    return options


def collect_model_values(model: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """The options of ``model`` that the user gave, converted so pydantic can validate them."""
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
        elif isinstance(raw, str) and (choices := _choices(annotation)) is not None:
            values[name] = next(choice for choice in choices if str(choice) == raw)
        else:
            values[name] = raw
    return values
