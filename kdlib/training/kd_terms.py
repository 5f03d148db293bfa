"""The distiller's loss terms as data: each term declares what it reads, where, how it is weighted and its loss.

A :class:`KDTerm` names the :class:`~distilsearch.kdlib.students.specs.KDConfig` field that weights it (a term is on
when that weight is > 0; ``weight_field=None`` means always on at weight 1, like the prediction loss), the student
hidden-state indices it uses for a student of ``L`` layers (each mapped to a teacher index by
:func:`~distilsearch.kdlib.students.layer_map.intermediate_layer_map`), whether those indices are projected through
W_h, the features it reads on both models, its phase and its loss. ``intermediate`` terms choose the layers of the
intermediate stages (one progressive block per index; a stage skips such a term where it has no index);
``prediction`` terms join the prediction loss. The distiller
computes and combines the enabled terms in registry order; each loss averages over its layer pairs. The pure loss
functions live in :mod:`distilsearch.kdlib.training.losses`.

Adding a term: add its weight to ``KDConfig`` (a ``NonNegativeFloat`` defaulting to 0.0; note that a new field changes
every config's ``content_hash``, which keys stored results), then make one :func:`register_kd_term` call with a
:class:`KDTerm` naming that field. Give it ``search_choices`` and its weight becomes a dimension of the default search
space (:meth:`distilsearch.envs.space.SearchSpace.default_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

from distilsearch.kdlib.students.specs import KDConfig
from distilsearch.kdlib.training.losses import (
    HiddenProjection,
    attention_loss,
    cosine_embedding_loss,
    embedding_loss,
    hard_label_loss,
    hidden_state_loss,
    soft_target_loss,
    value_relation_loss,
)

Feature = Literal["hidden", "attention", "values", "logits"]
Phase = Literal["intermediate", "prediction"]
FEATURES: tuple[str, ...] = get_args(Feature)
PHASES: tuple[str, ...] = get_args(Phase)


@dataclass(frozen=True)
class Features:
    """One model's features for a batch. ``hidden`` and ``attention`` are keyed by hidden-state index (the map of
    index ``l >= 1`` is encoder layer ``l - 1``'s); ``values`` are the last encoder layer's value vectors."""

    logits: Tensor
    hidden: Mapping[int, Tensor] = field(default_factory=dict)
    attention: Mapping[int, Tensor] = field(default_factory=dict)
    values: Tensor | None = None


@dataclass(frozen=True)
class TermInputs:
    """What a term's loss reads on one batch: both models' features, its ``(student, teacher)`` hidden-state index
    pairs in this stage, the padding mask and the run's context (``temperature`` only in the prediction stage)."""

    student: Features
    teacher: Features
    pairs: tuple[tuple[int, int], ...]
    mask: Tensor
    config: KDConfig
    projection: HiddenProjection | None
    relation_heads: int
    labels: Tensor
    augmented: Tensor
    temperature: Tensor | None


@dataclass(frozen=True)
class KDTerm:
    """One loss term: its weight field, student hidden-state indices (given the student's layer count), whether those
    go through W_h, the features it reads, its phase, its loss and the default search space's weight candidates."""

    name: str
    weight_field: str | None
    layers: Callable[[int], tuple[int, ...]]
    features: frozenset[Feature]
    loss: Callable[[TermInputs], Tensor]
    projected: bool = False
    phase: Phase = "intermediate"
    search_choices: tuple[float, ...] = ()

    def weight(self, config: KDConfig) -> float:
        """The term's weight under ``config`` (1 without a weight field)."""
        return 1.0 if self.weight_field is None else getattr(config, self.weight_field)

    def enabled(self, config: KDConfig) -> bool:
        """Whether ``config`` turns the term on (weight > 0)."""
        return self.weight(config) > 0


KD_TERMS: dict[str, KDTerm] = {}
"""The registered terms by name, in the order the distiller computes and combines them."""


def register_kd_term(term: KDTerm) -> KDTerm:
    """Add ``term`` to :data:`KD_TERMS`; a name already taken, an unknown weight field or feature is refused."""
    if term.name in KD_TERMS:
        raise ValueError(f"a KD term named {term.name!r} is already registered")
    if term.weight_field is not None and term.weight_field not in KDConfig.model_fields:
        raise ValueError(f"KD term {term.name!r}: weight_field={term.weight_field!r} is not a KDConfig field")
    if not term.features or not term.features <= set(FEATURES):
        raise ValueError(f"KD term {term.name!r}: features {sorted(term.features)} must be some of {FEATURES}")
    if term.phase not in PHASES:
        raise ValueError(f"KD term {term.name!r}: phase={term.phase!r} is not one of {PHASES}")
    if term.search_choices and term.weight_field is None:
        raise ValueError(f"KD term {term.name!r}: search_choices need a weight field")
    searched = {other.weight_field: other.name for other in KD_TERMS.values() if other.search_choices}
    if term.search_choices and term.weight_field in searched:
        raise ValueError(
            f"KD term {term.name!r}: {term.weight_field} is already searched by {searched[term.weight_field]!r}"
        )
    KD_TERMS[term.name] = term
    return term


def enabled_terms(config: KDConfig, phase: Phase | None = None) -> tuple[KDTerm, ...]:
    """The registered terms ``config`` turns on (of ``phase`` when given), in registry order."""
    return tuple(term for term in KD_TERMS.values() if term.enabled(config) and phase in (None, term.phase))


def embedding_layer(num_layers: int) -> tuple[int, ...]:
    """The embedding output, hidden-state index 0."""
    return (0,)


def encoder_layers(num_layers: int) -> tuple[int, ...]:
    """Every encoder layer's output, hidden-state indices ``1 .. L``."""
    return tuple(range(1, num_layers + 1))


def top_layer(num_layers: int) -> tuple[int, ...]:
    """The last encoder layer's output, hidden-state index ``L``."""
    return (num_layers,)


def no_layers(num_layers: int) -> tuple[int, ...]:
    """No hidden state (terms on the logits)."""
    return ()


def _mean(values: Iterable[Tensor]) -> Tensor:
    return torch.stack(list(values)).mean()


def _embedding(inputs: TermInputs) -> Tensor:
    """TinyBERT's embedding MSE through W_0."""
    student, teacher, projection = inputs.student.hidden, inputs.teacher.hidden, inputs.projection
    return _mean(embedding_loss(student[s].float(), teacher[t], projection[s], inputs.mask) for s, t in inputs.pairs)


def _hidden(inputs: TermInputs) -> Tensor:
    """TinyBERT's hidden-state MSE through W_h, averaged over the mapped layers."""
    student, teacher, projection = inputs.student.hidden, inputs.teacher.hidden, inputs.projection
    return _mean(hidden_state_loss(student[s].float(), teacher[t], projection[s], inputs.mask) for s, t in inputs.pairs)


def _attention(inputs: TermInputs) -> Tensor:
    """Attention-map loss of kind ``config.attention_loss`` (mse, kl, cosine), averaged over the mapped layers."""
    student, teacher, kind = inputs.student.attention, inputs.teacher.attention, inputs.config.attention_loss
    return _mean(attention_loss(student[s].float(), teacher[t], kind, inputs.mask) for s, t in inputs.pairs)


def _value_relation(inputs: TermInputs) -> Tensor:
    """MiniLM's value relation between both models' last-layer value vectors."""
    student, teacher = inputs.student.values, inputs.teacher.values
    return value_relation_loss(student.float(), teacher, inputs.relation_heads, inputs.mask)


def _prediction(inputs: TermInputs) -> Tensor:
    """``alpha * soft + (1 - alpha) * hard`` per example, soft only on augmented rows, averaged over the batch."""
    logits = inputs.student.logits.float()
    soft = soft_target_loss(logits, inputs.teacher.logits, inputs.temperature, reduction="none")
    hard = hard_label_loss(logits, inputs.labels, reduction="none")
    alpha = inputs.config.alpha
    return torch.where(inputs.augmented, soft, alpha * soft + (1 - alpha) * hard).mean()


def _cosine(inputs: TermInputs) -> Tensor:
    """DistilBERT's cosine loss between the last hidden states, the student's through W_L."""
    student, teacher, projection = inputs.student.hidden, inputs.teacher.hidden, inputs.projection
    return _mean(
        cosine_embedding_loss(student[s].float(), teacher[t], projection[s], inputs.mask) for s, t in inputs.pairs
    )


WEIGHT_CHOICES = (0.0, 0.1, 1.0)
"""The default search space's candidates for the TinyBERT weights."""

register_kd_term(
    KDTerm(
        "embedding",
        "embedding_weight",
        embedding_layer,
        frozenset({"hidden"}),
        _embedding,
        projected=True,
        search_choices=WEIGHT_CHOICES,
    )
)
register_kd_term(
    KDTerm(
        "hidden",
        "hidden_weight",
        encoder_layers,
        frozenset({"hidden"}),
        _hidden,
        projected=True,
        search_choices=WEIGHT_CHOICES,
    )
)
register_kd_term(
    KDTerm(
        "attention",
        "attention_weight",
        encoder_layers,
        frozenset({"attention"}),
        _attention,
        search_choices=WEIGHT_CHOICES,
    )
)
register_kd_term(KDTerm("value_relation", "value_relation_weight", top_layer, frozenset({"values"}), _value_relation))
register_kd_term(KDTerm("prediction", None, no_layers, frozenset({"logits"}), _prediction, phase="prediction"))
register_kd_term(
    KDTerm("cosine", "cosine_weight", top_layer, frozenset({"hidden"}), _cosine, projected=True, phase="prediction")
)
