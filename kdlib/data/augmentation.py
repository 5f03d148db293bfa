"""Transfer-set augmentation on padded token-id batches (no re-tokenization), seeded by a ``torch.Generator``.

Which positions are left alone is read from the batch's structure, BERT's template ``[CLS] A [SEP] (B [SEP])``
with right padding: padding (``attention_mask == 0``), the first real token (``[CLS]``) and the last real token
of each ``token_type_ids`` run (each ``[SEP]``). Every other position is a *word piece* and may change:

* ``mask``: each word piece becomes ``mask_token_id`` with probability ``MASK_RATE`` (15 %, as in BERT).
* ``shuffle``: word pieces are permuted locally within their segment: position ``i`` gets the sort key
  ``i + U(0, window)``, so no piece moves by ``window`` positions or more (Lample et al. 2018's word shuffle).
* ``ngram``: each segment keeps one random contiguous span of its word pieces, at least half of them (length
  uniform in ``ceil(n / 2) .. n``, start uniform), in the spirit of Tang et al. 2019's n-gram sampling; the
  row is compacted to the left and its tail becomes padding. Special tokens keep their order and identity.
* ``substitute``: each whole word (a single word piece of letters, not split into ``##`` pieces) is replaced with
  probability ``SUBSTITUTE_RATE`` (40 %, TinyBERT's p_t) by one of its ``NEIGHBOURS`` (15, TinyBERT's K) nearest
  whole words by cosine similarity of the teacher's own input embeddings (:func:`word_neighbours`), in the manner
  of TinyBERT's word-replacement augmentation with the teacher's embeddings standing in for GloVe.

An augmented example has no trustworthy label (a masked or cut review may no longer be positive), so it is
trained on the teacher's soft targets only, which the teacher must compute on the augmented ids: every
augmented batch costs one teacher forward, and cached teacher logits cannot be used. A student step is about
three student forwards (forward + backward), so with a teacher ``k`` times the student's FLOPs a step costs
about ``(3 + k) / 3`` times a step on cached logits: ~2.3x for a teacher 4x the student, ~5x for one 12x.
:func:`augment_batch` augments a random share of the rows and reports which, so the loss can drop the hard
label exactly there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

Augmentation = Literal["none", "mask", "shuffle", "ngram", "substitute"]
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
MASK_RATE = 0.15
SHUFFLE_WINDOW = 3
SUBSTITUTE_RATE = 0.4
NEIGHBOURS = 15
WHOLE_WORD = re.compile(r"[a-z]{2,}")
AUGMENTED_SHARE = 0.5
"""Default share of each batch that is replaced by augmented rows (the rest keep their labels)."""

Batch = dict[str, Tensor]
_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Substitutions:
    """For every token id: its nearest whole words (``neighbours``, ``(vocab, k)``; a token that is no whole word
    lists only itself) and whether it continues a word (``continuation``: a ``##`` piece)."""

    neighbours: Tensor
    continuation: Tensor


def word_neighbours(embeddings: Tensor, tokens: Sequence[str], k: int = NEIGHBOURS, chunk: int = 2048) -> Substitutions:
    """The ``k`` nearest whole words of every whole-word token (``[a-z]{2,}``) by cosine similarity of
    ``embeddings`` (``(vocab, hidden)``, the teacher's input embeddings), itself excluded; ``tokens[i]`` is the
    string of token id ``i``."""
    if embeddings.shape[0] != len(tokens):
        raise ValueError(f"embeddings has {embeddings.shape[0]} rows for {len(tokens)} tokens")
    words = torch.tensor([WHOLE_WORD.fullmatch(token) is not None for token in tokens])
    ids = torch.arange(len(tokens))
    neighbours = ids[:, None].repeat(1, k)
    word_ids = ids[words]
    if len(word_ids) > k:
        vectors = torch.nn.functional.normalize(embeddings.detach().float()[word_ids], dim=1)
        for start in range(0, len(word_ids), chunk):
            similarity = vectors[start : start + chunk] @ vectors.T
            similarity[torch.arange(similarity.shape[0]), torch.arange(start, start + similarity.shape[0])] = -2.0
            neighbours[word_ids[start : start + chunk]] = word_ids[similarity.topk(k, dim=1).indices]
    continuation = torch.tensor([token.startswith("##") for token in tokens])
    return Substitutions(neighbours, continuation)


def fixed_positions(attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
    """``(batch, seq)`` booleans: True at padding, ``[CLS]`` (first real token) and each ``[SEP]``."""
    real = attention_mask != 0
    first = real & (real.long().cumsum(dim=1) == 1)
    next_real = torch.zeros_like(real)
    next_real[:, :-1] = real[:, 1:]
    type_changes = torch.zeros_like(real)
    type_changes[:, :-1] = token_type_ids[:, 1:] != token_type_ids[:, :-1]
    segment_end = real & (~next_real | type_changes)
    return ~real | first | segment_end


def augment_batch(
    batch: Batch,
    kind: str,
    *,
    generator: torch.Generator,
    pad_id: int,
    mask_token_id: int | None = None,
    share: float = AUGMENTED_SHARE,
    mask_rate: float = MASK_RATE,
    window: int = SHUFFLE_WINDOW,
    substitutions: Substitutions | None = None,
) -> tuple[Batch, Tensor]:
    """A copy of ``batch`` whose rows are each augmented with probability ``share``, and the ``(batch,)``
    boolean mask of the augmented rows.

    ``batch`` holds right-padded ``input_ids``, ``attention_mask`` and ``token_type_ids`` (other entries, such
    as ``labels``, are copied unchanged). Randomness comes only from ``generator`` (CPU), so equal generator
    states give equal results. ``kind == "none"`` returns the batch unchanged and no augmented row.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"kind must be one of {AUGMENTATIONS}, got {kind!r}")
    missing = [column for column in _COLUMNS if column not in batch]
    if missing:
        raise ValueError(f"batch lacks the columns {missing}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share!r}")
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if kind == "mask" and mask_token_id is None:
        raise ValueError("mask_token_id=None: the 'mask' augmentation needs the [MASK] token id")
    if kind == "substitute" and substitutions is None:
        raise ValueError("substitutions=None: the 'substitute' augmentation needs word_neighbours of the teacher")
    rows = batch["input_ids"].shape[0]
    if kind == "none":
        return dict(batch), torch.zeros(rows, dtype=torch.bool, device=batch["input_ids"].device)
    chosen = torch.rand(rows, generator=generator) < share
    inputs = {column: batch[column].cpu() for column in _COLUMNS}
    fixed = fixed_positions(inputs["attention_mask"], inputs["token_type_ids"])
    if kind == "mask":
        augmented = _mask(inputs, fixed, generator, mask_rate, mask_token_id)
    elif kind == "shuffle":
        augmented = _shuffle(inputs, fixed, generator, window)
    elif kind == "substitute":
        augmented = _substitute(inputs, fixed, generator, substitutions)
    else:
        augmented = _ngram(inputs, fixed, generator, pad_id)
    out = dict(batch)
    for column in _COLUMNS:
        mixed = torch.where(chosen[:, None], augmented[column], inputs[column])
        out[column] = mixed.to(batch[column].device)
    return out, chosen.to(batch["input_ids"].device)


def _mask(inputs: Batch, fixed: Tensor, generator: torch.Generator, rate: float, mask_token_id: int) -> Batch:
    hit = (torch.rand(fixed.shape, generator=generator) < rate) & ~fixed
    ids = inputs["input_ids"].masked_fill(hit, mask_token_id)
    return inputs | {"input_ids": ids}


def _substitute(inputs: Batch, fixed: Tensor, generator: torch.Generator, substitutions: Substitutions) -> Batch:
    """Replace each whole word (not continued by a ``##`` piece) with probability ``SUBSTITUTE_RATE`` by one of its
    neighbours, chosen uniformly."""
    ids = inputs["input_ids"]
    continued = torch.zeros_like(fixed)
    continued[:, :-1] = substitutions.continuation[ids[:, 1:]]
    has_neighbours = substitutions.neighbours[ids, 0] != ids
    eligible = ~fixed & has_neighbours & ~substitutions.continuation[ids] & ~continued
    hit = (torch.rand(fixed.shape, generator=generator) < SUBSTITUTE_RATE) & eligible
    k = substitutions.neighbours.shape[1]
    choice = torch.randint(0, k, fixed.shape, generator=generator)
    replaced = substitutions.neighbours[ids, choice]
    return inputs | {"input_ids": torch.where(hit, replaced, ids)}


def _shuffle(inputs: Batch, fixed: Tensor, generator: torch.Generator, window: int) -> Batch:
    """Sort word pieces by ``position + U(0, window)`` inside each segment; fixed positions keep their place.

    Keys are offset by ``segment * stride`` (a segment ends at each fixed position) so nothing crosses a
    fixed token; a fixed token's key is ``position - 0.5`` within its own segment block, which puts exactly
    the same tokens before it as before.
    """
    seq = fixed.shape[1]
    positions = torch.arange(seq, dtype=torch.float64).expand(fixed.shape)
    noise = torch.rand(fixed.shape, generator=generator, dtype=torch.float64) * window
    segment = fixed.long().cumsum(dim=1).double()
    offset = torch.where(fixed, torch.full_like(noise, -0.5), noise)
    order = torch.argsort(segment * (seq + window + 1) + positions + offset, dim=1, stable=True)
    return {column: tensor.gather(1, order) for column, tensor in inputs.items()}


def _ngram(inputs: Batch, fixed: Tensor, generator: torch.Generator, pad_id: int) -> Batch:
    """Keep fixed real tokens and one contiguous span of each segment's word pieces; compact to the left."""
    out = {
        "input_ids": torch.full_like(inputs["input_ids"], pad_id),
        "attention_mask": torch.zeros_like(inputs["attention_mask"]),
        "token_type_ids": torch.zeros_like(inputs["token_type_ids"]),
    }
    real = inputs["attention_mask"] != 0
    for row in range(fixed.shape[0]):
        kept: list[int] = []
        run: list[int] = []
        for position, is_fixed in enumerate(fixed[row].tolist()):
            if not is_fixed:
                run.append(position)
                continue
            kept += _span(run, generator)
            run = []
            if real[row, position]:
                kept.append(position)
        kept += _span(run, generator)
        index = torch.tensor(kept, dtype=torch.long)
        for column, tensor in inputs.items():
            out[column][row, : len(kept)] = tensor[row, index]
    return out


def _span(run: list[int], generator: torch.Generator) -> list[int]:
    """A random contiguous part of ``run`` holding at least half of it (all of a run of one or none)."""
    if len(run) <= 1:
        return run
    shortest = math.ceil(len(run) / 2)
    length = int(torch.randint(shortest, len(run) + 1, (1,), generator=generator))
    start = int(torch.randint(0, len(run) - length + 1, (1,), generator=generator))
    return run[start : start + length]
