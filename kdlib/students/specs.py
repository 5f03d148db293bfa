"""Immutable, validated descriptions of a student architecture (:class:`StudentSpec`) and of how it is
distilled (:class:`KDConfig`).

Both are frozen pydantic models that reject unknown fields, validate on construction (errors are
``ValueError``s -- pydantic's ``ValidationError`` -- naming the field, the bad value and what is allowed),
round-trip through ``model_dump_json`` / ``model_validate_json`` and expose :meth:`content_hash`, a key
that is identical across processes and machines for equal content.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from distilsearch.kdlib.students.layer_map import LayerMapping, LayerSelection, check_explicit_layers


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got the bool {value!r}")
    return value


_Int = Annotated[int, BeforeValidator(_reject_bool)]
PositiveInt = Annotated[_Int, Field(gt=0)]
NonNegativeInt = Annotated[_Int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Selection = Literal["importance", "position"]


class HashedModel(BaseModel):
    """Frozen, strict-keyed base with a process-independent content hash.

    ``LATER_FIELDS`` maps each field added after hashes of the model were first stored (in tables, stores, ledgers)
    to the value that behaves as the model did before the field existed. A later field at that value, or one that has
    no effect in this instance (:meth:`inert_fields`), is left out of the hash: adding a field changes a stored hash
    exactly when it changes what is trained.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    LATER_FIELDS: ClassVar[dict[str, Any]] = {}

    def inert_fields(self) -> set[str]:
        """The later fields that have no effect in this instance (none unless a model says so)."""
        return set()

    def hashed_fields(self) -> dict[str, Any]:
        """The JSON form of the fields that make the hash: all of them, less the later fields that change nothing."""
        inert = self.inert_fields()
        return {
            name: value
            for name, value in self.model_dump(mode="json").items()
            if name not in self.LATER_FIELDS or not (name in inert or getattr(self, name) == self.LATER_FIELDS[name])
        }

    def content_hash(self) -> str:
        """First 16 hex chars of the sha256 of the class name plus the sorted-key JSON of :meth:`hashed_fields`."""
        payload = {"kind": type(self).__name__, "fields": self.hashed_fields()}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class StudentSpec(HashedModel):
    """A BERT student: its sizes and how each part is chosen from (or not taken from) the teacher.

    Sizes are always concrete; :meth:`identity` builds the spec that keeps the whole teacher.
    ``layers`` (0-based encoder indices) is given exactly when ``layer_selection == "explicit"``.
    ``head_selection`` also governs which dimensions inside a head are kept when the head size shrinks.
    ``weight_bits`` and ``trim_vocab`` describe post-processing (quantisation, vocabulary trimming) that is
    applied after cutting and training; :func:`distilsearch.kdlib.students.cutting.cut_student` does not act on them.
    """

    num_layers: PositiveInt
    hidden_size: PositiveInt
    num_heads: PositiveInt
    ffn_size: PositiveInt
    layer_selection: LayerSelection = "uniform"
    layers: tuple[_Int, ...] | None = None
    head_selection: Selection = "importance"
    ffn_selection: Selection = "importance"
    hidden_selection: Selection = "importance"
    init: Literal["teacher", "random"] = "teacher"
    weight_bits: Literal[32, 8, 2] = 32
    trim_vocab: bool = False

    @model_validator(mode="after")
    def _check_local(self) -> Self:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.layer_selection == "explicit":
            if self.layers is None:
                raise ValueError("layers=None: layer_selection='explicit' needs the encoder indices to keep")
            check_explicit_layers(self.layers, self.num_layers)
        elif self.layers is not None:
            raise ValueError(
                f"layers={self.layers} is only allowed with layer_selection='explicit', "
                f"not layer_selection={self.layer_selection!r}"
            )
        return self

    @property
    def head_size(self) -> int:
        """Per-head width ``hidden_size // num_heads`` (every supported family: attention width == hidden size)."""
        return self.hidden_size // self.num_heads

    @classmethod
    def identity(cls, teacher_config: Any, **overrides: Any) -> StudentSpec:
        """The spec that keeps every layer, head, neuron and dimension of ``teacher_config``."""
        sizes = {
            "num_layers": teacher_config.num_hidden_layers,
            "hidden_size": teacher_config.hidden_size,
            "num_heads": teacher_config.num_attention_heads,
            "ffn_size": teacher_config.intermediate_size,
        }
        return cls(**(sizes | overrides))

    def validate_against(self, teacher_config: Any) -> Self:
        """Check the constraints that depend on the teacher (its config, of any supported family); return ``self``.

        Every size must be at most the teacher's, and explicit layer indices must exist in the teacher.
        """
        limits = {
            "num_layers": ("num_hidden_layers", teacher_config.num_hidden_layers),
            "hidden_size": ("hidden_size", teacher_config.hidden_size),
            "num_heads": ("num_attention_heads", teacher_config.num_attention_heads),
            "ffn_size": ("intermediate_size", teacher_config.intermediate_size),
        }
        for field, (teacher_field, limit) in limits.items():
            value = getattr(self, field)
            if value > limit:
                raise ValueError(f"{field}={value} must be in 1..{limit} (the teacher's {teacher_field})")
        if self.layers is not None:
            check_explicit_layers(self.layers, self.num_layers, teacher_config.num_hidden_layers)
        return self


class KDConfig(HashedModel):
    """How a student is distilled from its teacher.

    Prediction loss (Hinton et al.): ``alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) *
    CE(s, y)``; the default ``alpha=0.5, temperature=2.0`` weighs teacher and labels equally with mildly
    softened targets, a common task-distillation starting point. Intermediate terms are off by default
    (weight 0): ``embedding_weight`` / ``hidden_weight`` / ``attention_weight`` are TinyBERT's embedding,
    hidden-state and attention losses over the pairs of :func:`kdlib.students.layer_map.intermediate_layer_map`
    (``layer_mapping``); ``value_relation_weight`` is MiniLM's last-layer value-relation KL;
    ``cosine_weight`` is DistilBERT's cosine loss between last hidden states.

    ``temperature_schedule``: ``constant``; ``linear_decay`` anneals from ``temperature`` to 1 over
    training; ``adaptive`` sets a per-example temperature from the teacher's confidence (see
    :mod:`distilsearch.kdlib.training.temperature`).
    ``general_distillation_steps`` > 0 runs that many task-agnostic (intermediate-only) steps first, on
    ``general_corpus``: ``general-en`` (:mod:`distilsearch.kdlib.data.general_corpus`: SNLI and BBC sentences, none of
    the task's own data or evaluation text) or ``task`` (the task's training texts, as before the corpus existed);
    ``intermediate_share`` is the share of the task budget given to an intermediate-only phase before the prediction
    stage (TinyBERT's two stages at 0.5), or 0 to add the intermediate losses to the prediction stage (joint);
    ``progressive`` distils layer by layer bottom-up (MobileBERT). ``augmentation``: ``mask`` replaces
    random tokens with ``[MASK]``, ``shuffle`` permutes word pieces within a small window, ``ngram`` samples a
    random n-gram of the text (Tang et al. 2019), ``substitute`` replaces whole words by their nearest neighbours in
    the teacher's input embeddings (TinyBERT's word replacement). ``transfer_ratio`` is the share of every task-stage
    batch drawn from the task's transfer set (:mod:`distilsearch.kdlib.data.transfer_sets`: in-domain text without
    labels), learnt from the teacher's soft targets only (Hinton's transfer set).

    Defaults are the project's one recipe (``distilsearch distill``, the default search space and the benchmarks):
    ``lr=2e-4`` (small students cut from a MiniLM teacher reach 96.9 % retention with it in
    ``results/retention.md``; 5e-5, a fine-tuning rate, leaves them under-trained at search budgets) and
    ``max_length=64`` (the teacher's fine-tuning length and the latency protocol's sequence length).

    Budget: ``epochs`` unless ``max_steps`` is set, which then takes precedence (as in HF ``Trainer``).
    ``early_stopping_patience`` is a number of evaluations without improvement; ``None`` disables it.
    """

    alpha: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.5
    temperature: PositiveFloat = 2.0
    temperature_schedule: Literal["constant", "linear_decay", "adaptive"] = "constant"
    hidden_weight: NonNegativeFloat = 0.0
    attention_weight: NonNegativeFloat = 0.0
    embedding_weight: NonNegativeFloat = 0.0
    attention_loss: Literal["mse", "kl", "cosine"] = "mse"
    value_relation_weight: NonNegativeFloat = 0.0
    cosine_weight: NonNegativeFloat = 0.0
    layer_mapping: LayerMapping = "uniform"
    general_distillation_steps: NonNegativeInt = 0
    general_corpus: Literal["general-en", "task"] = "general-en"
    intermediate_share: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.5
    progressive: bool = False
    augmentation: Literal["none", "mask", "shuffle", "ngram", "substitute"] = "none"
    transfer_ratio: Annotated[float, Field(ge=0.0, le=0.9, allow_inf_nan=False)] = 0.0
    max_steps: PositiveInt | None = None
    epochs: PositiveFloat = 3.0
    lr: PositiveFloat = 2e-4
    batch_size: PositiveInt = 32
    max_length: PositiveInt = 64
    seed: NonNegativeInt = 0
    early_stopping_patience: PositiveInt | None = None

    LATER_FIELDS: ClassVar[dict[str, Any]] = {"general_corpus": "task", "transfer_ratio": 0.0}

    def inert_fields(self) -> set[str]:
        """``general_corpus`` is read only when a general stage runs."""
        return {"general_corpus"} if self.general_distillation_steps == 0 else set()
