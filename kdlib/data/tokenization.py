"""Tokenize task sets once and cache them on disk, keyed by (set fingerprint, tokenizer, max length)."""

from __future__ import annotations

import json

import datasets
from transformers import PreTrainedTokenizerBase

from distilsearch.kdlib.core.atomic import lock_for, staging_dir
from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.core.progress import datasets_progress
from distilsearch.kdlib.data.task_registry import TaskData

MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "label")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of everything that decides token ids: the tokenizer's definition (vocab, normaliser, ...).

    The transient truncation/padding state, which each call may change, is left out.
    """
    if tokenizer.is_fast:
        definition = json.loads(tokenizer.backend_tokenizer.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
    else:
        definition = {"vocab": tokenizer.get_vocab(), "class": type(tokenizer).__name__}
    return sha256_json(definition)


def tokenize_task(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, *, progress: bool = True
) -> dict[str, datasets.Dataset]:
    """Tokenized ``train``, ``validation``, ``test``, ``ood-dev/<name>`` and ``ood/<name>`` sets (torch format,
    unpadded)."""
    sources = {split: (task.splits[split], task.fingerprint + split) for split in task.splits}
    sources |= {f"ood-dev/{name}": (data, task.ood_dev_fingerprints[name]) for name, data in task.ood_dev.items()}
    sources |= {f"ood/{name}": (data, task.ood_fingerprints[name]) for name, data in task.ood.items()}
    return {
        set_name: tokenize_cached(
            dataset, task.text_fields, tokenizer, max_length, fingerprint, f"{task.name} {set_name}", progress=progress
        )
        for set_name, (dataset, fingerprint) in sources.items()
    }


def tokenize_cached(
    dataset: datasets.Dataset,
    text_fields: tuple[str, ...],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    fingerprint: str,
    description: str,
    *,
    progress: bool = True,
) -> datasets.Dataset:
    """``dataset`` tokenized (torch format, unpadded; a ``label`` column kept), cached on disk under the key of
    (``fingerprint`` of its content, tokenizer, ``max_length``)."""
    if max_length < 8:
        raise ValueError(f"max_length must be >= 8, got {max_length}")
    key = sha256_json({"data": fingerprint, "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_length})
    target = cache_dir("tokenized") / key[:24]
    with lock_for(target):
        if not (target / "dataset_info.json").is_file():

            def encode(batch: dict[str, list]) -> dict[str, list]:
                texts = [batch[field] for field in text_fields]
                return tokenizer(*texts, truncation=True, max_length=max_length, return_token_type_ids=True)

            with datasets_progress(progress):
                encoded = dataset.map(
                    encode,
                    batched=True,
                    remove_columns=list(text_fields),
                    desc=f"tokenizing {description}",
                    new_fingerprint=key[:24],
                )
                with staging_dir(target) as staging:
                    encoded.save_to_disk(str(staging))
    loaded = datasets.load_from_disk(str(target))
    loaded.set_format("torch", columns=list(MODEL_COLUMNS))
    return loaded
