"""Deployment limits of a search space, checked analytically from a student's sizes before anything trains.

* ``min_speedup``: teacher FLOPs / student FLOPs of one forward at batch 1 x 64 tokens
  (:func:`distilsearch.kdlib.measure.flops.theoretical_speedup`); weight bits do not change FLOPs.
* ``max_params``: total parameters of the student (:func:`kdlib.measure.footprint.bert_parameter_count`) with the
  teacher's vocabulary, positions, token types and labels.
* ``max_size_mb``: megabytes (10^6 bytes) of the student's weights at its ``weight_bits``
  (:func:`kdlib.measure.footprint.bert_weight_bytes`: fp32 tensor data of the safetensors file for 32 bits, the packed
  size of :func:`distilsearch.kdlib.students.quantization.quantized_size_bytes` for 8 and 2 bits).

``trim_vocab`` students are counted with the teacher's full vocabulary: the trimmed size depends on the task's data,
which the space does not know, so their parameters and size are upper bounds (a trimmed student that would fit may
be excluded, one that does not fit never is). The head count changes neither FLOPs nor parameters (attention width
equals the hidden size), so students are counted with one head.

Counts are made on a ``BertConfig`` of the teacher's sizes: they are exact for every supported family
(:data:`distilsearch.kdlib.students.families.SUPPORTED_MODEL_TYPES`), whose parameters and FLOPs are BERT's (a
RoBERTa or ELECTRA head's dense layer takes the place of BERT's pooler).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import BertConfig

    from distilsearch.envs.space import TeacherShape

SPEEDUP_SHAPE = (1, 64)
MEGABYTE = 1_000_000
FLAGS = {"min_speedup": "--min-speedup", "max_params": "--max-params", "max_size_mb": "--max-size-mb"}
SIZES = ("num_layers", "hidden_size", "ffn_size")
INPUTS = {"min_speedup": SIZES, "max_params": SIZES, "max_size_mb": (*SIZES, "weight_bits")}
"""The student fields each limit depends on."""


def _positive(name: str, value: Any, integer: bool) -> float | int | None:
    """``value`` as a positive finite number (an int for ``integer``), None kept; ValueError naming it otherwise."""
    if value is None:
        return None
    kind = "a positive integer" if integer else "a positive finite number"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be {kind}")
    if integer and value != int(value):
        raise ValueError(f"{name}={value!r} must be {kind}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Limits:
    """Deployment limits; None means unlimited. Values are validated and canonical (floats, ``max_params`` int)."""

    min_speedup: float | None = None
    max_params: int | None = None
    max_size_mb: float | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = _positive(item.name, getattr(self, item.name), integer=item.name == "max_params")
            object.__setattr__(self, item.name, value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Limits:
        """Build from ``{min_speedup: ..., max_params: ..., max_size_mb: ...}``; unknown keys are errors."""
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"limits must be a mapping such as {{min_speedup: 3}}, got {data!r}")
        data = dict(data or {})
        unknown = set(data) - set(FLAGS)
        if unknown:
            raise ValueError(f"limits have unknown keys {sorted(unknown)}; known: {list(FLAGS)}")
        return cls(**data)

    def to_dict(self) -> dict[str, float | int]:
        """The limits that are set, in a fixed order."""
        return {name: getattr(self, name) for name in FLAGS if getattr(self, name) is not None}

    def merged(self, other: Limits | Mapping[str, Any]) -> Limits:
        """These limits with every limit set in ``other`` replacing ours."""
        other = other if isinstance(other, Limits) else Limits.from_dict(other)
        return Limits(**(self.to_dict() | other.to_dict()))


def show(name: str, bound: float) -> str:
    """``min_speedup=3 (--min-speedup)``: a limit as the space and the command line name it."""
    text = str(bound) if isinstance(bound, int) else f"{bound:g}"
    return f"{name}={text} ({FLAGS[name]})"


def meets(name: str, value: float | np.ndarray, bound: float) -> bool | np.ndarray:
    """Whether measured values satisfy the limit ``name`` at ``bound`` (elementwise for an array)."""
    return value >= bound if name == "min_speedup" else value <= bound


def describe(name: str, value: float) -> str:
    """A measured value in words: ``5.12x FLOPs speed-up at batch 1 x 64``, ``1,234 parameters``, ``0.0452 MB``."""
    if name == "min_speedup":
        return f"{value:.4g}x FLOPs speed-up at batch 1 x 64"
    if name == "max_params":
        return f"{int(value):,} parameters"
    return f"{value:.4g} MB of weights"


def best(name: str, values: np.ndarray) -> str:
    """The best of ``values`` for limit ``name`` in words: ``the fastest in the space reaches 180.2x ...``."""
    if name == "min_speedup":
        return f"the fastest in the space reaches {describe(name, float(values.max()))}"
    return f"the smallest in the space has {describe(name, float(values.min()))}"


@functools.lru_cache(maxsize=65536)
def bert_config(teacher: TeacherShape, num_layers: int, hidden_size: int, ffn_size: int, num_heads: int) -> BertConfig:
    """A ``BertConfig`` with the teacher's vocabulary, positions, token types and labels and the given sizes.

    It counts for a teacher of any supported family (see the module docstring).
    """
    from transformers import BertConfig  # here, not at the top: spaces without limits never pay for importing torch

    return BertConfig(
        vocab_size=teacher.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=ffn_size,
        max_position_embeddings=teacher.max_position_embeddings,
        type_vocab_size=teacher.type_vocab_size,
        num_labels=teacher.num_labels,
    )


def teacher_config(teacher: TeacherShape) -> BertConfig:
    """A ``BertConfig`` of a teacher shape (every size that FLOPs and parameter counts need, for any family)."""
    return bert_config(
        teacher, teacher.num_hidden_layers, teacher.hidden_size, teacher.intermediate_size, teacher.num_attention_heads
    )


def measure(name: str, teacher: TeacherShape, values: Mapping[str, Any]) -> float:
    """The value limit ``name`` checks for a student with ``values`` (the fields of :data:`INPUTS`)."""
    from distilsearch.kdlib.measure.flops import theoretical_speedup  # imports torch: see bert_config
    from distilsearch.kdlib.measure.footprint import bert_parameter_count, bert_weight_bytes

    config = bert_config(teacher, *(int(values[field]) for field in SIZES), num_heads=1)
    if name == "min_speedup":
        if teacher.max_position_embeddings < SPEEDUP_SHAPE[1]:
            raise ValueError(
                f"min_speedup is measured on {SPEEDUP_SHAPE[1]} tokens, but the teacher's "
                f"max_position_embeddings={teacher.max_position_embeddings}"
            )
        return theoretical_speedup(teacher_config(teacher), config, *SPEEDUP_SHAPE)
    if name == "max_params":
        return float(bert_parameter_count(config))
    return bert_weight_bytes(config, int(values["weight_bits"])) / MEGABYTE
