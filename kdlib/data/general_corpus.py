"""The general-distillation corpus: unlabelled general English from the embedded assets, kept apart from every task.

TinyBERT, DistilBERT and MiniLM distil a student's intermediate layers on a large general corpus before (or instead
of) the task's data. Ours, ``general-en``, is built offline from three sources (:data:`GENERAL_SOURCES`):

* ``snli-premises``: SNLI's premises, image captions written by Flickr30k annotators;
* ``snli-hypotheses``: SNLI's hypotheses, short sentences crowd workers wrote about those captions;
* ``bbc-news``: the sentences of the 2,225 BBC news articles (titles dropped, 5 to 64 words each).

Texts are normalised (:func:`~distilsearch.kdlib.data.splits.normalise_text`) and deduplicated across sources, and
cached once as Parquet under ``$DISTILSEARCH_HOME/corpora``. For a task, :func:`general_corpus_for` drops every source
that is the task's own data (``snli`` keeps only the BBC sentences, ``bbc-news`` only SNLI's) and every sentence whose
normalised form occurs in any of the task's splits or OOD sets, so distillation never sees evaluation text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping

import datasets
import pandas as pd
from transformers import PreTrainedTokenizerBase

from distilsearch.kdlib.core.atomic import lock_for, staging_dir
from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.data.splits import normalise_text
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tokenization import tokenize_cached

CORPUS_NAME = "general-en"
CORPUS_VERSION = 1
CORPUS_FILE = "corpus.parquet"
UNLABELLED = -1
MIN_WORDS, MAX_WORDS = 5, 64
SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'(]?[A-Z0-9])")
TASK_SOURCES: dict[str, frozenset[str]] = {
    "snli": frozenset({"snli-premises", "snli-hypotheses"}),
    "bbc-news": frozenset({"bbc-news"}),
}
"""The corpus sources that are a registered task's own data (left out of that task's corpus)."""


def _snli_premises(progress: bool) -> list[str]:
    from distilsearch.kdlib.data.readers import read_snli

    return [text for split in ("train", "test") for text in read_snli(split, progress)["premise"]]


def _snli_hypotheses(progress: bool) -> list[str]:
    from distilsearch.kdlib.data.readers import read_snli

    return [text for split in ("train", "test") for text in read_snli(split, progress)["hypothesis"]]


def _bbc_sentences(progress: bool) -> list[str]:
    from distilsearch.kdlib.data.readers import read_bbc_news

    return [sentence for article in read_bbc_news(progress)["text"] for sentence in article_sentences(article)]


GENERAL_SOURCES: dict[str, Callable[[bool], list[str]]] = {
    "snli-premises": _snli_premises,
    "snli-hypotheses": _snli_hypotheses,
    "bbc-news": _bbc_sentences,
}


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split at line breaks and sentence ends) with 5 to 64 words."""
    found = []
    for paragraph in text.split("\n"):
        for sentence in SENTENCE_END.split(paragraph.strip()):
            if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
                found.append(sentence.strip())
    return found


def article_sentences(article: str) -> list[str]:
    """The body's :func:`sentences` of a news article (its first line, the title, dropped)."""
    body = article.strip().split("\n", 1)[1] if "\n" in article.strip() else ""
    return sentences(body)


def text_key(text: str) -> str:
    """The sha256 of a text's normalised form: two texts with the same key count as the same text."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def build_general_corpus(sources: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    """``text``, ``source`` and ``key`` (:func:`text_key`) of every distinct non-empty text, the first source that
    holds a text keeping it, in source then text order."""
    rows = [(text.strip(), source) for source, texts in sources.items() for text in texts if text.strip()]
    frame = pd.DataFrame(rows, columns=["text", "source"])
    frame["key"] = frame["text"].map(text_key)
    return frame[~frame["key"].duplicated()].reset_index(drop=True)


def embedded_general_corpus(progress: bool = True) -> pd.DataFrame:
    """``general-en`` built from the embedded assets, cached as Parquet after the first build."""
    target = cache_dir("corpora") / f"{CORPUS_NAME}-v{CORPUS_VERSION}"
    with lock_for(target):
        if not (target / CORPUS_FILE).is_file():
            frame = build_general_corpus({name: read(progress) for name, read in GENERAL_SOURCES.items()})
            with staging_dir(target) as staging:
                frame.to_parquet(staging / CORPUS_FILE, index=False)
    return pd.read_parquet(target / CORPUS_FILE)


def task_text_keys(task: TaskData) -> set[str]:
    """:func:`text_key` of every text field of every example of ``task``'s splits and OOD sets (dev and test)."""
    sets = [*task.splits.values(), *task.ood.values(), *task.ood_dev.values()]
    return {text_key(str(text)) for data in sets for field in task.text_fields for text in data[field]}


def general_corpus_for(task: TaskData, corpus: pd.DataFrame) -> datasets.Dataset:
    """The corpus a student of ``task`` may distil on: ``corpus`` without the task's own sources and without any
    text of the task's splits or OOD sets; a ``text`` column, with its fingerprint in ``info.description``."""
    excluded = TASK_SOURCES.get(task.name, frozenset())
    keep = ~corpus["source"].isin(excluded) & ~corpus["key"].isin(task_text_keys(task))
    kept = corpus[keep]
    fingerprint = sha256_json({"corpus": list(kept["key"]), "task": task.fingerprint})[:24]
    return datasets.Dataset.from_dict({"text": list(kept["text"])}, info=datasets.DatasetInfo(description=fingerprint))


def tokenized_general_corpus(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, *, progress: bool = True
) -> datasets.Dataset:
    """:func:`general_corpus_for` ``task`` from the embedded corpus, tokenized once per (tokenizer, ``max_length``)
    and cached; each row's ``label`` is :data:`UNLABELLED` (the general stage reads no label)."""
    corpus = general_corpus_for(task, embedded_general_corpus(progress))
    unlabelled = corpus.add_column("label", [UNLABELLED] * len(corpus))
    description = f"{CORPUS_NAME} for {task.name}"
    return tokenize_cached(
        unlabelled, ("text",), tokenizer, max_length, corpus.info.description, description, progress=progress
    )
