"""Gradient-based importance of the structures a student can drop from a teacher of a supported (BERT) family.

Every score is the same first-order (Taylor) criterion: put a multiplicative gate ``g = 1`` on the
structure, and score it by ``sum over examples of |dL_example / dg|`` -- the estimated change of the loss if
the structure were removed (Michel et al. 2019, "Are sixteen heads really better than one?"; DynaBERT uses
the same ``|activation * gradient|`` rule for FFN neurons). Gates are per example, so one backward pass
gives per-example gradients and the absolute value is taken before summing over the batch.

* **heads** -- gate on each head's context vector (the input of the attention output projection); equal to
  Michel et al.'s ``|dL / d head_mask|``.
* **value dims** -- the same gate, per dimension of the context (= rows of the value projection).
* **query dims** -- gate on each query dimension; scaling ``q_i`` scales the ``q_i * k_i`` term of the
  attention score, so it scores a query/key row pair.
* **ffn neurons** -- gate on the intermediate activation (after GELU).
* **hidden dims** -- one gate per residual dimension shared by *every* LayerNorm output (embeddings and both
  LayerNorms of every layer). In post-LN BERT these outputs are the whole residual stream, so the score
  estimates dropping that dimension from the model everywhere at once, which is what a narrower hidden
  size does. Unlike a weight-magnitude score it accounts for LayerNorm gains and for what the task uses.

The loss is the task loss on ``labels`` when the batch has them, otherwise on the teacher's own
predictions (argmax for single-label classification, ``logits > 0`` for multi-label).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional
from transformers import PreTrainedModel

from distilsearch.kdlib.students.families import embeddings, encoder_layers

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


@dataclass(frozen=True)
class Importance:
    """Importance scores of one teacher (higher = more important), float32 on CPU.

    Shapes, with ``L`` layers, ``A`` heads, hidden size ``H`` and intermediate size ``F``: ``heads``
    ``(L, A)``; ``query_dims`` and ``value_dims`` ``(L, H)`` with head ``a`` owning columns
    ``a * H // A .. (a + 1) * H // A - 1``; ``ffn`` ``(L, F)``; ``hidden`` ``(H,)``.
    """

    heads: Tensor
    query_dims: Tensor
    value_dims: Tensor
    ffn: Tensor
    hidden: Tensor


def _model_inputs(model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    input_ids = batch.get("input_ids")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.shape[0] == 0:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"calibration_batch['input_ids']={shape} must be a non-empty (batch, sequence) tensor of ids")
    device = next(model.parameters()).device
    return {key: batch[key].to(device) for key in _MODEL_INPUTS if batch.get(key) is not None}


def _task_loss(logits: Tensor, labels: Tensor | None, config: object) -> Tensor:
    """Summed (not averaged) task loss; without labels, the model's own predictions are the targets."""
    num_labels = logits.shape[-1]
    problem = getattr(config, "problem_type", None)
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels is None or labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        if labels is None:
            raise ValueError(
                "calibration_batch['labels'] is required for a regression teacher (num_labels=1): "
                "its own predictions give zero loss and zero gradient"
            )
        return functional.mse_loss(logits.squeeze(-1), labels.to(logits).view(-1), reduction="sum")
    if problem == "multi_label_classification":
        targets = (logits > 0).to(logits) if labels is None else labels.to(logits)
        return functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    targets = logits.argmax(dim=-1) if labels is None else labels.view(-1)
    return functional.cross_entropy(logits, targets, reduction="sum")


def _scale_output(gate: Tensor, _module: nn.Module, _args: tuple[Tensor, ...], output: Tensor) -> Tensor:
    return output * gate


def _scale_input(gate: Tensor, _module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (args[0] * gate, *args[1:])


@torch.enable_grad()
def compute_importance(model: PreTrainedModel, batch: Mapping[str, Tensor]) -> Importance:
    """Score heads, head dimensions, FFN neurons and hidden dimensions of ``model`` on ``batch``.

    ``batch`` holds ``input_ids`` and optionally ``attention_mask``, ``token_type_ids`` and ``labels``.
    The model is run in eval mode (its mode is restored) with gradients enabled, even inside
    ``torch.no_grad()``; its parameters' ``.grad`` are not touched.
    """
    inputs = _model_inputs(model, batch)
    config = model.config
    layers = encoder_layers(model)
    size, num_layers, hidden = inputs["input_ids"].shape[0], len(layers), config.hidden_size
    parameter = next(model.parameters())

    def gate(*shape: int) -> Tensor:
        return torch.ones(size, *shape, device=parameter.device, dtype=parameter.dtype, requires_grad=True)

    context, query = gate(num_layers, 1, hidden), gate(num_layers, 1, hidden)
    ffn, residual = gate(num_layers, 1, config.intermediate_size), gate(1, hidden)

    hooks: list[torch.utils.hooks.RemovableHandle] = []
    scaled: list[tuple[nn.Module, Tensor]] = [(embeddings(model).LayerNorm, residual)]
    for index, layer in enumerate(layers):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(partial(_scale_input, context[:, index])))
        scaled += [
            (layer.attention.self.query, query[:, index]),
            (layer.intermediate, ffn[:, index]),
            (layer.attention.output.LayerNorm, residual),
            (layer.output.LayerNorm, residual),
        ]
    hooks += [module.register_forward_hook(partial(_scale_output, module_gate)) for module, module_gate in scaled]

    was_training = model.training
    model.eval()
    try:
        logits = model(**inputs).logits
        labels = batch.get("labels")
        loss = _task_loss(logits, None if labels is None else labels.to(logits.device), config)
        grads = torch.autograd.grad(loss, [context, query, ffn, residual])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)

    context_grad, query_grad, ffn_grad, residual_grad = (grad.detach().float().cpu() for grad in grads)
    heads = config.num_attention_heads
    per_head = context_grad.view(size, num_layers, heads, hidden // heads).sum(dim=-1)
    return Importance(
        heads=per_head.abs().sum(dim=0),
        query_dims=query_grad.abs().sum(dim=0).view(num_layers, hidden),
        value_dims=context_grad.abs().sum(dim=0).view(num_layers, hidden),
        ffn=ffn_grad.abs().sum(dim=0).view(num_layers, -1),
        hidden=residual_grad.abs().sum(dim=0).view(hidden),
    )
