"""Token-id augmentation: special tokens and padding are never touched, every kind is seeded."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from distilsearch.kdlib.data.augmentation import Substitutions, augment_batch, fixed_positions, word_neighbours

PAD, CLS, SEP, MASK = 0, 2, 3, 4
WORDS = range(5, 60)
KINDS = ("mask", "shuffle", "ngram")


def encode(rows: list[tuple[list[int], list[int] | None]]) -> dict[str, Tensor]:
    """A right-padded BERT batch from (first segment, optional second segment) word-piece lists."""
    encoded = []
    for first, second in rows:
        ids = [CLS, *first, SEP]
        types = [0] * len(ids)
        if second is not None:
            ids += [*second, SEP]
            types += [1] * (len(second) + 1)
        encoded.append((ids, types))
    longest = max(len(ids) for ids, _ in encoded)
    batch = {
        "input_ids": torch.full((len(rows), longest), PAD),
        "attention_mask": torch.zeros(len(rows), longest, dtype=torch.long),
        "token_type_ids": torch.zeros(len(rows), longest, dtype=torch.long),
        "labels": torch.arange(len(rows)) % 2,
    }
    for row, (ids, types) in enumerate(encoded):
        batch["input_ids"][row, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][row, : len(ids)] = 1
        batch["token_type_ids"][row, : len(ids)] = torch.tensor(types)
    return batch


segments = st.lists(st.sampled_from(WORDS), min_size=0, max_size=12)
batches = st.lists(st.tuples(segments, st.none() | segments), min_size=1, max_size=6).map(encode)


def run(batch: dict[str, Tensor], kind: str, seed: int, share: float = 1.0) -> tuple[dict[str, Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return augment_batch(batch, kind, generator=generator, pad_id=PAD, mask_token_id=MASK, share=share)


def specials(ids: Tensor, mask: Tensor) -> list[int]:
    return [token for token, real in zip(ids.tolist(), mask.tolist(), strict=True) if real and token in (CLS, SEP)]


def segments_of(ids: Tensor, mask: Tensor) -> list[list[int]]:
    real_ids = [token for token, real in zip(ids.tolist(), mask.tolist(), strict=True) if real]
    found, current = [], []
    for token in real_ids[1:]:
        if token == SEP:
            found.append(current)
            current = []
        else:
            current.append(token)
    return found


def test_fixed_positions_mark_cls_seps_and_padding() -> None:
    batch = encode([([7, 8], [9]), ([7], None)])
    fixed = fixed_positions(batch["attention_mask"], batch["token_type_ids"])
    assert fixed.tolist() == [
        [True, False, False, True, False, True],
        [True, False, True, True, True, True],
    ]


@settings(max_examples=40, deadline=None)
@given(batch=batches, kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_special_tokens_and_padding_are_never_touched(batch: dict[str, Tensor], kind: str, seed: int) -> None:
    out, chosen = run(batch, kind, seed)
    assert chosen.all()
    assert torch.equal(out["labels"], batch["labels"])
    for row in range(batch["input_ids"].shape[0]):
        before_mask, after_mask = batch["attention_mask"][row], out["attention_mask"][row]
        assert specials(out["input_ids"][row], after_mask) == specials(batch["input_ids"][row], before_mask)
        padding = after_mask == 0
        assert bool((out["input_ids"][row][padding] == PAD).all())
        assert bool((out["token_type_ids"][row][padding] == 0).all())
        assert bool(padding[before_mask == 0].all()), "original padding must stay padding"
        real = int(after_mask.sum())
        assert bool(after_mask[:real].all()), "real tokens stay left-aligned"
        if kind != "ngram":
            assert torch.equal(after_mask, before_mask)
            assert torch.equal(out["token_type_ids"][row], batch["token_type_ids"][row])


@settings(max_examples=40, deadline=None)
@given(batch=batches, seed=st.integers(0, 2**16))
def test_mask_only_replaces_word_pieces_by_mask(batch: dict[str, Tensor], seed: int) -> None:
    out, _ = run(batch, "mask", seed)
    changed = out["input_ids"] != batch["input_ids"]
    fixed = fixed_positions(batch["attention_mask"], batch["token_type_ids"])
    assert not bool((changed & fixed).any())
    assert bool((out["input_ids"][changed] == MASK).all())


@settings(max_examples=40, deadline=None)
@given(batch=batches, seed=st.integers(0, 2**16))
def test_shuffle_permutes_within_each_segment(batch: dict[str, Tensor], seed: int) -> None:
    out, _ = run(batch, "shuffle", seed)
    for row in range(batch["input_ids"].shape[0]):
        mask = batch["attention_mask"][row]
        before = segments_of(batch["input_ids"][row], mask)
        after = segments_of(out["input_ids"][row], mask)
        assert [sorted(part) for part in after] == [sorted(part) for part in before]


@pytest.mark.parametrize("seed", range(5))
def test_shuffle_moves_no_token_by_a_window_or_more(seed: int) -> None:
    batch = encode([(list(range(10, 40)), list(range(40, 50)))])
    shuffled, _ = run(batch, "shuffle", seed)
    positions = {token: index for index, token in enumerate(batch["input_ids"][0].tolist())}
    tokens = enumerate(shuffled["input_ids"][0].tolist())
    moves = [abs(positions[token] - index) for index, token in tokens if token not in (CLS, SEP)]
    assert 0 < max(moves) < 3


@settings(max_examples=40, deadline=None)
@given(batch=batches, seed=st.integers(0, 2**16))
def test_ngram_keeps_one_contiguous_span_of_at_least_half_of_each_segment(batch: dict[str, Tensor], seed: int) -> None:
    out, _ = run(batch, "ngram", seed)
    for row in range(batch["input_ids"].shape[0]):
        before = segments_of(batch["input_ids"][row], batch["attention_mask"][row])
        after = segments_of(out["input_ids"][row], out["attention_mask"][row])
        assert len(after) == len(before)
        for kept, original in zip(after, before, strict=True):
            assert len(kept) >= math.ceil(len(original) / 2)
            starts = [i for i in range(len(original) - len(kept) + 1) if original[i : i + len(kept)] == kept]
            assert starts, f"{kept} is not a contiguous span of {original}"


@pytest.mark.parametrize("kind", KINDS)
def test_augmentation_is_seeded(kind: str) -> None:
    batch = encode([(list(range(5, 35)), list(range(35, 55))), (list(range(20, 50)), None)])
    first, first_rows = run(batch, kind, seed=7, share=0.5)
    again, again_rows = run(batch, kind, seed=7, share=0.5)
    other, _ = run(batch, kind, seed=8, share=1.0)
    assert all(torch.equal(first[key], again[key]) for key in first) and torch.equal(first_rows, again_rows)
    assert not torch.equal(other["input_ids"], run(batch, kind, seed=9, share=1.0)[0]["input_ids"])


def test_share_decides_which_rows_change_and_none_changes_nothing() -> None:
    batch = encode([(list(range(5, 35)), None)] * 8)
    out, chosen = run(batch, "mask", seed=3, share=0.5)
    assert 0 < int(chosen.sum()) < 8
    assert torch.equal(out["input_ids"][~chosen], batch["input_ids"][~chosen])
    untouched, none_rows = run(batch, "none", seed=3)
    assert torch.equal(untouched["input_ids"], batch["input_ids"]) and not none_rows.any()
    unchanged, zero_rows = run(batch, "mask", seed=3, share=0.0)
    assert torch.equal(unchanged["input_ids"], batch["input_ids"]) and not zero_rows.any()


def test_bad_arguments_are_rejected_by_name() -> None:
    batch = encode([([7, 8], None)])
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="kind must be one of"):
        augment_batch(batch, "swap", generator=generator, pad_id=PAD)
    with pytest.raises(ValueError, match="mask_token_id=None"):
        augment_batch(batch, "mask", generator=generator, pad_id=PAD)
    with pytest.raises(ValueError, match="share must be in"):
        augment_batch(batch, "shuffle", generator=generator, pad_id=PAD, share=1.5)
    with pytest.raises(ValueError, match="window must be"):
        augment_batch(batch, "shuffle", generator=generator, pad_id=PAD, window=0)
    with pytest.raises(ValueError, match="lacks the columns"):
        augment_batch({"input_ids": batch["input_ids"]}, "shuffle", generator=generator, pad_id=PAD)


# ---- substitution by the teacher's word neighbours ----------------------------------------------------------------

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "fine", "bad", "awful", "##ly", "a", "7"]


def tiny_neighbours(k: int = 2) -> Substitutions:
    """Embeddings in which good / great / fine and bad / awful are near each other."""
    embeddings = torch.eye(len(TOKENS))
    for word, near in (("great", "good"), ("fine", "good"), ("awful", "bad")):
        embeddings[TOKENS.index(word)] += 3 * embeddings[TOKENS.index(near)]
    return word_neighbours(embeddings, TOKENS, k=k)


def test_word_neighbours_are_the_nearest_other_whole_words() -> None:
    subs = tiny_neighbours()
    ids = {token: index for index, token in enumerate(TOKENS)}
    assert set(subs.neighbours[ids["good"]].tolist()) == {ids["great"], ids["fine"]}
    assert subs.neighbours[ids["awful"], 0] == ids["bad"]
    for token in ("[CLS]", "##ly", "a", "7"):
        assert (subs.neighbours[ids[token]] == ids[token]).all(), token
    assert subs.continuation.tolist() == [token.startswith("##") for token in TOKENS]
    with pytest.raises(ValueError, match="embeddings has 3 rows for 13 tokens"):
        word_neighbours(torch.zeros(3, 2), TOKENS)


def test_substitution_replaces_whole_words_by_neighbours_only() -> None:
    subs = tiny_neighbours()
    ids = {token: index for index, token in enumerate(TOKENS)}
    words = [ids["good"], ids["bad"], ids["fine"], ids["##ly"], ids["a"], ids["awful"]] * 3
    batch = encode([(words, [ids["great"]])] * 40)
    generator = torch.Generator().manual_seed(0)
    out, chosen = augment_batch(batch, "substitute", generator=generator, pad_id=PAD, substitutions=subs, share=1.0)
    assert chosen.all()
    before, after = batch["input_ids"], out["input_ids"]
    changed = before != after
    assert 0.2 < changed.float().sum() / (40 * 13) < 0.6  # 13 eligible positions per row, rate 0.4
    allowed = subs.neighbours[before]
    assert ((after[..., None] == allowed).any(-1) | ~changed).all(), "a replacement is a neighbour"
    untouchable = (before == ids["fine"]) & (torch.roll(before, -1, dims=1) == ids["##ly"])
    untouchable |= torch.isin(before, torch.tensor([PAD, CLS, SEP, ids["##ly"], ids["a"]]))
    assert not (changed & untouchable).any(), "special tokens, pieces of split words and non-words stay"
    with pytest.raises(ValueError, match="substitutions=None"):
        augment_batch(batch, "substitute", generator=generator, pad_id=PAD)
