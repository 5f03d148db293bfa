"""The general-distillation corpus: sentences from news articles, deduplication across sources, and the guard that
keeps a task's own data and every evaluation text out of the corpus a student distils on."""

from __future__ import annotations

import dataclasses

import pytest

from distilsearch.kdlib.data.general_corpus import (
    TASK_SOURCES,
    article_sentences,
    build_general_corpus,
    embedded_general_corpus,
    general_corpus_for,
    task_text_keys,
    text_key,
)
from distilsearch.kdlib.data.tasks import load_task

ARTICLE = (
    "Profits jump at media giant\n"
    "\n"
    "Quarterly profits at the media giant jumped 76% to $1.13bn. The firm benefited from higher advert sales!\n"
    'Too short here. "Sales rose," it said on Friday in a statement to the market.\n'
)


def test_an_article_gives_its_body_sentences_within_the_word_limits() -> None:
    assert article_sentences(ARTICLE) == [
        "Quarterly profits at the media giant jumped 76% to $1.13bn.",
        "The firm benefited from higher advert sales!",
        '"Sales rose," it said on Friday in a statement to the market.',
    ]
    assert article_sentences("Only a title") == []


def test_texts_are_deduplicated_across_sources_the_first_source_keeping_each() -> None:
    corpus = build_general_corpus(
        {"snli-premises": ["A dog runs.", "  ", "A cat sleeps."], "bbc-news": ["a  DOG runs.", "Shares fell."]}
    )
    assert list(corpus["text"]) == ["A dog runs.", "A cat sleeps.", "Shares fell."]
    assert list(corpus["source"]) == ["snli-premises", "snli-premises", "bbc-news"]
    assert text_key("A dog runs.") == text_key("a  DOG runs.") != text_key("A dog ran.")


def test_a_task_never_distils_on_its_own_sources_or_on_any_evaluation_text(toy_teacher_and_task) -> None:
    _, task = toy_teacher_and_task
    test_text = task.splits["test"]["text"][0]
    ood_dev = {name: data["text"][0] for name, data in task.ood_dev.items()}
    general = ["A man rides a horse.", "Shares fell sharply on Monday."]
    corpus = build_general_corpus(
        {"snli-premises": [general[0], test_text.upper()], "bbc-news": [general[1], *ood_dev.values()]}
    )
    kept = general_corpus_for(task, corpus)
    assert list(kept["text"]) == general
    assert not {text_key(text) for text in kept["text"]} & task_text_keys(task)
    snli_like = dataclasses.replace(task, name="snli")
    assert list(general_corpus_for(snli_like, corpus)["text"]) == [general[1]]
    assert TASK_SOURCES["snli"] == {"snli-premises", "snli-hypotheses"}
    assert kept.info.description != general_corpus_for(snli_like, corpus).info.description


@pytest.mark.integration
def test_the_embedded_corpus_is_large_cached_and_disjoint_from_rt_polarity() -> None:
    corpus = embedded_general_corpus(progress=False)
    assert len(corpus) > 150_000 and set(corpus["source"]) == {"snli-premises", "snli-hypotheses", "bbc-news"}
    assert corpus["key"].is_unique
    assert embedded_general_corpus(progress=False).equals(corpus)
    task = load_task("rt-polarity", progress=False)
    kept = general_corpus_for(task, corpus)
    assert len(kept) > 150_000
    assert not {text_key(text) for text in kept["text"]} & task_text_keys(task)
