"""Batches of tokenized examples: dynamic padding, length-sorted evaluation, length-grouped training."""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

Batch = dict[str, torch.Tensor]


class DynamicPadding:
    """Pad a list of examples to the longest in the batch (not to max length): short snippets stay cheap."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, torch.Tensor]]) -> Batch:
        longest = max(len(example["input_ids"]) for example in examples)
        batch: Batch = {}
        for column, pad_value in (("input_ids", self.pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            rows = torch.full((len(examples), longest), pad_value, dtype=torch.long)
            for row, example in zip(rows, examples, strict=True):
                row[: len(example[column])] = example[column]
            batch[column] = rows
        batch["labels"] = torch.stack([example["label"] for example in examples]).long()
        return batch


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's padding id (0 when it declares none, as BERT vocabularies put [PAD] first)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def training_batches(dataset: datasets.Dataset, batch_size: int, pad_id: int, seed: int, epoch: int) -> DataLoader:
    """Shuffled batches of similar length (a seeded, per-epoch order), so padding stays small."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    lengths = _lengths(dataset)
    sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=DynamicPadding(pad_id))


def evaluation_batches(dataset: datasets.Dataset, batch_size: int, pad_id: int) -> Iterator[tuple[list[int], Batch]]:
    """Batches in order of length (fast inference), each with the original row indices it holds."""
    lengths = _lengths(dataset)
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    collate = DynamicPadding(pad_id)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        yield indices, collate([dataset[index] for index in indices])


def _lengths(dataset: datasets.Dataset) -> list[int]:
    return [len(ids) for ids in dataset.with_format(None)["input_ids"]]
