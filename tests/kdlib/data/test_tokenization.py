from pathlib import Path

import pytest
from transformers import AutoTokenizer

from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.data import tokenization
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task, tokenizer_fingerprint


def test_tokenized_sets_are_cached_and_reused(
    toy_task: str, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = load_task(toy_task, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    first = tokenize_task(task, tokenizer, 16, progress=False)
    assert set(first) == {"train", "validation", "test", "ood-dev/echo", "ood/echo"}
    assert first["train"].format["type"] == "torch"
    assert set(first["train"].column_names) == {"input_ids", "attention_mask", "token_type_ids", "label"}
    assert max(len(ids) for ids in first["train"]["input_ids"]) <= 16
    cached = sorted(p.name for p in cache_dir("tokenized").iterdir() if not p.name.startswith("."))
    assert len(cached) == 5

    def refuse(*args, **kwargs):
        raise AssertionError("a cached set was tokenized again")

    monkeypatch.setattr(tokenization.datasets.Dataset, "map", refuse)
    second = tokenize_task(task, tokenizer, 16, progress=False)
    assert second["test"]["input_ids"][0].tolist() == first["test"]["input_ids"][0].tolist()
    assert second["ood-dev/echo"]["input_ids"][0].tolist() == first["ood-dev/echo"]["input_ids"][0].tolist()


def test_cache_key_depends_on_max_length_and_tokenizer(toy_task: str, tiny_bert_dir: Path) -> None:
    task = load_task(toy_task, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tokenize_task(task, tokenizer, 16, progress=False)
    tokenize_task(task, tokenizer, 32, progress=False)
    assert len([p for p in cache_dir("tokenized").iterdir() if not p.name.startswith(".")]) == 10
    other = AutoTokenizer.from_pretrained(tiny_bert_dir)
    other.add_tokens(["zzzz"])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)


def test_pairs_are_encoded_with_segments(tiny_bert_dir: Path) -> None:
    import pandas as pd

    from distilsearch.kdlib.data.splits import split_by_group
    from distilsearch.kdlib.data.tasks import TASKS, TaskDefinition

    def build(ood_limit, progress):
        frame = pd.DataFrame(
            {
                "premise": ["a great film"] * 30,
                "hypothesis": ["dull plot"] * 30,
                "label": [0, 1, 2] * 10,
                "group": [str(i) for i in range(30)],
            }
        )
        return split_by_group(frame, "group", (0.4, 0.3, 0.3)), {}, {}

    TASKS["toy-pairs"] = TaskDefinition("toy-pairs", "pairs", ("premise", "hypothesis"), ("a", "b", "c"), build)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
        sets = tokenize_task(load_task("toy-pairs", progress=False), tokenizer, 32, progress=False)
        assert set(sets["train"]["token_type_ids"][0].tolist()) == {0, 1}
    finally:
        TASKS.pop("toy-pairs")


def test_too_short_max_length_is_rejected(toy_task: str, tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_length"):
        tokenize_task(load_task(toy_task, progress=False), AutoTokenizer.from_pretrained(tiny_bert_dir), 4)
