import dataclasses
from pathlib import Path

import datasets
import pandas as pd
import pytest

from distilsearch.kdlib.data import hub_tasks
from distilsearch.kdlib.data.tasks import TASKS, load_task


def test_unknown_task_lists_known_tasks() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'nope'; known tasks: .*rt-polarity"):
        load_task("nope")


def test_registry_has_embedded_and_hub_tasks() -> None:
    assert {"rt-polarity", "snli", "bbc-news", "glue-sst2"} <= set(TASKS)
    assert TASKS["glue-sst2"].needs_hub and not TASKS["rt-polarity"].needs_hub
    assert TASKS["snli"].text_fields == ("premise", "hypothesis") and len(TASKS["snli"].label_names) == 3
    assert len(TASKS["bbc-news"].label_names) == 5


def test_toy_task_has_splits_ood_and_class_labels(toy_task: str) -> None:
    task = load_task(toy_task, progress=False)
    assert set(task.splits) == {"train", "validation", "test"}
    assert set(task.ood) == set(task.ood_dev) == {"echo"}
    assert task.splits["train"].features["label"].names == ["negative", "positive"]
    assert task.num_labels == 2
    assert set(task.evaluation_sets()) == {"validation", "test", "ood-dev/echo", "ood/echo"}
    # the OOD set is split into a dev half (selection) and a test half (reporting): disjoint, together the whole set
    dev, test = task.ood_dev["echo"]["text"], task.ood["echo"]["text"]
    assert dev and test and not set(dev) & set(test)
    _, whole, _ = TASKS[toy_task].build(None, False)
    assert sorted([*dev, *test]) == sorted(whole["echo"]["text"])
    assert set(task.ood_dev_fingerprints) == {"echo"} and task.ood_dev_fingerprints != task.ood_fingerprints


def test_fingerprint_is_stable_and_tracks_content(toy_task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = load_task(toy_task, progress=False), load_task(toy_task, progress=False)
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 64
    original = TASKS[toy_task].build

    def altered(ood_limit, progress):
        splits, ood, notes = original(ood_limit, progress)
        splits["train"].loc[0, "text"] = "changed"
        return splits, ood, notes

    monkeypatch.setitem(TASKS, toy_task, dataclasses.replace(TASKS[toy_task], build=altered))
    changed = load_task(toy_task, progress=False)
    assert changed.fingerprint != first.fingerprint
    assert changed.ood_fingerprints == first.ood_fingerprints
    assert changed.ood_dev_fingerprints == first.ood_dev_fingerprints


def test_ood_limit_caps_and_validates(toy_task: str) -> None:
    capped = load_task(toy_task, ood_limit=3, progress=False)
    assert len(capped.ood["echo"]) + len(capped.ood_dev["echo"]) == 3  # capped first, then split into halves
    with pytest.raises(ValueError, match="ood_limit"):
        load_task(toy_task, ood_limit=0)


def fake_hub(tmp_path: Path):
    """Local stand-ins for the hub datasets glue-sst2 reads, saved to disk and loaded back."""
    sentences = [f"sentence {i} is {'good' if i % 2 else 'bad'}" for i in range(400)]
    tables = {
        ("nyu-mll/glue", "sst2", "train"): {
            "sentence": sentences,
            "label": [i % 2 for i in range(400)],
            "idx": list(range(400)),
        },
        ("nyu-mll/glue", "sst2", "validation"): {
            "sentence": sentences[:50],
            "label": [i % 2 for i in range(50)],
            "idx": list(range(50)),
        },
        ("stanfordnlp/imdb", None, "test"): {
            "text": [f"long review {i}" for i in range(3000)],
            "label": [i % 2 for i in range(3000)],
        },
        ("fancyzhx/yelp_polarity", None, "test"): {
            "text": [f"yelp {i}" for i in range(100)],
            "label": [i % 2 for i in range(100)],
        },
    }
    calls = []

    def load_dataset(path: str, name: str | None = None, split: str | None = None):
        calls.append((path, name, split))
        folder = tmp_path / f"{path.replace('/', '_')}-{name}-{split}"
        datasets.Dataset.from_dict(tables[(path, name, split)]).save_to_disk(str(folder))
        return datasets.load_from_disk(str(folder))

    return load_dataset, calls


def test_glue_sst2_builds_from_local_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_dataset, calls = fake_hub(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = load_task("glue-sst2", ood_limit=500, progress=False)
    assert len(task.splits["test"]) == 50
    assert len(task.splits["train"]) + len(task.splits["validation"]) == 400
    assert not set(task.splits["train"]["text"]) & set(task.splits["validation"]["text"])
    sizes = {name: len(task.ood[name]) + len(task.ood_dev[name]) for name in task.ood}
    assert sizes == {"imdb": 500, "yelp-polarity": 100} and set(task.ood_dev) == set(task.ood)
    for name in task.ood:  # content-hash halves: each about half the set, no text in both
        assert 0.3 < len(task.ood_dev[name]) / sizes[name] < 0.7
        assert not set(task.ood[name]["text"]) & set(task.ood_dev[name]["text"])
    assert ("nyu-mll/glue", "sst2", "train") in calls


def test_hub_frame_keeps_text_and_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_dataset, _ = fake_hub(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    frame = hub_tasks._hub_frame("fancyzhx/yelp_polarity", None, "test", "text")
    assert list(frame.columns) == ["text", "label"] and isinstance(frame, pd.DataFrame)
