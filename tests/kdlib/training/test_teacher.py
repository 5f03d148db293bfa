"""The fine-tuned teacher cache, on a tiny random BERT and the toy task."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_bert
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.training import teacher as teacher_module
from distilsearch.kdlib.training.finetune import FineTuneRecipe, TrainingDivergedError, fine_tune
from distilsearch.kdlib.training.teacher import MANIFEST, get_teacher

RECIPE = FineTuneRecipe(epochs=2, batch_size=16, max_length=16, learning_rate=1e-3)


def test_teacher_trains_saves_and_loads_with_stock_transformers(toy_task: str, tiny_bert_dir: Path) -> None:
    teacher = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert not teacher.from_cache
    scores = teacher.metrics["scores"]
    assert set(scores) == {"validation", "test", "ood-dev/echo", "ood/echo"}
    task = load_task(toy_task, progress=False)
    assert scores["ood-dev/echo"]["examples"] == len(task.ood_dev["echo"])
    assert scores["ood/echo"]["examples"] == len(task.ood["echo"])
    assert all(0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["majority_accuracy"] <= 1.0 for s in scores.values())
    assert len(teacher.metrics["validation_accuracy_per_epoch"]) == 2
    model = AutoModelForSequenceClassification.from_pretrained(teacher.path)
    tokenizer = AutoTokenizer.from_pretrained(teacher.path)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    batch = tokenizer(["a great film number 3"], return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (1, 2)


def test_teacher_learns_the_toy_task(toy_task: str, tiny_bert_dir: Path) -> None:
    recipe = FineTuneRecipe(epochs=4, batch_size=16, max_length=16, learning_rate=3e-3)
    teacher = get_teacher(toy_task, recipe, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert teacher.metrics["scores"]["test"]["accuracy"] >= 0.9


def test_second_call_comes_from_cache_without_training(
    toy_task: str, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    monkeypatch.setattr(teacher_module, "fine_tune", lambda *a, **k: pytest.fail("cached teacher was retrained"))
    second = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert second.from_cache and second.path == first.path and second.metrics == first.metrics


def test_key_changes_with_recipe_and_base(toy_task: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    task = load_task(toy_task, progress=False)
    key = teacher_module.teacher_key(tiny_bert_dir, task, RECIPE)
    assert key != teacher_module.teacher_key(tiny_bert_dir, task, RECIPE.model_copy(update={"seed": 1}))
    other_base = build_tiny_bert(tmp_path / "other", seed=1)
    assert key != teacher_module.teacher_key(other_base, task, RECIPE)


@pytest.mark.parametrize("damage", ["weights", "manifest", "missing-file"])
def test_corrupted_cache_is_detected_and_rebuilt(toy_task: str, tiny_bert_dir: Path, damage: str) -> None:
    first = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    if damage == "weights":
        weights = first.path / "model.safetensors"
        blob = bytearray(weights.read_bytes())
        blob[-10:] = b"\x00" * 10
        weights.write_bytes(bytes(blob))
    elif damage == "manifest":
        (first.path / MANIFEST).write_text("{not json")
    else:
        (first.path / "config.json").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert not rebuilt.from_cache
    assert any("rebuilding" in str(w.message) for w in caught)
    assert teacher_module.verify_cached_teacher(rebuilt.path, rebuilt.key) == rebuilt.metrics
    assert get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False).from_cache


def test_new_ood_set_is_scored_on_a_cached_teacher(
    toy_task: str, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilsearch.kdlib.data.tasks import TASKS

    first = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    original = TASKS[toy_task].build

    def with_extra_ood(ood_limit, progress):
        splits, ood, notes = original(ood_limit, progress)
        return splits, ood | {"again": ood["echo"]}, notes

    import dataclasses

    monkeypatch.setitem(TASKS, toy_task, dataclasses.replace(TASKS[toy_task], build=with_extra_ood))
    second = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert second.from_cache and {"ood-dev/again", "ood/again"} <= second.metrics["scores"].keys()
    stored = json.loads((first.path / MANIFEST).read_text())["metrics"]["scores"]
    assert stored.keys() >= {"ood-dev/again", "ood/again"}


def test_base_without_safetensors_is_rejected(toy_task: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        get_teacher(toy_task, RECIPE, base_dir=tmp_path, device="cpu", progress=False)


def test_nan_loss_stops_training_with_a_clear_error(toy_task: str, tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    sets = tokenize_task(load_task(toy_task, progress=False), tokenizer, 16, progress=False)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 0"):
        fine_tune(
            model, sets["train"], sets["validation"], RECIPE, pad_id=0, device=torch.device("cpu"), progress=False
        )


def test_recipe_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        FineTuneRecipe(learning_rate=-1)
    with pytest.raises(ValueError, match="unknown_field"):
        FineTuneRecipe(unknown_field=1)
