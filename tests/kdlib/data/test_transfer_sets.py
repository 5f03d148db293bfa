"""Transfer sets: in-domain unlabelled text the teacher labels; never a text of the task's splits or OOD sets, never
a plot of a validation or test movie."""

from __future__ import annotations

import dataclasses

import pytest

from distilsearch.kdlib.data.general_corpus import UNLABELLED, sentences, task_text_keys, text_key
from distilsearch.kdlib.data.readers import read_rotten_tomatoes, read_rotten_tomatoes_plots
from distilsearch.kdlib.data.splits import split_by_group
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.transfer_sets import (
    TRANSFER_SOURCES,
    NoTransferSetError,
    tokenized_transfer_set,
    transfer_set_for,
)


def test_a_transfer_set_is_distinct_unlabelled_and_free_of_task_text(toy_teacher_and_task) -> None:
    _, task = toy_teacher_and_task
    validation_text = task.splits["validation"]["text"][0]
    texts = ["the camera follows a family through one long winter", validation_text, " ", "The camera FOLLOWS a family "
             "through one long winter"]  # fmt: skip
    transfer = transfer_set_for(task, texts)
    assert transfer["text"] == ["the camera follows a family through one long winter"]
    assert transfer["label"] == [UNLABELLED]
    assert not {text_key(text) for text in transfer["text"]} & task_text_keys(task)
    other = transfer_set_for(dataclasses.replace(task, fingerprint="other"), texts)
    assert other.info.description != transfer.info.description


def test_a_task_without_a_transfer_set_says_so(toy_teacher_and_task) -> None:
    teacher, task = toy_teacher_and_task
    with pytest.raises(NoTransferSetError, match=r"task 'toy-sentiment' has no transfer set.*'rt-polarity'"):
        tokenized_transfer_set(task, teacher.load_tokenizer(), 16, progress=False)


@pytest.mark.integration
def test_rt_polarity_transfer_set_holds_no_evaluation_text_and_no_held_out_movie() -> None:
    task = load_task("rt-polarity", progress=False)
    transfer = transfer_set_for(task, TRANSFER_SOURCES["rt-polarity"](False))
    assert len(transfer) > 4000 and not {text_key(text) for text in transfer["text"]} & task_text_keys(task)
    held_out = split_by_group(read_rotten_tomatoes(progress=False), "movie")
    held_out_movies = set(held_out["validation"]["movie"]) | set(held_out["test"]["movie"])
    plots = read_rotten_tomatoes_plots(progress=False)
    from_held_out = {
        text_key(s) for plot in plots[plots["movie"].isin(held_out_movies)]["text"] for s in sentences(plot)
    }
    assert from_held_out and not {text_key(text) for text in transfer["text"]} & from_held_out
