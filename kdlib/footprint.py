"""Model footprint: parameter counts, size on disk and peak forward memory.

Peak memory is measured on CUDA only (``torch.cuda.max_memory_allocated``) and is ``None`` on CPU. There is
no honest in-process CPU number: torch's CPU allocator bypasses ``tracemalloc``, and the process RSS
high-water mark is monotonic over the process lifetime (dominated by importing torch and loading weights)
and includes allocator caching, so a delta around one forward is mostly noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdlib.latency import random_inputs


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
