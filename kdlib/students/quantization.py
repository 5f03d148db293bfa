"""Weight quantization: int8 dynamic (FastFormers) and low-bit distillation-aware (TernaryBERT).

Two independent tools:

* :func:`quantize_int8_dynamic` turns a trained fp32 model into a CPU inference model whose ``nn.Linear``
  layers run int8 matmuls with weights quantized once and activations quantized on the fly (FastFormers).
* :func:`apply_weight_quantization` prepares a model for quantization-aware distillation (TernaryBERT): the
  encoder's ``nn.Linear`` layers (and optionally the word embeddings) keep their latent fp32 weights but use
  quantized weights in the forward, with a straight-through estimator so gradients reach the latent weights.
  :func:`materialize_quantized` then bakes the quantized values into a stock model, and
  :func:`quantized_size_bytes` reports the size of the packed low-bit representation.

Granularity (TernaryBERT's choice, the default here): one scale per weight matrix for the encoder's linear
layers (``granularity="matrix"``; ``"row"`` gives one scale per output row) and always one scale per row
(per token) for the word embeddings. Ternary (2 bits) follows TWN: threshold ``0.7 * mean|w|`` and scale
``alpha = mean of |w| over the entries above the threshold``; 8 bits is symmetric uniform with levels
``-127..127`` and scale ``max|w| / 127``. Only weights are quantized; activations stay fp32.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Granularity = Literal["matrix", "row"]
SUPPORTED_BITS = (2, 8)
GRANULARITIES = ("matrix", "row")
TERNARY_THRESHOLD = 0.7
SCALE_BYTES = 4


def quantize_int8_dynamic(model: nn.Module) -> nn.Module:
    """Return a CPU copy of ``model`` whose ``nn.Linear`` layers are int8 dynamically quantized.

    Weights are quantized per tensor to int8 once; activations are quantized per batch at run time. The
    input model is left untouched. Uses ``torch.ao.quantization.quantize_dynamic``, which upstream marks as
    deprecated in favour of torchao (not a dependency of this project); its deprecation warnings are silenced.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from torch.ao.quantization import quantize_dynamic

    cpu_copy = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*quantize_per_tensor.*deprecated", UserWarning)
        return quantize_dynamic(cpu_copy, {nn.Linear}, dtype=torch.qint8)


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def quantize_weight(weight: torch.Tensor, bits: int, granularity: Granularity) -> torch.Tensor:
    """Quantize-dequantize a 2-D weight: ternary TWN (2 bits) or symmetric uniform (8 bits); no STE."""
    _check_bits(bits)
    _check_granularity(granularity)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    magnitude = weight.abs()
    reduce = {"dim": 1, "keepdim": True} if granularity == "row" else {}
    if bits == 2:
        threshold = TERNARY_THRESHOLD * magnitude.mean(**reduce)
        kept = (magnitude > threshold).to(weight.dtype)
        alpha = (magnitude * kept).sum(**reduce) / kept.sum(**reduce).clamp(min=1.0)
        return alpha * torch.sign(weight) * kept
    levels = 2 ** (bits - 1) - 1
    scale = magnitude.amax(**reduce).clamp(min=torch.finfo(weight.dtype).tiny) / levels
    return torch.round(weight / scale).clamp(-levels, levels) * scale


class _StraightThrough(torch.autograd.Function):
    """Exactly the quantized weight in the forward; the gradient passes to the latent weight unchanged."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, weight: torch.Tensor, bits: int, granularity: Granularity
    ) -> torch.Tensor:
        return quantize_weight(weight, bits, granularity)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


def _straight_through(weight: torch.Tensor, bits: int, granularity: Granularity) -> torch.Tensor:
    return _StraightThrough.apply(weight, bits, granularity)


class QuantLinear(nn.Linear):
    """``nn.Linear`` with latent fp32 weights and a quantized weight in the forward (straight-through)."""

    def __init__(self, linear: nn.Linear, bits: int, granularity: Granularity) -> None:
        _check_bits(bits)
        _check_granularity(granularity)
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        self.bits = bits
        self.granularity: Granularity = granularity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _straight_through(self.weight, self.bits, self.granularity), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, granularity={self.granularity}"


class QuantEmbedding(nn.Embedding):
    """``nn.Embedding`` with latent fp32 rows and row-wise quantized rows in the forward (STE)."""

    def __init__(self, embedding: nn.Embedding, bits: int) -> None:
        _check_bits(bits)
        super().__init__(
            embedding.num_embeddings,
            embedding.embedding_dim,
            padding_idx=embedding.padding_idx,
            max_norm=embedding.max_norm,
            norm_type=embedding.norm_type,
            scale_grad_by_freq=embedding.scale_grad_by_freq,
            sparse=embedding.sparse,
            device="meta",
        )
        self.weight = embedding.weight
        self.bits = bits
        self.granularity: Granularity = "row"

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        weight = _straight_through(self.weight, self.bits, self.granularity)
        return F.embedding(
            input_ids,
            weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, granularity=row"


def _quantized_targets(model: nn.Module, quantize_embeddings: bool) -> list[nn.Module]:
    """Modules whose weights the low-bit scheme quantizes: encoder linears, optionally word embeddings."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    word_embeddings = getattr(getattr(base, "embeddings", None), "word_embeddings", None)
    if not isinstance(encoder, nn.Module) or not isinstance(word_embeddings, nn.Embedding):
        raise ValueError(f"model must be a BERT-like model with an encoder, got {type(model).__name__}")
    targets: list[nn.Module] = [module for module in encoder.modules() if isinstance(module, nn.Linear)]
    if quantize_embeddings:
        targets.append(word_embeddings)
    return targets


def _replace_children(root: nn.Module, replace: dict[int, nn.Module]) -> None:
    """Swap every descendant whose id is a key of ``replace`` for its value, in place."""
    for parent in list(root.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in replace:
                setattr(parent, child_name, replace[id(child)])


def apply_weight_quantization(
    model: nn.Module, bits: int, *, granularity: Granularity = "matrix", quantize_embeddings: bool = False
) -> nn.Module:
    """Make the encoder's linear layers (and optionally the word embeddings) quantization-aware, in place.

    The replacement modules reuse the original ``Parameter`` objects as latent weights, so state-dict keys are
    unchanged and an optimizer built before the call keeps training them. Pooler and classifier stay fp32.
    Returns ``model``.
    """
    _check_bits(bits)
    _check_granularity(granularity)
    replace: dict[int, nn.Module] = {}
    for module in _quantized_targets(model, quantize_embeddings):
        if isinstance(module, QuantLinear | QuantEmbedding):
            raise ValueError("model already has quantization-aware layers; call materialize_quantized first")
        if isinstance(module, nn.Embedding):
            replace[id(module)] = QuantEmbedding(module, bits)
        else:
            replace[id(module)] = QuantLinear(module, bits, granularity)
    _replace_children(model, replace)
    return model


def _materialized(module: QuantLinear | QuantEmbedding) -> nn.Module:
    weight = quantize_weight(module.weight.detach(), module.bits, module.granularity)
    if isinstance(module, QuantLinear):
        has_bias = module.bias is not None
        plain: nn.Module = nn.Linear(module.in_features, module.out_features, bias=has_bias, device="meta")
        plain.bias = module.bias
    else:
        plain = nn.Embedding(
            module.num_embeddings,
            module.embedding_dim,
            padding_idx=module.padding_idx,
            max_norm=module.max_norm,
            norm_type=module.norm_type,
            scale_grad_by_freq=module.scale_grad_by_freq,
            sparse=module.sparse,
            device="meta",
        )
    plain.weight = nn.Parameter(weight, requires_grad=module.weight.requires_grad)
    return plain


def materialize_quantized(model: nn.Module) -> nn.Module:
    """Replace quantization-aware layers by stock layers holding the quantized weights (in place).

    Returns ``model``. The result has stock module types only, so ``save_pretrained`` / ``from_pretrained``
    round-trip it, and its outputs equal those of the quantization-aware model. The weights are still stored
    as fp32 tensors; see :func:`quantized_size_bytes` for the packed size.
    """
    replace = {
        id(module): _materialized(module)
        for module in model.modules()
        if isinstance(module, QuantLinear | QuantEmbedding)
    }
    _replace_children(model, replace)
    return model


def _packed_bytes(weight: torch.Tensor, bits: int, granularity: Granularity) -> int:
    groups = weight.shape[0] if granularity == "row" else 1
    return math.ceil(weight.numel() * bits / 8) + groups * SCALE_BYTES


def quantized_size_bytes(
    model: nn.Module, bits: int, *, granularity: Granularity = "matrix", quantize_embeddings: bool = False
) -> int:
    """Bytes needed to store ``model`` with the low-bit scheme of :func:`apply_weight_quantization`.

    Quantized weights cost ``bits`` per entry, bit-packed per tensor (rounded up to whole bytes), plus one
    fp32 scale per matrix or per row (word embeddings: per row). Every other parameter (biases, LayerNorm,
    position and token-type embeddings, pooler, classifier, and word embeddings when not quantized) costs its
    own dtype size. Buffers are not counted. Works on stock, quantization-aware or materialized models alike.
    """
    _check_bits(bits)
    _check_granularity(granularity)
    quantized_weights: dict[int, Granularity] = {}
    for module in _quantized_targets(model, quantize_embeddings):
        quantized_weights[id(module.weight)] = "row" if isinstance(module, nn.Embedding) else granularity
    total = 0
    for parameter in model.parameters():
        if id(parameter) in quantized_weights:
            total += _packed_bytes(parameter, bits, quantized_weights[id(parameter)])
        else:
            total += parameter.numel() * parameter.element_size()
    return total
