"""Cut a stock ``*ForSequenceClassification`` student out of a teacher of a supported family, and trim its vocabulary.

Families: :data:`distilsearch.kdlib.students.families.SUPPORTED_MODEL_TYPES` (BERT, RoBERTa, XLM-RoBERTa, ELECTRA with
``embedding_size == hidden_size``); the student has the teacher's class.

What is kept (all teacher indices are kept in increasing order, so a spec that cuts nothing reproduces
the teacher exactly):

* **layers** -- :func:`distilsearch.kdlib.students.layer_map.select_teacher_layers`.
* **hidden dims** -- one set ``S`` of residual dimensions, used consistently by the word/position/type
  embeddings and their LayerNorm, the input columns of every Q/K/V and FFN input matrix, the output rows
  of every attention-output and FFN-output matrix, every LayerNorm and the classifier head (BERT's pooler and
  classifier, or the dense and output layers of a RoBERTa/ELECTRA head; see
  :func:`distilsearch.kdlib.students.families.classifier_head`). A
  LayerNorm over a subset of dimensions computes its mean and variance over that subset only, so a
  hidden cut only approximates the teacher. (Layer, head, FFN and widened-head cuts compute exactly the
  teacher with the dropped parts removed; narrowed heads are approximations too.)
* **heads** -- in every supported family the attention width equals the hidden size, so the student head size is
  ``d_s = hidden_size // num_heads`` while the teacher's is ``d_t``. Student head ``j`` is the ``j``-th
  kept teacher head (``num_heads`` heads by importance or position). Its ``d_s`` query/key rows and
  ``d_s`` value rows (chosen independently: query/key rows as pairs, value rows with the matching
  attention-output columns) are:

  - ``d_s <= d_t``: ``d_s`` of the teacher head's rows, by ``head_selection`` (importance scores of
    :class:`distilsearch.kdlib.students.importance.Importance` or the first ``d_s``);
  - ``d_s > d_t``: all ``d_t`` teacher rows followed by ``d_s - d_t`` new rows: new query and value rows
    are random ``N(0, initializer_range**2)``, new key rows and the new attention-output columns are
    zero. The head computes exactly the teacher head at initialisation, and every new weight still
    receives gradient (zero keys meet non-zero queries, zero output columns meet non-zero values).

  Query rows are scaled by ``sqrt(d_s / d_t)`` so that, with the student's ``1 / sqrt(d_s)`` scaling,
  each kept query/key pair contributes to the attention score exactly what it did in the teacher.
* **FFN neurons** -- ``ffn_size`` intermediate neurons by ``ffn_selection``.

With ``init == "random"`` the student only shares the teacher's config (vocabulary, labels, ...).
Randomness (random init, new head rows) comes from torch's global generator.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import BertTokenizer, PretrainedConfig, PreTrainedModel

from distilsearch.kdlib.students.families import ClassifierHead, classifier_head, family_of
from distilsearch.kdlib.students.importance import Importance, compute_importance
from distilsearch.kdlib.students.layer_map import select_teacher_layers
from distilsearch.kdlib.students.specs import StudentSpec

NEW = -1
"""Marks a student row/column with no teacher counterpart in :class:`LayerCut` (a widened head)."""


@dataclass(frozen=True)
class LayerCut:
    """Teacher indices one student layer is copied from (``NEW`` = freshly initialised row)."""

    teacher_layer: int
    heads: tuple[int, ...]
    query_rows: tuple[int, ...]
    value_rows: tuple[int, ...]
    ffn: tuple[int, ...]


@dataclass(frozen=True)
class CutPlan:
    """Everything :func:`cut_student` copies: kept residual dims, per-layer cuts and the query scale.

    ``layers[i].heads[j]`` is the teacher head that student head ``j`` of layer ``i`` comes from (useful to
    pair attention maps in a distillation loss).
    """

    hidden: tuple[int, ...]
    layers: tuple[LayerCut, ...]
    query_scale: float


def _teacher_head_size(config: PretrainedConfig) -> int:
    return config.hidden_size // config.num_attention_heads


def importance_needed(spec: StudentSpec, teacher_config: PretrainedConfig) -> tuple[str, ...]:
    """Names of the spec fields whose ``importance`` selection actually cuts something of this teacher."""
    fewer_heads = spec.num_heads < teacher_config.num_attention_heads
    cuts = {
        "head_selection": fewer_heads or spec.head_size < _teacher_head_size(teacher_config),
        "ffn_selection": spec.ffn_size < teacher_config.intermediate_size,
        "hidden_selection": spec.hidden_size < teacher_config.hidden_size,
    }
    return tuple(field for field, cut in cuts.items() if cut and getattr(spec, field) == "importance")


def _keep(count: int, scores: Tensor | None) -> tuple[int, ...]:
    """The ``count`` best indices by ``scores`` (ties to the lower index) or the first ``count``; sorted."""
    if scores is None or count >= scores.numel():
        return tuple(range(count))
    order = torch.argsort(scores, descending=True, stable=True)[:count]
    return tuple(sorted(order.tolist()))


def _head_rows(head: int, teacher_size: int, student_size: int, scores: Tensor | None) -> list[int]:
    kept = _keep(min(student_size, teacher_size), scores)
    return [head * teacher_size + dim for dim in kept] + [NEW] * max(0, student_size - teacher_size)


def plan_cut(teacher_config: PretrainedConfig, spec: StudentSpec, importance: Importance | None = None) -> CutPlan:
    """Decide which teacher layers, dims, heads, head rows and neurons the student keeps."""
    spec.validate_against(teacher_config)
    needed = importance_needed(spec, teacher_config)
    if needed and importance is None:
        raise ValueError(f"importance=None, but {', '.join(needed)}='importance' cuts the teacher")
    by_heads = importance if spec.head_selection == "importance" else None
    by_ffn = importance if spec.ffn_selection == "importance" else None
    by_hidden = importance if spec.hidden_selection == "importance" else None
    teacher_size, student_size = _teacher_head_size(teacher_config), spec.head_size

    layers = []
    for layer in select_teacher_layers(
        spec.layer_selection, spec.num_layers, teacher_config.num_hidden_layers, spec.layers
    ):
        heads = _keep(spec.num_heads, None if by_heads is None else by_heads.heads[layer])
        query_rows: list[int] = []
        value_rows: list[int] = []
        for head in heads:
            span = slice(head * teacher_size, (head + 1) * teacher_size)
            query_scores = None if by_heads is None else by_heads.query_dims[layer, span]
            value_scores = None if by_heads is None else by_heads.value_dims[layer, span]
            query_rows += _head_rows(head, teacher_size, student_size, query_scores)
            value_rows += _head_rows(head, teacher_size, student_size, value_scores)
        ffn = _keep(spec.ffn_size, None if by_ffn is None else by_ffn.ffn[layer])
        layers.append(LayerCut(layer, heads, tuple(query_rows), tuple(value_rows), ffn))
    hidden = _keep(spec.hidden_size, None if by_hidden is None else by_hidden.hidden)
    return CutPlan(hidden=hidden, layers=tuple(layers), query_scale=math.sqrt(student_size / teacher_size))


def _pick(tensor: Tensor, dim: int, index: Sequence[int] | None, new_std: float = 0.0) -> Tensor:
    """``tensor`` indexed along ``dim``; ``NEW`` positions are ``N(0, new_std**2)`` (zeros when 0)."""
    if index is None:
        return tensor.clone()
    positions = torch.tensor(index, dtype=torch.long, device=tensor.device)
    picked = tensor.index_select(dim, positions.clamp(min=0)).movedim(dim, 0)
    fresh = positions == NEW
    if bool(fresh.any()):
        shape = picked[fresh].shape
        picked[fresh] = torch.randn(shape, dtype=tensor.dtype).to(tensor.device) * new_std if new_std else 0.0
    return picked.movedim(0, dim)


def _linear(
    state: Mapping[str, Tensor],
    name: str,
    rows: Sequence[int] | None,
    columns: Sequence[int] | None,
    new_std: float = 0.0,
    scale: float = 1.0,
) -> dict[str, Tensor]:
    """A ``nn.Linear``'s weight and bias cut to ``rows`` (outputs) x ``columns`` (inputs)."""
    weight = _pick(_pick(state[f"{name}.weight"] * scale, 0, rows, new_std), 1, columns)
    return {f"{name}.weight": weight, f"{name}.bias": _pick(state[f"{name}.bias"] * scale, 0, rows)}


def _layer_norm(state: Mapping[str, Tensor], name: str, dims: Sequence[int]) -> dict[str, Tensor]:
    return {f"{name}.{part}": _pick(state[f"{name}.{part}"], 0, dims) for part in ("weight", "bias")}


def _student_state(
    state: Mapping[str, Tensor], prefix: str, head: ClassifierHead, plan: CutPlan, new_std: float
) -> dict[str, Tensor]:
    """The student's full state dict: ``prefix`` is the encoder's (``base_model_prefix``), ``head`` the classifier's
    layers; ``new_std`` is the init scale of widened heads' new rows."""
    hidden = plan.hidden
    out = {
        f"{prefix}.embeddings.{table}.weight": _pick(state[f"{prefix}.embeddings.{table}.weight"], 1, hidden)
        for table in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    }
    out |= _layer_norm(state, f"{prefix}.embeddings.LayerNorm", hidden)
    for index, cut in enumerate(plan.layers):
        source, target = f"{prefix}.encoder.layer.{cut.teacher_layer}.", f"{prefix}.encoder.layer.{index}."
        parts = [
            _linear(state, source + "attention.self.query", cut.query_rows, hidden, new_std, plan.query_scale),
            _linear(state, source + "attention.self.key", cut.query_rows, hidden),
            _linear(state, source + "attention.self.value", cut.value_rows, hidden, new_std),
            _linear(state, source + "attention.output.dense", hidden, cut.value_rows),
            _layer_norm(state, source + "attention.output.LayerNorm", hidden),
            _linear(state, source + "intermediate.dense", cut.ffn, hidden),
            _linear(state, source + "output.dense", hidden, cut.ffn),
            _layer_norm(state, source + "output.LayerNorm", hidden),
        ]
        for part in parts:
            out |= {target + key.removeprefix(source): value for key, value in part.items()}
    out |= _linear(state, head.dense, hidden, hidden)
    out |= _linear(state, head.output, None, hidden)
    return out


def student_config(teacher_config: PretrainedConfig, spec: StudentSpec) -> PretrainedConfig:
    """The teacher's config (labels, vocabulary, attention implementation, ...) with the spec's sizes.

    Fields the family ties to the hidden size (ELECTRA's ``embedding_size``) follow ``spec.hidden_size``.
    """
    family = family_of(teacher_config)
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = spec.num_layers
    config.hidden_size = spec.hidden_size
    config.num_attention_heads = spec.num_heads
    config.intermediate_size = spec.ffn_size
    for field in family.hidden_tied:
        setattr(config, field, spec.hidden_size)
    return config


def cut_student(
    teacher: PreTrainedModel,
    spec: StudentSpec,
    calibration_batch: Mapping[str, Tensor] | None = None,
) -> PreTrainedModel:
    """Build the student ``spec`` describes from ``teacher`` (left unchanged), on its device and dtype.

    The student has the teacher's class (a supported family's ``*ForSequenceClassification``).
    ``calibration_batch`` (``input_ids``, ``attention_mask``, ``token_type_ids``, optional ``labels``) is
    required when an ``importance`` selection cuts something (see :func:`importance_needed`).
    The student is in the teacher's train/eval mode.
    """
    config = student_config(teacher.config, spec)  # first: an unsupported family is refused before anything else
    spec.validate_against(teacher.config)
    parameter = next(teacher.parameters())
    student = type(teacher)(config)
    if spec.init == "teacher":
        importance = None
        needed = importance_needed(spec, teacher.config)
        if needed:
            if calibration_batch is None:
                raise ValueError(
                    f"calibration_batch=None, but {', '.join(needed)}='importance' cuts the teacher; "
                    "pass a calibration batch or use 'position'"
                )
            importance = compute_importance(teacher, calibration_batch)
        plan = plan_cut(teacher.config, spec, importance)
        with torch.no_grad():
            state = _student_state(
                teacher.state_dict(),
                teacher.base_model_prefix,
                classifier_head(teacher),
                plan,
                teacher.config.initializer_range,
            )
        student.load_state_dict(state, strict=True)
    return student.to(device=parameter.device, dtype=parameter.dtype).train(teacher.training)


def trim_vocabulary(
    model: PreTrainedModel, tokenizer: BertTokenizer, token_ids: Iterable[int]
) -> tuple[PreTrainedModel, BertTokenizer]:
    """A copy of ``model`` and a new tokenizer restricted to ``token_ids`` plus all special tokens.

    Kept tokens keep their relative order and are renumbered ``0..K-1``; the new WordPiece vocabulary
    holds exactly them, so any text whose (original) tokens are all kept tokenizes to the same tokens and
    the model gives the same outputs; other words fall back to shorter kept pieces or ``[UNK]``. Both
    results save and load with ``AutoModelForSequenceClassification`` / ``AutoTokenizer``.
    """
    if not isinstance(tokenizer, BertTokenizer):
        raise ValueError(
            f"vocabulary trimming needs a WordPiece (BERT) tokenizer, got {type(tokenizer).__name__}; "
            "use a student without trim_vocab for this teacher"
        )
    embeddings = model.get_input_embeddings()
    size = min(len(tokenizer), embeddings.num_embeddings)
    requested = {int(token) for token in token_ids}
    outside = sorted(token for token in requested if not 0 <= token < size)
    if outside:
        raise ValueError(f"token_ids contains {outside[:10]}; token ids must be in 0..{size - 1}")
    kept = sorted(requested | set(tokenizer.all_special_ids))
    vocab = {token: index for index, token in enumerate(tokenizer.convert_ids_to_tokens(kept))}
    trimmed_tokenizer = BertTokenizer(
        vocab=vocab,
        do_lower_case=tokenizer.do_lower_case,
        tokenize_chinese_chars=tokenizer.tokenize_chinese_chars,
        strip_accents=tokenizer.strip_accents,
        unk_token=str(tokenizer.unk_token),
        sep_token=str(tokenizer.sep_token),
        pad_token=str(tokenizer.pad_token),
        cls_token=str(tokenizer.cls_token),
        mask_token=str(tokenizer.mask_token),
        model_max_length=tokenizer.model_max_length,
    )
    trimmed = copy.deepcopy(model)
    pad = trimmed_tokenizer.pad_token_id
    weight = embeddings.weight.detach()[torch.tensor(kept, device=embeddings.weight.device)].clone()
    trimmed.set_input_embeddings(nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=pad))
    trimmed.config.vocab_size = len(kept)
    trimmed.config.pad_token_id = pad
    return trimmed, trimmed_tokenizer
