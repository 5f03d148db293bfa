"""Which teacher layers a student keeps, and which teacher layer each student layer is distilled from.

Two index conventions are used, and every function says which one it returns:

* **encoder indices** are 0-based positions in ``model.base_model.encoder.layer`` (``0 .. N-1``);
* **hidden-state indices** follow ``output_hidden_states=True``: ``hidden_states[0]`` is the embedding
  output and ``hidden_states[i]`` (``i >= 1``) is the output of encoder layer ``i - 1``. The attention map
  of hidden-state index ``i >= 1`` is ``attentions[i - 1]``; index 0 has none.

``N`` is the teacher's layer count and ``M`` the student's; every function accepts any ``1 <= M <= N``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal, get_args

LayerSelection = Literal["uniform", "first", "last", "alternate", "explicit"]
LayerMapping = Literal["uniform", "last", "skip"]
LAYER_SELECTIONS: tuple[str, ...] = get_args(LayerSelection)
LAYER_MAPPINGS: tuple[str, ...] = get_args(LayerMapping)


def _check_counts(num_student_layers: int, num_teacher_layers: int) -> None:
    if num_teacher_layers < 1:
        raise ValueError(f"num_teacher_layers={num_teacher_layers!r} must be >= 1")
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(
            f"num_student_layers={num_student_layers!r} must be in 1..{num_teacher_layers} (the teacher's layer count)"
        )


def check_explicit_layers(
    layers: Sequence[int], num_student_layers: int, num_teacher_layers: int | None = None
) -> None:
    """Raise ``ValueError`` unless ``layers`` are ``num_student_layers`` strictly increasing encoder indices.

    With ``num_teacher_layers`` the indices must also lie in ``0 .. num_teacher_layers - 1``.
    """
    values = list(layers)
    if len(values) != num_student_layers:
        raise ValueError(f"layers={tuple(values)} must list exactly num_layers={num_student_layers} indices")
    if any(b <= a for a, b in pairwise(values)):
        raise ValueError(f"layers={tuple(values)} must be strictly increasing (sorted, no duplicates)")
    if values and values[0] < 0:
        raise ValueError(f"layers={tuple(values)} must be encoder indices >= 0")
    if values and num_teacher_layers is not None and values[-1] >= num_teacher_layers:
        raise ValueError(
            f"layers={tuple(values)} must be encoder indices in 0..{num_teacher_layers - 1} "
            f"(the teacher has {num_teacher_layers} layers)"
        )


def select_teacher_layers(
    selection: str,
    num_student_layers: int,
    num_teacher_layers: int,
    explicit: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Encoder indices of the teacher layers a student of ``M`` layers is built from (increasing).

    * ``uniform``: TinyBERT's g(m) = m * N / M, i.e. encoder index ``floor(m * N / M) - 1`` for
      ``m = 1..M``; always ends with the teacher's top layer (12 -> 4 keeps 2, 5, 8, 11).
    * ``first``: ``0 .. M-1``. ``last``: ``N-M .. N-1``.
    * ``alternate``: DistilBERT's "one layer out of two", generalised to a stride ``s = N // M`` from the
      bottom: ``0, s, 2s, ...`` (12 -> 6 keeps 0, 2, 4, 6, 8, 10; M = N keeps every layer).
    * ``explicit``: ``explicit`` itself, checked by :func:`check_explicit_layers`.
    """
    if selection not in LAYER_SELECTIONS:
        raise ValueError(f"layer_selection={selection!r} is not one of {LAYER_SELECTIONS}")
    _check_counts(num_student_layers, num_teacher_layers)
    m, n = num_student_layers, num_teacher_layers
    if selection == "explicit":
        if explicit is None:
            raise ValueError("layers=None: layer_selection='explicit' needs the encoder indices to keep")
        check_explicit_layers(explicit, m, n)
        return tuple(int(index) for index in explicit)
    if explicit is not None:
        raise ValueError(f"layers={tuple(explicit)} is only allowed with layer_selection='explicit'")
    if selection == "uniform":
        return tuple((k * n) // m - 1 for k in range(1, m + 1))
    if selection == "first":
        return tuple(range(m))
    if selection == "last":
        return tuple(range(n - m, n))
    stride = n // m
    return tuple(k * stride for k in range(m))


def intermediate_layer_map(
    mapping: str, num_student_layers: int, num_teacher_layers: int
) -> tuple[tuple[int, int], ...]:
    """``(student, teacher)`` hidden-state index pairs for intermediate (hidden/attention) losses.

    The first pair is always the embeddings ``(0, 0)``; then one pair per student layer ``m = 1..M``:

    * ``uniform``: TinyBERT, ``m -> floor(m * N / M)``.
    * ``last``: PKD-Last, the top ``M`` teacher layers, ``m -> N - M + m``.
    * ``skip``: PKD-Skip, every ``k = N // M``-th layer, ``m -> m * k`` for ``m < M``; the student's top
      layer is tied to the teacher's top layer ``N`` (the one the logits come from).

    The student's top layer always maps to the teacher's top layer, and every pair is a valid index into
    ``hidden_states`` of both models.
    """
    if mapping not in LAYER_MAPPINGS:
        raise ValueError(f"layer_mapping={mapping!r} is not one of {LAYER_MAPPINGS}")
    _check_counts(num_student_layers, num_teacher_layers)
    m, n = num_student_layers, num_teacher_layers
    if mapping == "uniform":
        teacher = [(k * n) // m for k in range(1, m + 1)]
    elif mapping == "last":
        teacher = [n - m + k for k in range(1, m + 1)]
    else:
        teacher = [k * (n // m) for k in range(1, m)] + [n]
    return ((0, 0), *((k, t) for k, t in enumerate(teacher, start=1)))
