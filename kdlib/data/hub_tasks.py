"""Tasks loaded from the Hugging Face hub with ``datasets.load_dataset``: for users with hub access only.

No default path and no test calls the hub: tests replace ``datasets.load_dataset`` with local data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distilsearch.kdlib.data.splits import drop_duplicate_texts, split_by_group, stable_sample
from distilsearch.kdlib.data.task_registry import TaskDefinition, register_task

if TYPE_CHECKING:
    import pandas as pd


def _hub_frame(path: str, name: str | None, split: str, text_column: str) -> pd.DataFrame:
    """One split of a hub dataset as a ``text``/``label`` frame."""
    import pandas as pd
    from datasets import load_dataset

    dataset = load_dataset(path, name, split=split)
    frame = dataset.to_pandas()
    return pd.DataFrame({"text": frame[text_column].astype(str), "label": frame["label"].astype(int)})


def _build_glue_sst2(ood_limit: int | None, progress: bool):
    train = drop_duplicate_texts(_hub_frame("nyu-mll/glue", "sst2", "train", "sentence"), ("text",))
    held_out = split_by_group(train, "text", (0.95, 0.05, 0.0))
    test = _hub_frame("nyu-mll/glue", "sst2", "validation", "sentence")
    ood = {
        "imdb": stable_sample(_hub_frame("stanfordnlp/imdb", None, "test", "text"), ood_limit, ("text",)),
        "yelp-polarity": stable_sample(
            _hub_frame("fancyzhx/yelp_polarity", None, "test", "text"), ood_limit, ("text",)
        ),
    }
    notes = {
        "split": "GLUE SST-2 train split 95/5 by sentence hash into train/validation; GLUE validation is the test set",
        "ood/imdb": "IMDB movie reviews (long; truncated to the max length)",
        "ood/yelp-polarity": "Yelp reviews: 1-2 stars negative, 4-5 stars positive (0 = negative)",
    }
    return {"train": held_out["train"], "validation": held_out["validation"], "test": test}, ood, notes


register_task(
    TaskDefinition(
        "glue-sst2",
        "GLUE SST-2 from the Hugging Face hub (needs hub access); OOD: IMDB, Yelp polarity",
        ("text",),
        ("negative", "positive"),
        _build_glue_sst2,
        needs_hub=True,
    )
)
