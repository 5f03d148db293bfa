"""Score a classifier on tokenized sets: logits, accuracy and the majority-class baseline."""

from __future__ import annotations

from collections import Counter

import datasets
import torch
from torch import nn

from distilsearch.kdlib.core.device import autocast
from distilsearch.kdlib.data.batching import evaluation_batches


@torch.inference_mode()
def predict_logits(
    model: nn.Module, dataset: datasets.Dataset, *, pad_id: int, batch_size: int = 64, device: torch.device
) -> torch.Tensor:
    """Logits for every row of ``dataset`` in its original order (float32, on CPU)."""
    model.eval()
    logits: torch.Tensor | None = None
    for indices, batch in evaluation_batches(dataset, batch_size, pad_id):
        inputs = {name: batch[name].to(device) for name in ("input_ids", "attention_mask", "token_type_ids")}
        with autocast(device):
            batch_logits = model(**inputs).logits.float().cpu()
        if logits is None:
            logits = torch.empty(len(dataset), batch_logits.shape[-1])
        logits[indices] = batch_logits
    if logits is None:
        raise ValueError("cannot predict on an empty dataset")
    return logits


def labels_of(dataset: datasets.Dataset) -> torch.Tensor:
    """The ``label`` column as a 1-D long tensor."""
    return torch.as_tensor(list(dataset.with_format(None)["label"]), dtype=torch.long)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose arg-max logit is the label."""
    return float((logits.argmax(dim=-1) == labels).float().mean())


def majority_label(labels: torch.Tensor) -> int:
    """The most frequent label (ties broken by the smaller label id)."""
    counts = Counter(labels.tolist())
    return min(counts, key=lambda label: (-counts[label], label))


def score_sets(
    model: nn.Module,
    sets: dict[str, datasets.Dataset],
    *,
    majority: int,
    pad_id: int,
    device: torch.device,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """For each set: accuracy, size, and the accuracy of always predicting the training majority label."""
    scores = {}
    for name, dataset in sets.items():
        labels = labels_of(dataset)
        logits = predict_logits(model, dataset, pad_id=pad_id, batch_size=batch_size, device=device)
        scores[name] = {
            "accuracy": accuracy(logits, labels),
            "majority_accuracy": float((labels == majority).float().mean()),
            "examples": len(dataset),
        }
    return scores
