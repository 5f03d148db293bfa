import pandas as pd
import pytest

from distilsearch.kdlib.data.splits import drop_duplicate_texts, split_by_group, stable_fraction, stable_sample


def frame_with_groups(groups: int = 200, per_group: int = 3) -> pd.DataFrame:
    rows = [(f"text {g}-{i}", g % 2, f"group {g}") for g in range(groups) for i in range(per_group)]
    return pd.DataFrame(rows, columns=["text", "label", "movie"])


def test_groups_never_cross_splits_and_fractions_hold() -> None:
    splits = split_by_group(frame_with_groups(), "movie")
    groups = {name: set(part["movie"]) for name, part in splits.items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    assert sum(len(part) for part in splits.values()) == 600
    assert 0.7 < len(groups["train"]) / 200 < 0.9


def test_split_is_independent_of_row_order() -> None:
    frame = frame_with_groups()
    shuffled = frame.sample(frac=1.0, random_state=3)
    first, second = split_by_group(frame, "movie"), split_by_group(shuffled, "movie")
    for name in first:
        assert set(first[name]["text"]) == set(second[name]["text"])


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_rejected(fractions: tuple) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_by_group(frame_with_groups(), "movie", fractions)


def test_duplicates_keep_first_and_conflicts_are_dropped() -> None:
    frame = pd.DataFrame(
        {"text": ["Good  film", "good film", "bad film", "Bad film", "odd", "fine", ""], "label": [1, 1, 0, 1, 0, 1, 0]}
    )
    kept = drop_duplicate_texts(frame, ("text",))
    assert list(kept["text"]) == ["Good  film", "odd", "fine"]


def test_duplicates_of_pairs_use_both_fields() -> None:
    frame = pd.DataFrame({"a": ["x", "x", "x"], "b": ["y", "y", "z"], "label": [0, 0, 1]})
    assert len(drop_duplicate_texts(frame, ("a", "b"))) == 2


def test_stable_sample_is_deterministic_and_order_free() -> None:
    frame = frame_with_groups()
    picked = stable_sample(frame, 50, ("text",))
    again = stable_sample(frame.sample(frac=1.0, random_state=1), 50, ("text",))
    assert len(picked) == 50 and set(picked["text"]) == set(again["text"])
    assert len(stable_sample(frame, None, ("text",))) == 600
    assert len(stable_sample(frame, 10_000, ("text",))) == 600


def test_stable_fraction_range_and_salt() -> None:
    values = [stable_fraction(str(i)) for i in range(1000)]
    assert all(0 <= v < 1 for v in values)
    assert stable_fraction("x") != stable_fraction("x", salt="other")
