"""Distillation losses: pure functions on tensors, with no knowledge of the models that produced them.

Conventions shared by every function:

* ``attention_mask`` is ``(batch, seq)``; a nonzero entry marks a real token, zero marks padding.
  Padded positions never influence a loss value or its gradient. A mask with no real token is rejected.
* Teacher tensors are used as given: compute them under ``torch.no_grad()`` (or detach them) to keep
  gradients away from the teacher.
* Bad input (shapes, widths, head counts, temperatures, weights) raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["mean", "sum", "none"]
AttentionKind = Literal["mse", "kl", "cosine"]

ATTENTION_KINDS: tuple[str, ...] = ("mse", "kl", "cosine")
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
KL_EPS = 1e-12
"""Floor applied to attention probabilities before taking logarithms in the KL attention loss (raised to
the dtype's smallest normal number where that is larger, e.g. float16)."""


def _check_float_tensor(name: str, value: object, ndim: int) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    return value


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_mask(attention_mask: Tensor | None, batch: int, seq: int) -> Tensor | None:
    """Validate a ``(batch, seq)`` padding mask and return it as booleans (True = real token)."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, Tensor):
        raise ValueError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != (batch, seq):
        raise ValueError(f"attention_mask must have shape {(batch, seq)}, got {tuple(attention_mask.shape)}")
    real = attention_mask != 0
    if not bool(real.any()):
        raise ValueError("attention_mask marks every position as padding")
    return real


def _masked_mean(values: Tensor, keep: Tensor | None) -> Tensor:
    """Mean of ``values`` over entries where ``keep`` (broadcastable to ``values``) is True."""
    if keep is None:
        return values.mean()
    keep = keep.expand_as(values)
    return torch.where(keep, values, torch.zeros_like(values)).sum() / keep.sum()


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _temperature_column(temperature: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """Validate a scalar or per-example temperature and return it as a ``(batch, 1)`` tensor."""
    if isinstance(temperature, Tensor):
        if temperature.dim() == 0:
            temperature = temperature.expand(batch)
        elif tuple(temperature.shape) != (batch,):
            shape = tuple(temperature.shape)
            raise ValueError(f"temperature tensor must be a scalar or have shape ({batch},), got {shape}")
        column = temperature.to(device=like.device, dtype=like.dtype).unsqueeze(-1)
    elif isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a positive number or tensor, got {temperature!r}")
    else:
        column = torch.full((batch, 1), float(temperature), dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(column).all() and (column > 0).all()):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return column


def soft_target_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor,
    reduction: Reduction = "mean",
) -> Tensor:
    """Hinton KD: ``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` per example, then reduced.

    ``temperature`` is a positive number or a tensor of shape ``(batch,)`` (one temperature per example, as
    produced by an adaptive schedule); each example is scaled by its own ``T_i^2``. ``reduction`` is
    ``"mean"`` (batch mean), ``"sum"`` or ``"none"`` (a ``(batch,)`` tensor).
    """
    _check_float_tensor("student_logits", student_logits, 2)
    _check_float_tensor("teacher_logits", teacher_logits, 2)
    if student_logits.shape != teacher_logits.shape:
        shapes = f"{tuple(student_logits.shape)} != {tuple(teacher_logits.shape)}"
        raise ValueError(f"student_logits shape and teacher_logits shape differ: {shapes}")
    _check_reduction(reduction)
    temps = _temperature_column(temperature, student_logits.shape[0], student_logits)
    log_p_student = F.log_softmax(student_logits / temps, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temps, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return _reduce(kl * temps.squeeze(-1) ** 2, reduction)


def hard_label_loss(student_logits: Tensor, labels: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Cross-entropy of ``(batch, classes)`` logits against integer class labels of shape ``(batch,)``."""
    _check_float_tensor("student_logits", student_logits, 2)
    _check_reduction(reduction)
    batch, num_classes = student_logits.shape
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        kind = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor, got {kind}")
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if not bool(((labels >= 0) & (labels < num_classes)).all()):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.tolist()}")
    return F.cross_entropy(student_logits, labels.long(), reduction=reduction)


class HiddenProjection(nn.Module):
    """Learned maps W_h (student width -> teacher width): one ``nn.Linear`` per mapped student layer.

    Layers are indexed like Hugging Face ``hidden_states`` (0 is the embedding output), so the TinyBERT
    embedding projection W_e is ``projection[0]``. Each entry is a plain module to pass as the
    ``projection`` argument of the losses below.
    """

    def __init__(self, student_width: int, teacher_width: int, layers: Iterable[int], bias: bool = True) -> None:
        super().__init__()
        _check_positive_int("student_width", student_width)
        _check_positive_int("teacher_width", teacher_width)
        layer_list = list(layers)
        if not layer_list:
            raise ValueError("layers must name at least one student layer, got none")
        for layer in layer_list:
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ValueError(f"layers must hold non-negative ints, got {layer!r}")
        if len(set(layer_list)) != len(layer_list):
            raise ValueError(f"layers must not repeat, got {layer_list}")
        self.student_width = student_width
        self.teacher_width = teacher_width
        self.maps = nn.ModuleDict(
            {str(layer): nn.Linear(student_width, teacher_width, bias=bias) for layer in layer_list}
        )

    @property
    def layers(self) -> tuple[int, ...]:
        """The student layers that own a projection, in construction order."""
        return tuple(int(key) for key in self.maps)

    def __getitem__(self, layer: int) -> nn.Linear:
        key = str(layer)
        if key not in self.maps:
            raise ValueError(f"layer {layer!r} has no projection; mapped layers are {self.layers}")
        return self.maps[key]

    def forward(self, hidden: Tensor, layer: int) -> Tensor:
        """Project the student ``hidden`` states of ``layer`` to the teacher width."""
        return self[layer](hidden)


def _project_pair(
    student: Tensor,
    teacher: Tensor,
    projection: nn.Module | None,
    attention_mask: Tensor | None,
    names: tuple[str, str],
) -> tuple[Tensor, Tensor | None]:
    """Validate ``(batch, seq, width)`` student/teacher states, project the student, validate the mask."""
    student_name, teacher_name = names
    _check_float_tensor(student_name, student, 3)
    _check_float_tensor(teacher_name, teacher, 3)
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(
            f"{student_name} (batch, seq) {tuple(student.shape[:2])} != {teacher_name} (batch, seq) "
            f"{tuple(teacher.shape[:2])}"
        )
    projected = student if projection is None else projection(student)
    if projected.shape != teacher.shape:
        source = "without a projection" if projection is None else "after projection"
        raise ValueError(
            f"{student_name} has shape {tuple(projected.shape)} {source}, expected {teacher_name} shape "
            f"{tuple(teacher.shape)}"
        )
    return projected, _check_mask(attention_mask, teacher.shape[0], teacher.shape[1])


def _projected_mse(
    student: Tensor,
    teacher: Tensor,
    projection: nn.Module | None,
    attention_mask: Tensor | None,
    names: tuple[str, str],
) -> Tensor:
    projected, real = _project_pair(student, teacher, projection, attention_mask, names)
    return _masked_mean((projected - teacher).pow(2).mean(dim=-1), real)


def hidden_state_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    projection: nn.Module | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """TinyBERT hidden-state loss: MSE between ``projection(student_hidden)`` and ``teacher_hidden``.

    Inputs are ``(batch, seq, width)``; the mean runs over real tokens and teacher features. Without a
    projection both widths must match.
    """
    names = ("student_hidden", "teacher_hidden")
    return _projected_mse(student_hidden, teacher_hidden, projection, attention_mask, names)


def embedding_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    projection: nn.Module | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """TinyBERT embedding-layer loss: MSE between ``projection(student_emb)`` (W_e) and ``teacher_emb``."""
    names = ("student_emb", "teacher_emb")
    return _projected_mse(student_emb, teacher_emb, projection, attention_mask, names)


def cosine_embedding_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    projection: nn.Module | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """DistilBERT hidden-state loss: ``1 - cos(student, teacher)`` per token, averaged over real tokens."""
    projected, real = _project_pair(
        student_hidden, teacher_hidden, projection, attention_mask, ("student_hidden", "teacher_hidden")
    )
    per_token = 1.0 - F.cosine_similarity(projected, teacher_hidden, dim=-1)
    return _masked_mean(per_token, real)


def shared_head_count(student_heads: int, teacher_heads: int) -> int:
    """Head count both sides are mapped to: the smaller count if it divides the larger, otherwise 1."""
    _check_positive_int("student_heads", student_heads)
    _check_positive_int("teacher_heads", teacher_heads)
    low, high = sorted((student_heads, teacher_heads))
    return low if high % low == 0 else 1


def map_heads(attn: Tensor, num_target_heads: int) -> Tensor:
    """Average ``(batch, heads, q, k)`` attention maps down to ``num_target_heads`` heads.

    When ``heads`` is a multiple of ``num_target_heads``, each run of ``heads // num_target_heads``
    consecutive heads is averaged into one. Otherwise every head is averaged into a single map, so the
    result has one head. The head count never grows, and averaged probability rows still sum to 1.
    """
    _check_float_tensor("attn", attn, 4)
    _check_positive_int("num_target_heads", num_target_heads)
    batch, heads, queries, keys = attn.shape
    if heads == num_target_heads:
        return attn
    if heads % num_target_heads == 0:
        return attn.reshape(batch, num_target_heads, heads // num_target_heads, queries, keys).mean(dim=2)
    return attn.mean(dim=1, keepdim=True)


def _floored_log(probabilities: Tensor) -> Tensor:
    return probabilities.clamp_min(max(KL_EPS, torch.finfo(probabilities.dtype).tiny)).log()


def attention_loss(
    student_attn: Tensor,
    teacher_attn: Tensor,
    kind: AttentionKind = "mse",
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Loss between attention probability maps of shape ``(batch, heads, q, k)``.

    Heads are first aligned with :func:`map_heads` to :func:`shared_head_count` heads on both sides (the
    side with more heads is averaged in groups, or both are averaged to one map), so any head counts work.

    * ``"mse"``: mean squared error over real (query, key) pairs. TinyBERT applies MSE to pre-softmax
      scores; this uses the probabilities that Hugging Face ``output_attentions`` returns.
    * ``"kl"``: per query row, ``sum_k t * log(t / s)`` over real keys with both maps floored at
      :data:`KL_EPS`, averaged over real query rows (MiniLM's attention transfer).
    * ``"cosine"``: per query row, ``1 - cos(t, s)`` over real keys, averaged over real query rows.

    With a mask, ``q`` and ``k`` must both equal the mask's sequence length.
    """
    _check_float_tensor("student_attn", student_attn, 4)
    _check_float_tensor("teacher_attn", teacher_attn, 4)
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    if student_attn.shape[0] != teacher_attn.shape[0] or student_attn.shape[2:] != teacher_attn.shape[2:]:
        raise ValueError(
            f"student_attn shape {tuple(student_attn.shape)} and teacher_attn shape "
            f"{tuple(teacher_attn.shape)} must agree on batch, query and key sizes"
        )
    batch, _, queries, keys = teacher_attn.shape
    if attention_mask is not None and queries != keys:
        raise ValueError(f"attention_mask needs square attention maps, got q={queries}, k={keys}")
    real = _check_mask(attention_mask, batch, keys)
    heads = shared_head_count(student_attn.shape[1], teacher_attn.shape[1])
    student = map_heads(student_attn, heads)
    teacher = map_heads(teacher_attn, heads)
    real_keys = None if real is None else real[:, None, None, :]
    real_rows = None if real is None else real[:, None, :]
    if real_keys is not None:
        student = student.masked_fill(~real_keys, 0.0)
        teacher = teacher.masked_fill(~real_keys, 0.0)
    if kind == "mse":
        keep = None if real is None else real_keys & real[:, None, :, None]
        return _masked_mean((student - teacher).pow(2), keep)
    if kind == "kl":
        log_ratio = _floored_log(teacher) - _floored_log(student)
        per_row = (teacher * log_ratio).sum(dim=-1)
    else:
        per_row = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    return _masked_mean(per_row, real_rows)


def _relations(values: Tensor, num_heads: int, real: Tensor | None) -> Tensor:
    """Log of ``softmax(V V^T / sqrt(d))`` per relation head: ``(batch, heads, seq, seq)``."""
    batch, seq, width = values.shape
    head_width = width // num_heads
    split = values.reshape(batch, seq, num_heads, head_width).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(head_width)
    if real is not None:
        scores = scores.masked_fill(~real[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def value_relation_loss(
    student_values: Tensor,
    teacher_values: Tensor,
    num_relation_heads: int,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """MiniLM value-relation loss: ``KL(teacher relation || student relation)``.

    Value vectors ``(batch, seq, width)`` from each side are re-split into ``num_relation_heads`` heads of
    width ``d = width / num_relation_heads`` (the widths may differ); the relation per head is
    ``softmax(V V^T / sqrt(d))`` over real keys. The KL is summed over keys and averaged over heads and
    real query positions. Works for any per-token vectors (MiniLMv2 also uses queries and keys).
    """
    _check_float_tensor("student_values", student_values, 3)
    _check_float_tensor("teacher_values", teacher_values, 3)
    if student_values.shape[:2] != teacher_values.shape[:2]:
        raise ValueError(
            f"student_values (batch, seq) {tuple(student_values.shape[:2])} != teacher_values (batch, seq) "
            f"{tuple(teacher_values.shape[:2])}"
        )
    _check_positive_int("num_relation_heads", num_relation_heads)
    for name, values in (("student_values", student_values), ("teacher_values", teacher_values)):
        if values.shape[-1] % num_relation_heads:
            raise ValueError(
                f"{name} width {values.shape[-1]} is not divisible by num_relation_heads={num_relation_heads}"
            )
    batch, seq, _ = teacher_values.shape
    real = _check_mask(attention_mask, batch, seq)
    log_student = _relations(student_values, num_relation_heads, real)
    log_teacher = _relations(teacher_values, num_relation_heads, real)
    terms = log_teacher.exp() * (log_teacher - log_student)
    if real is not None:
        # Padded keys carry zero probability; zero them explicitly since -inf - -inf is NaN in low precision.
        terms = terms.masked_fill(~real[:, None, None, :], 0.0)
    return _masked_mean(terms.sum(dim=-1), None if real is None else real[:, None, :])


def combine_losses(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of scalar loss terms, plus every term's detached value for logging.

    Each term needs a weight; a weight without a term is allowed only when it is zero. Zero-weight terms
    are left out of the total (so a NaN there cannot leak in) but still reported. NaN or inf is not
    raised here: check ``torch.isfinite(total)`` and read the returned values to find the culprit.
    """
    for key, weight in weights.items():
        is_number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not (is_number and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weights[{key!r}] must be a finite number >= 0, got {weight!r}")
    unknown = sorted(set(terms) - set(weights))
    if unknown:
        raise ValueError(f"terms has keys without a weight: {unknown}")
    missing = sorted(key for key, weight in weights.items() if key not in terms and weight != 0)
    if missing:
        raise ValueError(f"weights has nonzero weights for missing terms: {missing}")
    for key, term in terms.items():
        if not isinstance(term, Tensor) or term.dim() != 0:
            raise ValueError(f"terms[{key!r}] must be a scalar tensor, got {term!r}")
    active = [weights[key] * term for key, term in terms.items() if weights[key] != 0]
    if not active:
        raise ValueError(f"weights gives no term a nonzero weight: {dict(weights)}")
    total = sum(active[1:], start=active[0])
    return total, {key: term.detach() for key, term in terms.items()}
