"""Analytical FLOPs of a sequence-classifier forward pass of a supported family, counted from its configuration.

Families: :data:`distilsearch.kdlib.students.families.SUPPORTED_MODEL_TYPES`; they all cost what BERT costs (a
RoBERTa or ELECTRA head's ``H -> H`` dense layer takes the place of BERT's pooler and is counted as ``pooler``).

Only matrix multiplications are counted, as 2 FLOPs per multiply-add. Embedding lookups, biases, softmax,
LayerNorm, activations and dropout are left out (they are a small, roughly linear-in-size share). For batch
``B``, sequence length ``S``, hidden size ``H``, intermediate size ``I`` and ``C`` labels, each layer costs
``2*B*S*3*H*H`` (Q, K, V projections) + ``2*B*S*S*H`` (scores ``Q K^T``, over all heads) + ``2*B*S*S*H``
(probabilities times V) + ``2*B*S*H*H`` (attention output projection) + ``2*B*S*2*H*I`` (feed-forward). The
head adds the pooler on the [CLS] token (``2*B*H*H``) and the classifier (``2*B*H*C``).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig, PreTrainedModel

from distilsearch.kdlib.students.families import family_of, usable_positions


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs of one forward pass, split by component (all layers summed)."""

    qkv_projections: int
    attention_scores: int
    attention_context: int
    attention_output: int
    feed_forward: int
    pooler: int
    classifier: int

    @property
    def encoder(self) -> int:
        """FLOPs of the Transformer layers alone."""
        return (
            self.qkv_projections
            + self.attention_scores
            + self.attention_context
            + self.attention_output
            + self.feed_forward
        )

    @property
    def total(self) -> int:
        """FLOPs of the whole forward: encoder, pooler and classifier."""
        return self.encoder + self.pooler + self.classifier


def _config_of(config_or_model: PretrainedConfig | PreTrainedModel, argument: str) -> PretrainedConfig:
    """The config of ``config_or_model``; an ``UnsupportedModelError`` naming ``argument`` unless it is supported."""
    config = config_or_model.config if isinstance(config_or_model, PreTrainedModel) else config_or_model
    family_of(config, name=argument)
    return config


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(batch: int, seq_len: int, config: PretrainedConfig) -> None:
    if not _is_int(batch) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    limit = usable_positions(config)
    if not _is_int(seq_len) or not 1 <= seq_len <= limit:
        raise ValueError(f"seq_len must be an int in [1, {limit}], got {seq_len!r}")


def bert_flops(
    config_or_model: PretrainedConfig | PreTrainedModel, batch: int, seq_len: int, *, with_head: bool = True
) -> FlopsBreakdown:
    """FLOPs of a classifier forward on ``batch`` sequences of ``seq_len`` tokens (see module doc).

    ``with_head=False`` zeroes the pooler (or head dense layer) and classifier terms (encoder only).
    """
    config = _config_of(config_or_model, "config_or_model")
    _check_shape(batch, seq_len, config)
    tokens = batch * seq_len
    hidden, layers = config.hidden_size, config.num_hidden_layers
    return FlopsBreakdown(
        qkv_projections=layers * 2 * tokens * 3 * hidden * hidden,
        attention_scores=layers * 2 * batch * seq_len * seq_len * hidden,
        attention_context=layers * 2 * batch * seq_len * seq_len * hidden,
        attention_output=layers * 2 * tokens * hidden * hidden,
        feed_forward=layers * 2 * tokens * 2 * hidden * config.intermediate_size,
        pooler=2 * batch * hidden * hidden if with_head else 0,
        classifier=2 * batch * hidden * config.num_labels if with_head else 0,
    )


def theoretical_speedup(
    teacher_config: PretrainedConfig | PreTrainedModel,
    student_config: PretrainedConfig | PreTrainedModel,
    batch: int,
    seq_len: int,
) -> float:
    """Teacher FLOPs divided by student FLOPs for the same (batch, seq_len): the compute-bound speedup."""
    teacher = _config_of(teacher_config, "teacher_config")
    student = _config_of(student_config, "student_config")
    return bert_flops(teacher, batch, seq_len).total / bert_flops(student, batch, seq_len).total
