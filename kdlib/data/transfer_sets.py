"""Transfer sets: unlabelled in-domain text that the teacher labels for the task stage (Hinton's transfer set).

:data:`TRANSFER_SOURCES` maps a registered task to a reader of text from its domain that none of its labelled or
evaluation sets holds:

* ``rt-polarity``: the sentences (5 to 64 words) of the Rotten Tomatoes plot summaries (``category == "plot"``,
  never among the labelled snippets), only of movies whose reviews fall in the task's train split (the task's own
  by-movie rule), so nothing is read about a validation or test movie.

:func:`transfer_set_for` deduplicates the texts and drops every one whose normalised form occurs in the task's
splits or OOD sets; rows carry ``label = -1`` (:data:`~distilsearch.kdlib.data.general_corpus.UNLABELLED`): a
student learns them from the teacher's soft targets only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import datasets
import pandas as pd
from transformers import PreTrainedTokenizerBase

from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.data.general_corpus import UNLABELLED, sentences, task_text_keys, text_key
from distilsearch.kdlib.data.splits import stable_fraction
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tokenization import tokenize_cached

TRAIN_SHARE = 0.8  # the share of movies rt-polarity's split_by_group puts in train


def _rt_plot_sentences(progress: bool) -> list[str]:
    from distilsearch.kdlib.data.readers import read_rotten_tomatoes_plots

    plots = read_rotten_tomatoes_plots(progress)
    in_train = plots["movie"].map(stable_fraction) < TRAIN_SHARE
    return [sentence for plot in plots.loc[in_train, "text"] for sentence in sentences(plot)]


TRANSFER_SOURCES: dict[str, Callable[[bool], list[str]]] = {"rt-polarity": _rt_plot_sentences}


class NoTransferSetError(ValueError):
    """A task with no registered transfer set."""


def transfer_set_for(task: TaskData, texts: Iterable[str]) -> datasets.Dataset:
    """``texts`` as ``task``'s transfer set: distinct, none of them in the task's splits or OOD sets, unlabelled;
    its fingerprint in ``info.description``."""
    frame = pd.DataFrame({"text": [text.strip() for text in texts if text.strip()]})
    frame["key"] = frame["text"].map(text_key)
    frame = frame[~frame["key"].duplicated() & ~frame["key"].isin(task_text_keys(task))]
    fingerprint = sha256_json({"transfer": list(frame["key"]), "task": task.fingerprint})[:24]
    return datasets.Dataset.from_dict(
        {"text": list(frame["text"]), "label": [UNLABELLED] * len(frame)},
        info=datasets.DatasetInfo(description=fingerprint),
    )


def tokenized_transfer_set(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, *, progress: bool = True
) -> datasets.Dataset:
    """``task``'s registered transfer set, tokenized once per (tokenizer, ``max_length``) and cached;
    :class:`NoTransferSetError` for a task without one."""
    if task.name not in TRANSFER_SOURCES:
        raise NoTransferSetError(
            f"task {task.name!r} has no transfer set (tasks with one: {sorted(TRANSFER_SOURCES)}); use transfer_ratio=0"
        )
    unlabelled = transfer_set_for(task, TRANSFER_SOURCES[task.name](progress))
    description = f"transfer set of {task.name}"
    return tokenize_cached(
        unlabelled, ("text",), tokenizer, max_length, unlabelled.info.description, description, progress=progress
    )
