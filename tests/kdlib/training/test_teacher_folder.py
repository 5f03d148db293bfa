"""A teacher the user brings: a local fine-tuned classifier folder, checked, keyed by content and scored once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_bert
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.kdlib.training.teacher_folder import (
    TeacherFolderError,
    load_task_for_teacher,
    load_teacher_folder,
    teacher_for,
)


def teacher_folder(path: Path, labels: tuple[str, ...] | None = None, *, num_labels: int = 2, seed: int = 0) -> Path:
    """A tiny fine-tuned-looking BERT classifier (random weights) whose id2label names ``labels``."""
    names = {}
    if labels is not None:
        names = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    return build_tiny_bert(path, num_labels=len(labels) if labels else num_labels, seed=seed, **names)


def sentiment_csv(path: Path, positive: str = "positive", negative: str = "negative") -> Path:
    rows = [("text", "label")]
    rows += [(f"a great film number {i}", positive) for i in range(30)]
    rows += [(f"a dull plot number {i}", negative) for i in range(30)]
    path.write_text("\n".join(",".join(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_a_folder_teacher_is_scored_once_then_read_from_the_cache(tmp_path: Path, toy_task: str) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("negative", "positive"))
    task = load_task(toy_task, progress=False)
    first = load_teacher_folder(folder, task, device="cpu", progress=False)
    assert first.path == folder and first.task == toy_task and not first.from_cache
    assert set(first.metrics["scores"]) == {"validation", "test", "ood-dev/echo", "ood/echo"}
    assert all(0.0 <= score["accuracy"] <= 1.0 for score in first.metrics["scores"].values())
    again = load_teacher_folder(folder, task, device="cpu", progress=False)
    assert again.from_cache and again.key == first.key and again.metrics == first.metrics
    assert not any(path.name.startswith("distilsearch") for path in folder.iterdir()), "the folder is never written"


def test_the_key_follows_the_folder_content_and_the_data(tmp_path: Path, toy_task: str) -> None:
    task = load_task(toy_task, progress=False)
    one = load_teacher_folder(teacher_folder(tmp_path / "a", ("negative", "positive")), task, progress=False)
    copy = load_teacher_folder(shutil.copytree(tmp_path / "a", tmp_path / "b"), task, progress=False)
    assert one.key == copy.key, "same bytes at another path: the same teacher"
    model = BertForSequenceClassification.from_pretrained(tmp_path / "b")
    with torch.no_grad():
        model.classifier.bias += 1.0
    model.save_pretrained(tmp_path / "b")
    other = load_teacher_folder(tmp_path / "b", task, progress=False)
    assert one.key != other.key, "other weights: another teacher"
    data = load_task(DataSpec(files={"all": str(sentiment_csv(tmp_path / "s.csv"))}), progress=False)
    on_data = load_teacher_folder(tmp_path / "a", data, progress=False)
    assert on_data.key != one.key, "other data: another key"


def test_generic_labels_are_matched_by_position_with_a_note(tmp_path: Path, toy_task: str) -> None:
    folder = teacher_folder(tmp_path / "teacher", None)
    teacher = load_teacher_folder(folder, load_task(toy_task, progress=False), progress=False)
    assert "LABEL_0, LABEL_1" in teacher.metrics["notes"]["teacher labels"]


def test_label_names_are_compared_case_insensitively(tmp_path: Path, toy_task: str) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("NEGATIVE", "POSITIVE"))
    assert load_teacher_folder(folder, load_task(toy_task, progress=False), progress=False).metrics["scores"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (("entailment", "neutral", "contradiction"), "has 3 labels (entailment, neutral, contradiction) but task"),
        (("cat", "dog"), "labels (cat, dog) do not match task 'toy-sentiment' labels (negative, positive)"),
        (("positive", "negative"), "(the same labels in another order)"),
    ],
)
def test_labels_that_do_not_match_the_task_name_both(
    tmp_path: Path, toy_task: str, labels: tuple[str, ...], message: str
) -> None:
    folder = teacher_folder(tmp_path / "teacher", labels)
    with pytest.raises(TeacherFolderError, match=r"teacher .*") as error:
        load_teacher_folder(folder, load_task(toy_task, progress=False), progress=False)
    assert message in str(error.value) and str(folder) in str(error.value)


def test_user_data_takes_the_teacher_label_order(tmp_path: Path) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("Positive", "Negative"))
    spec = DataSpec(files={"all": str(sentiment_csv(tmp_path / "reviews.csv"))})
    assert load_task(spec, progress=False).label_names == ("negative", "positive")
    task = load_task_for_teacher(spec, folder, progress=False)
    assert task.label_names == ("positive", "negative")
    assert load_teacher_folder(folder, task, progress=False).metrics["scores"]["test"]["examples"] > 0


def test_user_data_with_other_labels_than_the_teacher_is_an_error(tmp_path: Path) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("cat", "dog"))
    spec = DataSpec(files={"all": str(sentiment_csv(tmp_path / "reviews.csv"))})
    task = load_task_for_teacher(spec, folder, progress=False)
    with pytest.raises(TeacherFolderError, match=r"labels \(cat, dog\) do not match task 'reviews' labels"):
        load_teacher_folder(folder, task, progress=False)


def test_bad_folders_are_clear_errors(tmp_path: Path, toy_task: str) -> None:
    task = load_task(toy_task, progress=False)
    with pytest.raises(TeacherFolderError, match=r"does not exist .*never downloads"):
        load_teacher_folder(tmp_path / "missing", task, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TeacherFolderError, match="is a file"):
        load_teacher_folder(tmp_path / "file", task, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherFolderError, match=r"has no config.json"):
        load_teacher_folder(tmp_path / "empty", task, progress=False)
    pickled = teacher_folder(tmp_path / "pickled", ("negative", "positive"))
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(TeacherFolderError, match=r"no .safetensors weights"):
        load_teacher_folder(pickled, task, progress=False)
    encoder = tmp_path / "encoder"
    BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        encoder
    )
    with pytest.raises(TeacherFolderError, match=r"BertModel, not a fine-tuned .*--base"):
        load_teacher_folder(encoder, task, progress=False)
    distilbert = tmp_path / "distilbert"
    DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    ).save_pretrained(distilbert)
    with pytest.raises(
        TeacherFolderError, match=r"teacher folder .*distilbert: model_type 'distilbert' is not supported"
    ):
        load_teacher_folder(distilbert, task, progress=False)


def test_a_too_long_max_length_is_refused(tmp_path: Path, toy_task: str) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("negative", "positive"))
    with pytest.raises(TeacherFolderError, match="max_length=256 is above the 128 positions"):
        load_teacher_folder(folder, load_task(toy_task, progress=False), max_length=256, progress=False)


def test_a_teacher_folder_and_a_base_model_together_are_refused(tmp_path: Path, toy_task: str) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("negative", "positive"))
    with pytest.raises(TeacherFolderError, match="not both"):
        teacher_for(load_task(toy_task, progress=False), folder=folder, base_dir=folder, progress=False)


def test_unreadable_cached_scores_are_measured_again(tmp_path: Path, toy_task: str) -> None:
    folder = teacher_folder(tmp_path / "teacher", ("negative", "positive"))
    task = load_task(toy_task, progress=False)
    first = load_teacher_folder(folder, task, progress=False)
    from distilsearch.kdlib.core.paths import cache_dir

    (cached,) = cache_dir("teacher-scores").glob(f"{toy_task}-*.json")
    cached.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        again = load_teacher_folder(folder, task, progress=False)
    assert not again.from_cache and again.metrics["scores"] == first.metrics["scores"]
    assert json.loads(cached.read_text())["metrics"]["scores"] == first.metrics["scores"]
