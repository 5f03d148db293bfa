"""The tasks built from the embedded (package-shipped) assets: rt-polarity (the default), snli, bbc-news."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from distilsearch.kdlib.data.assets import AssetUnavailableError
from distilsearch.kdlib.data.splits import drop_duplicate_texts, split_by_group, stable_sample
from distilsearch.kdlib.data.task_registry import TaskDefinition, register_task

if TYPE_CHECKING:
    import pandas as pd

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def _optional_ood(notes: dict[str, str], ood_name: str, reader: Callable[[], pd.DataFrame]) -> pd.DataFrame | None:
    try:
        return reader()
    except AssetUnavailableError as error:
        notes[f"ood/{ood_name}"] = f"unavailable: {error}"
        warnings.warn(f"OOD set {ood_name!r} skipped: {error}", stacklevel=3)
        return None


def _build_rt_polarity(ood_limit: int | None, progress: bool):
    from distilsearch.kdlib.data.readers import read_fine_foods, read_rotten_tomatoes, read_tweets

    reviews = drop_duplicate_texts(read_rotten_tomatoes(progress), ("text",))
    splits = split_by_group(reviews, "movie")
    notes = {
        "split": "by movie (sha256 of the movie name): 80/10/10, no movie in two splits; duplicate texts removed",
        "ood/tweets": "airline and self-driving-car tweets, positive vs negative (neutral dropped)",
    }
    ood = {"tweets": stable_sample(drop_duplicate_texts(read_tweets(progress), ("text",)), ood_limit, ("text",))}
    foods = _optional_ood(notes, "fine-foods", lambda: read_fine_foods("test", progress))
    if foods is not None:
        ood["fine-foods"] = stable_sample(foods, ood_limit, ("text",))
        notes["ood/fine-foods"] = (
            "Amazon fine-food reviews: positive = five stars ('great'), negative = any other score. Not the same "
            "notion as fresh/rotten: a four-star review is 'negative' here."
        )
    return splits, ood, notes


def _build_snli(ood_limit: int | None, progress: bool):
    from distilsearch.kdlib.data.readers import read_snli

    train = drop_duplicate_texts(read_snli("train", progress), ("premise", "hypothesis"))
    held_out = split_by_group(train, "caption", (0.95, 0.05, 0.0))
    test = read_snli("test", progress)
    notes = {"split": "train/validation: first 100k of SNLI train split 95/5 by caption (premise); test: SNLI test"}
    return {"train": held_out["train"], "validation": held_out["validation"], "test": test}, {}, notes


def _build_bbc_news(ood_limit: int | None, progress: bool):
    from distilsearch.kdlib.data.readers import read_bbc_news

    articles = read_bbc_news(progress)
    articles["label"] = articles["topic"].map({topic: i for i, topic in enumerate(BBC_TOPICS)}).astype(int)
    articles = drop_duplicate_texts(articles, ("text",))
    notes = {"split": "80/10/10 by sha256 of the article's file name; duplicate articles removed"}
    return split_by_group(articles, "file"), {}, notes


register_task(
    TaskDefinition(
        "rt-polarity",
        "Rotten Tomatoes snippets, fresh vs rotten (embedded default); OOD: tweets, fine-food reviews",
        ("text",),
        ("negative", "positive"),
        _build_rt_polarity,
    )
)
register_task(
    TaskDefinition(
        "snli",
        "SNLI sentence pairs: entailment / neutral / contradiction",
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        _build_snli,
    )
)
register_task(TaskDefinition("bbc-news", "BBC news articles in 5 topics", ("text",), BBC_TOPICS, _build_bbc_news))
