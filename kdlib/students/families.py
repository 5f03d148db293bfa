"""The encoder families kdlib cuts, distils and measures, and where each keeps the parts kdlib touches.

Every supported family has BERT's encoder: ``model.base_model.embeddings`` (word, position and token-type tables and a
LayerNorm) and ``model.base_model.encoder.layer[i]`` with the same submodules (``attention.self.{query,key,value}``,
``attention.output.{dense,LayerNorm}``, ``intermediate.dense``, ``output.{dense,LayerNorm}``). They differ in their
classification head (:class:`ClassifierHead`) and in where position ids start (:func:`usable_positions`). Parameter and
FLOP counts are BERT's for all of them: a head's ``H -> H`` dense layer replaces BERT's pooler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

HeadLayout = Literal["pooler", "dense"]


@dataclass(frozen=True)
class Family:
    """What sets one model type apart: its classifier head, where its positions start, sizes tied to the hidden size.

    ``head``: ``"pooler"`` -- BERT's pooler (``<prefix>.pooler.dense``) then ``classifier``; ``"dense"`` -- the head
    module's ``classifier.dense`` then ``classifier.out_proj``, no pooler. ``padded_positions``: position ids start at
    ``pad_token_id + 1`` (RoBERTa). ``hidden_tied``: config fields that must equal ``hidden_size`` (and follow it in a
    student).
    """

    model_type: str
    head: HeadLayout
    padded_positions: bool = False
    hidden_tied: tuple[str, ...] = ()


FAMILIES = {
    "bert": Family("bert", "pooler"),
    "roberta": Family("roberta", "dense", padded_positions=True),
    "xlm-roberta": Family("xlm-roberta", "dense", padded_positions=True),
    "electra": Family("electra", "dense", hidden_tied=("embedding_size",)),
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)
_WHY_NOT = {
    "distilbert": "its layers name their parts differently (transformer.layer.N.attention.q_lin, ...) "
    "and it has no token types",
}


class UnsupportedModelError(ValueError):
    """A model or config of a type kdlib cannot cut, distil or measure."""


@dataclass(frozen=True)
class ClassifierHead:
    """State-dict names of a classifier's two linear layers: ``dense`` ``H -> H``, then ``output`` ``H -> labels``."""

    dense: str
    output: str


def family_of(config: PretrainedConfig, *, name: str | None = None) -> Family:
    """The family of ``config``; :class:`UnsupportedModelError` naming the model type and the supported ones (and, when
    given, ``name``: what ``config`` is, e.g. ``"teacher"``)."""
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    prefix = "" if name is None else f"{name}: "
    if not isinstance(config, PretrainedConfig):
        raise UnsupportedModelError(
            f"{prefix}expected the config of a model of type {supported}, got {type(config).__name__}"
        )
    model_type = config.model_type
    family = FAMILIES.get(model_type)
    if family is None:
        why = f" ({_WHY_NOT[model_type]})" if model_type in _WHY_NOT else ""
        raise UnsupportedModelError(f"{prefix}model_type {model_type!r} is not supported{why}; supported: {supported}")
    for field in family.hidden_tied:
        value = getattr(config, field)
        if value != config.hidden_size:
            raise UnsupportedModelError(
                f"{prefix}model_type {model_type!r} with {field}={value} != hidden_size={config.hidden_size} is not "
                f"supported: an embeddings_project layer maps its embeddings to the hidden size, which kdlib does not "
                f"cut; only {model_type} models with {field} == hidden_size are"
            )
    return family


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The encoder's Transformer layers, bottom-up."""
    family_of(model.config)
    return model.base_model.encoder.layer


def embeddings(model: PreTrainedModel) -> nn.Module:
    """The embeddings module (word, position and token-type tables, then LayerNorm)."""
    family_of(model.config)
    return model.base_model.embeddings


def usable_positions(config: PretrainedConfig) -> int:
    """The longest sequence the model's position table serves: RoBERTa's first ``pad_token_id + 1`` rows are unused."""
    positions = config.max_position_embeddings
    return positions - (config.pad_token_id + 1) if family_of(config).padded_positions else positions


def classifier_head(model: PreTrainedModel) -> ClassifierHead:
    """Where the classifier of ``model`` keeps its two linear layers (see :class:`Family`)."""
    if family_of(model.config).head == "pooler":
        return ClassifierHead(dense=f"{model.base_model_prefix}.pooler.dense", output="classifier")
    return ClassifierHead(dense="classifier.dense", output="classifier.out_proj")


def sequence_logits(model: PreTrainedModel, sequence_output: Tensor) -> Tensor:
    """The classifier's logits for an encoder output ``(batch, seq, H)``, as the model's own forward computes them.

    BERT: pooler, dropout, classifier; RoBERTa and ELECTRA: their classification head (first token, dense, output).
    """
    if family_of(model.config).head == "pooler":
        return model.classifier(model.dropout(model.base_model.pooler(sequence_output)))
    return model.classifier(sequence_output)
