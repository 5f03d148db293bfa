"""Model footprint: parameter counts, size on disk and peak forward memory, measured or counted from a config.

:func:`bert_parameter_count` and :func:`bert_weight_bytes` count a ``*ForSequenceClassification`` of any supported
family (:data:`distilsearch.kdlib.students.families.SUPPORTED_MODEL_TYPES`) from its configuration alone (no model is
built), so a search can apply deployment limits before anything trains.

Peak memory is measured on CUDA only (``torch.cuda.max_memory_allocated``) and is ``None`` on CPU. There is
no honest in-process CPU number: torch's CPU allocator bypasses ``tracemalloc``, and the process RSS
high-water mark is monotonic over the process lifetime (dominated by importing torch and loading weights)
and includes allocator caching, so a delta around one forward is mostly noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig

from distilsearch.kdlib.measure.latency import random_inputs
from distilsearch.kdlib.students.families import family_of
from distilsearch.kdlib.students.quantization import SCALE_BYTES, SUPPORTED_BITS

FP32_BYTES = 4


@dataclass(frozen=True)
class ParameterCounts:
    """Unique parameters of a model: all of them, those in ``nn.Embedding`` modules, and the rest."""

    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        """Parameters outside the embedding tables (the Transformer layers, pooler and classifier)."""
        return self.total - self.embedding


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Count unique parameters (shared tensors once); embeddings are word, position and token-type tables."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    embedding_ids = {
        id(parameter)
        for module in model.modules()
        if isinstance(module, nn.Embedding)
        for parameter in module.parameters(recurse=False)
    }
    total = embedding = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if id(parameter) in embedding_ids:
            embedding += parameter.numel()
    return ParameterCounts(total=total, embedding=embedding)


def bert_parameter_count(config: PretrainedConfig) -> int:
    """Parameters of a ``*ForSequenceClassification`` with ``config`` (equals :func:`count_parameters`'s total).

    Embeddings ``(V + P + T) * H`` and their LayerNorm ``2H``; per layer ``4H^2 + 2HF`` weights plus biases and two
    LayerNorms (``9H + F``); the pooler ``H^2 + H`` (RoBERTa and ELECTRA: the head's dense layer, the same size) and
    the classifier ``HC + C``. Attention width equals ``H`` in every supported family, so the head count changes
    nothing. An unsupported family is an :class:`~distilsearch.kdlib.students.families.UnsupportedModelError`.
    """
    family_of(config)
    hidden, ffn, labels = config.hidden_size, config.intermediate_size, config.num_labels
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size + 2) * hidden
    layer = 4 * hidden * hidden + 2 * hidden * ffn + 9 * hidden + ffn
    head = hidden * hidden + hidden + hidden * labels + labels
    return embeddings + config.num_hidden_layers * layer + head


def bert_weight_bytes(config: PretrainedConfig, weight_bits: int) -> int:
    """Bytes of the weights of a classifier (any supported family) with ``config``, stored with ``weight_bits``.

    32 bits: every parameter as fp32, the tensor data of ``save_pretrained``'s safetensors file (the file adds its
    8-byte length and JSON header, about 100 bytes per tensor). 8 or 2 bits: as
    :func:`kdlib.students.quantization.quantized_size_bytes` counts the defaults -- the encoder's six linear weights per
    layer bit-packed per matrix (rounded up to whole bytes) plus one fp32 scale each, everything else fp32.
    """
    if weight_bits != 32 and weight_bits not in SUPPORTED_BITS:
        raise ValueError(f"weight_bits must be 32 or one of {SUPPORTED_BITS}, got {weight_bits!r}")
    total = bert_parameter_count(config) * FP32_BYTES
    if weight_bits == 32:
        return total
    hidden, ffn = config.hidden_size, config.intermediate_size
    matrices = (hidden * hidden,) * 4 + (hidden * ffn,) * 2
    packed = sum(math.ceil(numel * weight_bits / 8) + SCALE_BYTES - numel * FP32_BYTES for numel in matrices)
    return total + config.num_hidden_layers * packed


def size_on_disk(model_dir: str | Path) -> int:
    """Bytes of the weights in ``model_dir``: ``model.safetensors`` or its shards (``*.safetensors``)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model_dir {model_dir} is not a folder")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"model_dir {model_dir} holds no .safetensors weights")
    return sum(path.stat().st_size for path in weights)


def peak_forward_memory_bytes(
    model: nn.Module, batch: int, seq_len: int, vocab_size: int, *, seed: int = 0
) -> int | None:
    """Peak CUDA bytes allocated during one ``inference_mode`` forward, or ``None`` for a CPU model.

    The peak counts everything allocated by torch on the model's device at the time, weights and inputs
    included; subtract ``torch.cuda.memory_allocated`` before the call for the activations alone.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("batch", batch), ("seq_len", seq_len), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cuda":
        return None
    device = parameter.device
    inputs = {name: tensor.to(device) for name, tensor in random_inputs(batch, seq_len, vocab_size, seed).items()}
    was_training = model.training
    model.eval()
    try:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            model(**inputs)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    finally:
        model.train(was_training)
