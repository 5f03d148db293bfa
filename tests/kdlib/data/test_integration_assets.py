"""Integration: the real embedded assets and the real splits (fetched into $DISTILSEARCH_HOME on first use)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilsearch.kdlib.data.assets import ASSETS, AssetUnavailableError, asset_path, is_cached
from distilsearch.kdlib.data.readers import read_rotten_tomatoes
from distilsearch.kdlib.data.splits import drop_duplicate_texts
from distilsearch.kdlib.data.tasks import load_task

pytestmark = pytest.mark.integration


def test_required_assets_fetch_and_verify() -> None:
    for name, asset in ASSETS.items():
        if asset.optional:
            continue
        folder = asset_path(name)
        assert folder.is_dir() and is_cached(asset), name


def test_rt_polarity_split_is_movie_disjoint_and_balanced() -> None:
    task = load_task("rt-polarity")
    reviews = drop_duplicate_texts(read_rotten_tomatoes(), ("text",))
    movie_of = dict(zip(reviews["text"], reviews["movie"], strict=True))
    movies = {split: {movie_of[text] for text in data["text"]} for split, data in task.splits.items()}
    assert not movies["train"] & movies["validation"]
    assert not movies["train"] & movies["test"]
    assert not movies["validation"] & movies["test"]
    texts = [set(data["text"]) for data in task.splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    balance = {split: sum(data["label"]) / len(data) for split, data in task.splits.items()}
    print("rt-polarity sizes", {s: len(d) for s, d in task.splits.items()}, "positive share", balance)
    assert all(0.4 < share < 0.75 for share in balance.values())
    assert len(task.splits["train"]) > 9000 and len(task.splits["test"]) > 1000
    assert task.ood["tweets"].num_rows + task.ood_dev["tweets"].num_rows == 2000
    assert 900 < task.ood_dev["tweets"].num_rows < 1100
    assert not set(task.ood["tweets"]["text"]) & set(task.ood_dev["tweets"]["text"])
    assert set(task.ood["tweets"]["label"]) == set(task.ood_dev["tweets"]["label"]) == {0, 1}
    assert load_task("rt-polarity").fingerprint == task.fingerprint


def test_fine_foods_ood_when_apt_is_available() -> None:
    try:
        asset_path("fine-foods")
    except AssetUnavailableError as error:
        assert "optional" in str(error) or "apt" in str(error)
        return
    task = load_task("rt-polarity")
    halves = (task.ood_dev["fine-foods"], task.ood["fine-foods"])
    assert sum(half.num_rows for half in halves) == 1000
    positives = sum(sum(half["label"]) for half in halves)
    assert abs(positives / 1000 - 0.658) < 1e-9


def test_snli_and_bbc_news() -> None:
    snli = load_task("snli")
    assert set(snli.splits["test"]["label"]) == {0, 1, 2} and snli.splits["test"].num_rows == 9824
    assert snli.splits["train"].num_rows + snli.splits["validation"].num_rows > 90_000
    bbc = load_task("bbc-news")
    assert set(bbc.splits["train"]["label"]) == set(range(5))
    assert sum(data.num_rows for data in bbc.splits.values()) > 2000


def test_base_encoder_tokenizes_without_unknowns_and_runs() -> None:
    base = asset_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoded = tokenizer(
        ["a gripping, beautifully acted film", "the plot is a tedious mess"], padding=True, return_tensors="pt"
    )
    assert tokenizer.unk_token_id not in encoded["input_ids"]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    with torch.no_grad():
        assert model(**encoded).logits.shape == (2, 2)
