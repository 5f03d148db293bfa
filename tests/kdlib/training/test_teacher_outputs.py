"""Cached teacher logits: row-aligned, computed once, keyed by teacher and set content, written atomically."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.measure.scoring import predict_logits
from distilsearch.kdlib.training.teacher_outputs import LOGITS_FILE, dataset_digest, teacher_logits, teacher_outputs_key

CPU = torch.device("cpu")


@pytest.fixture
def train_set(toy_task: str, tiny_bert_dir: Path) -> datasets.Dataset:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return tokenize_task(load_task(toy_task, progress=False), tokenizer, 16, progress=False)["train"]


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the teacher ran although its logits were cached")


def test_logits_are_row_aligned_and_computed_once(
    tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    assert first.shape == (len(train_set), 2) and first.dtype == torch.float32
    assert torch.allclose(first, predict_logits(tiny_teacher, train_set, pad_id=0, device=CPU), atol=1e-6)
    monkeypatch.setattr(tiny_teacher, "forward", refuse)
    second = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    assert torch.equal(first, second)
    entries = [path.name for path in cache_dir("teacher-outputs").iterdir()]
    assert len([name for name in entries if not name.startswith(".")]) == 1
    assert not [name for name in entries if name.startswith(".tmp-")], "staging folders must not remain"


def test_the_same_rows_read_another_way_hit_the_cache(
    tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    rebuilt = datasets.Dataset.from_dict(train_set.with_format(None).to_dict())
    monkeypatch.setattr(tiny_teacher, "forward", refuse)
    for same_rows in (train_set.with_format(None), train_set.select(range(len(train_set))), rebuilt):
        assert torch.equal(teacher_logits(tiny_teacher, "teacher-a", same_rows, pad_id=0, device=CPU), first)


def test_key_depends_on_teacher_rows_and_their_order(train_set: datasets.Dataset) -> None:
    key = teacher_outputs_key("teacher-a", train_set, CPU)
    assert key == teacher_outputs_key("teacher-a", train_set.with_format("numpy"), CPU)
    assert key != teacher_outputs_key("teacher-b", train_set, CPU)
    assert key != teacher_outputs_key("teacher-a", train_set.select(range(len(train_set) - 1)), CPU)
    reversed_rows = train_set.select(range(len(train_set) - 1, -1, -1))
    assert dataset_digest(reversed_rows) != dataset_digest(train_set)
    shorter = train_set.map(lambda row: {"input_ids": row["input_ids"][:-1]}).with_format(None)
    assert dataset_digest(shorter) != dataset_digest(train_set)


def test_an_unreadable_cache_entry_is_recomputed(
    tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset
) -> None:
    first = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    stored = cache_dir("teacher-outputs") / teacher_outputs_key("teacher-a", train_set, CPU) / LOGITS_FILE
    stored.write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="unreadable"):
        again = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    assert torch.equal(again, first)


def test_bad_arguments_are_rejected(tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset) -> None:
    with pytest.raises(ValueError, match="teacher_key must be a non-empty string"):
        teacher_logits(tiny_teacher, "", train_set, pad_id=0, device=CPU)
    with pytest.raises(ValueError, match="dataset is empty"):
        teacher_logits(tiny_teacher, "teacher-a", train_set.select([]), pad_id=0, device=CPU)
    with pytest.raises(ValueError, match="lacks the token columns"):
        dataset_digest(train_set.remove_columns("token_type_ids"))
