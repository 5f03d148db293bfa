"""User data (kdlib.data.user_data): files of every supported kind, the split and label rules, and each error."""

import csv
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest
from pydantic import ValidationError

from distilsearch.kdlib.data.tasks import DataFileError, DataSpec, load_data, load_task
from distilsearch.kdlib.data.user_data import data_spec_from_arguments


def reviews(count: int, start: int = 0) -> list[tuple[str, str]]:
    """``count`` distinct (text, label) rows, labels 'pos' and 'neg'."""
    return [
        (f"review {i} was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(start, start + count)
    ]


def write_csv(path: Path, rows: list[tuple], header: tuple[str, ...] = ("text", "label"), delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def load(files: dict[str, Path], **options: object):
    return load_data(DataSpec(files={key: str(path) for key, path in files.items()}, **options), progress=False)


def split_texts(task, column: str = "text") -> dict[str, set[str]]:
    return {split: set(task.splits[split][column]) for split in task.splits}


def message(error: pytest.ExceptionInfo) -> str:
    return str(error.value)


def test_csv_all_is_deduplicated_and_hash_split(tmp_path: Path) -> None:
    rows = [*reviews(300), ("REVIEW 0  was bad", "neg"), ("NA", "pos"), ("null", "neg")]
    path = write_csv(tmp_path / "My Reviews.csv", rows)
    task = load({"all": path})
    texts = split_texts(task)
    assert task.name == "my-reviews" and task.text_fields == ("text",) and task.label_names == ("neg", "pos")
    assert sum(len(part) for part in texts.values()) == 302  # the near-duplicate of "review 0 was bad" is dropped
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert 0.7 < len(texts["train"]) / 302 < 0.9 and texts["validation"] and texts["test"]
    assert "NA" in set().union(*texts.values()) and "null" in set().union(*texts.values())  # no NA conversion
    assert task.splits["train"].features["label"].names == ["neg", "pos"]
    assert "80/10/10" in task.notes["split"] and "1 duplicate rows" in task.notes["split"]
    assert task.ood == {} and len(task.fingerprint) == 64


def test_hash_split_is_deterministic_and_independent_of_row_order(tmp_path: Path) -> None:
    rows = reviews(200)
    first = load({"all": write_csv(tmp_path / "a" / "data.csv", rows)})
    again = load({"all": write_csv(tmp_path / "a" / "data.csv", rows)})
    shuffled_rows = rows[:]
    random.Random(4).shuffle(shuffled_rows)
    shuffled = load({"train": write_csv(tmp_path / "b" / "data.csv", shuffled_rows)})  # train alone = all
    assert again.fingerprint == first.fingerprint
    assert split_texts(again) == split_texts(first) == split_texts(shuffled)


def test_jsonl_sentence_pairs_with_given_splits(tmp_path: Path) -> None:
    def pairs(count: int, start: int = 0) -> list[dict]:
        labels = ["entailment", "neutral", "contradiction"]
        return [
            {"premise": f"p{i}", "hypothesis": f"h{i}", "gold": labels[i % 3], "id": i} for i in range(start, count)
        ]

    train = write_jsonl(tmp_path / "nli_train.jsonl", pairs(60))
    validation = write_jsonl(tmp_path / "dev.jsonl", pairs(70, 60))
    test_path = tmp_path / "test.json"  # .json is read as JSON Lines; blank lines are skipped
    test_path.write_text("\n".join(json.dumps(record) for record in pairs(75, 70) + pairs(3)) + "\n\n")
    task = load(
        {"train": train, "validation": validation, "test": test_path},
        text_columns=("premise", "hypothesis"),
        label_column="gold",
    )
    assert task.name == "nli-train" and task.text_fields == ("premise", "hypothesis")
    assert {split: len(task.splits[split]) for split in task.splits} == {"train": 60, "validation": 10, "test": 8}
    assert task.splits["test"].column_names == ["premise", "hypothesis", "label"]
    assert task.label_names == ("contradiction", "entailment", "neutral")
    assert task.notes["overlap/test"] == "3 of 8 test texts also occur in train (kept)"
    assert task.notes["overlap/validation"].startswith("0 of 10")
    assert task.splits["train"][0] == {"premise": "p0", "hypothesis": "h0", "label": 1}


@pytest.mark.parametrize("given, derived", [("test", "validation"), ("validation", "test")])
def test_a_missing_held_out_split_is_ten_percent_of_train(tmp_path: Path, given: str, derived: str) -> None:
    train_path = write_csv(tmp_path / "train.csv", [*reviews(300), *reviews(20)])  # 20 duplicates
    held_out = write_csv(tmp_path / "held_out.csv", reviews(40, 1000))
    task = load({"train": train_path, given: held_out})
    texts = split_texts(task)
    assert texts[given] == {text for text, _ in reviews(40, 1000)}
    assert len(texts["train"]) + len(texts[derived]) == 300 and 10 < len(texts[derived]) < 50
    assert not texts["train"] & texts[derived]
    assert f"train / {derived}: 90/10 %" in task.notes["split"] and f"{given}: as given" in task.notes["split"]
    assert task.notes[f"overlap/{given}"].startswith("0 of 40")


def test_parquet_with_integer_labels_sorts_them_numerically(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": [f"item {i}" for i in range(120)], "label": [[10, 2, 1][i % 3] for i in range(120)]})
    path = tmp_path / "items.parquet"
    frame.to_parquet(path)
    task = load({"all": path})
    assert task.label_names == ("1", "2", "10")
    row = task.splits["train"][0]
    assert task.label_names[row["label"]] == str(frame.set_index("text").loc[row["text"], "label"])


def test_label_order_given_explicitly(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", reviews(100))
    task = load({"all": path}, label_names=("pos", "neg"))
    assert task.label_names == ("pos", "neg") and task.splits["train"].features["label"].names == ["pos", "neg"]
    row = task.splits["train"][0]
    assert (row["label"] == 0) == row["text"].endswith("good")
    assert load({"all": path}).fingerprint != task.fingerprint  # the label order is part of the data's identity


def test_save_to_disk_dataset_dict_gives_its_splits(tmp_path: Path) -> None:
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["no", "yes"])}
    )

    def part(start: int, count: int) -> datasets.Dataset:
        rows = range(start, start + count)
        return datasets.Dataset.from_dict(
            {"sentence": [f"s{i}" for i in rows], "label": [i % 2 for i in rows]}, features
        )

    folder = tmp_path / "corpus"
    datasets.DatasetDict(
        {"train": part(0, 50), "dev": part(50, 6), "test": part(60, 7), "extra": part(70, 2)}
    ).save_to_disk(str(folder))
    task = load({"all": folder}, text_columns=("sentence",))
    assert {split: len(task.splits[split]) for split in task.splits} == {"train": 50, "validation": 6, "test": 7}
    assert task.label_names == ("no", "yes") and task.splits["validation"][0] == {"sentence": "s50", "label": 0}
    from_split_key = load({"train": folder, "test": folder}, text_columns=("sentence",))  # each key takes its split
    assert len(from_split_key.splits["test"]) == 7 and "train / validation: 90/10 %" in from_split_key.notes["split"]

    unlabelled = tmp_path / "unlabelled"
    test_split = datasets.Dataset.from_dict({"sentence": ["s1", "s2"], "label": [0, -1]}, features)
    datasets.DatasetDict({"train": part(0, 50), "test": test_split}).save_to_disk(str(unlabelled))
    with pytest.raises(DataFileError) as error:
        load({"all": unlabelled}, text_columns=("sentence",))
    assert message(error).endswith(
        "unlabelled [test], row 2, column 'label': label id -1 is not a class of its ClassLabel (-1: unlabelled)"
    )

    single = tmp_path / "single"
    part(0, 100).save_to_disk(str(single))
    assert sum(len(split) for split in load({"all": single}, text_columns=("sentence",)).splits.values()) == 100


def test_ood_files_are_split_into_dev_and_test_halves(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "data.csv", reviews(100))
    ood_rows = [{"text": f"tweet {i}", "label": "pos" if i % 3 else "neg"} for i in range(200)]
    spec = DataSpec(files={"all": str(train)}, ood={"tweets": str(write_jsonl(tmp_path / "tweets.jsonl", ood_rows))})
    task = load_data(spec, progress=False)
    dev, test = set(task.ood_dev["tweets"]["text"]), set(task.ood["tweets"]["text"])
    assert dev | test == {row["text"] for row in ood_rows} and not dev & test and 0.3 < len(dev) / 200 < 0.7
    assert set(task.evaluation_sets()) == {"validation", "test", "ood-dev/tweets", "ood/tweets"}
    assert task.ood_fingerprints["tweets"] != task.ood_dev_fingerprints["tweets"]
    capped = load_data(spec, ood_limit=50, progress=False)
    assert len(capped.ood["tweets"]) + len(capped.ood_dev["tweets"]) == 50


def test_fingerprint_follows_the_rows_not_the_path(tmp_path: Path) -> None:
    rows = reviews(100)
    ood = reviews(30, 500)

    def task_of(folder: str, rows: list[tuple[str, str]], ood: list[tuple[str, str]] = ood):
        spec = DataSpec(
            files={"all": str(write_csv(tmp_path / folder / "data.csv", rows))},
            ood={"more": str(write_csv(tmp_path / folder / "more.csv", ood))},
        )
        return load_data(spec, progress=False)

    first, moved = task_of("one", rows), task_of("two", rows)
    assert moved.fingerprint == first.fingerprint and moved.ood_fingerprints == first.ood_fingerprints
    assert moved.ood_dev_fingerprints == first.ood_dev_fingerprints
    changed_text = task_of("three", [("a changed review", "neg"), *rows[1:]])

    def rename(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(text, "positive" if label == "pos" else label) for text, label in rows]

    renamed_label = task_of("four", rename(rows), rename(ood))  # the same label order, other names
    assert changed_text.fingerprint != first.fingerprint and renamed_label.fingerprint != first.fingerprint
    assert changed_text.ood_fingerprints == first.ood_fingerprints


def test_load_task_takes_user_data(tmp_path: Path) -> None:
    spec = DataSpec(files={"all": str(write_csv(tmp_path / "data.csv", reviews(100)))}, name="mine")
    task = load_task(spec, progress=False)
    assert task.name == "mine" and task.fingerprint == load_data(spec, progress=False).fingerprint


def test_tsv_keeps_quotes_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "quotes.tsv"
    lines = [
        "text\tlabel",
        '"quoted" start\tpos',
        'a "b\tneg',
        *(f"line {i}\t{['neg', 'pos'][i % 2]}" for i in range(60)),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = load({"all": path})
    assert {'"quoted" start', 'a "b'} <= set().union(*split_texts(task).values())


def test_hub_only_with_the_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(path: str, name: str | None = None, split: str | None = None) -> datasets.DatasetDict:
        calls.append((path, name, split))
        train = {"text": [f"hub text {i}" for i in range(80)], "label": [i % 2 for i in range(80)]}
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(train)})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = load({"all": "hub:someone/reviews:plain"})
    assert calls == [("someone/reviews", "plain", None)] and task.name == "reviews-plain"
    assert task.label_names == ("0", "1") and sum(len(split) for split in task.splits.values()) == 80
    with pytest.raises(DataFileError, match="no such file"):  # without the prefix it is a path, never the hub
        load({"all": "someone/reviews"})
    assert len(calls) == 1


def test_hub_failure_names_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataFileError, match=r"^hub:x/y: cannot load it from the Hugging Face hub \(offline\)"):
        load({"all": "hub:x/y"})


def test_data_spec_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from distilsearch.kdlib.data.user_data import DataSpec; DataSpec(files={'all': 'x.csv'}); "
        "print(sorted({'pandas', 'datasets', 'torch'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_data_spec_from_arguments() -> None:
    spec = data_spec_from_arguments(
        ["train=a.csv", "dev=b.jsonl", "test=hub:org/set:cfg"],
        ["tweets=t.csv"],
        ["premise", "hypothesis"],
        "gold",
        "nli",
    )
    assert spec.files == {"train": "a.csv", "validation": "b.jsonl", "test": "hub:org/set:cfg"}
    assert spec.ood == {"tweets": "t.csv"} and spec.text_columns == ("premise", "hypothesis")
    assert spec.label_column == "gold" and spec.task_name == "nli"
    default = data_spec_from_arguments(["data/Movie_Reviews.v2.csv"], [], None, None, None)
    assert default.files == {"all": "data/Movie_Reviews.v2.csv"} and default.text_columns == ("text",)
    assert default.label_column == "label" and default.task_name == "movie-reviews-v2"


@pytest.mark.parametrize(
    "data, ood, text_columns, expected",
    [
        (["tran=a.csv"], [], None, "bad data value 'tran=a.csv': the split before '=' must be one of all, train"),
        (["a.csv", "b.csv"], [], None, "bad data value 'b.csv': 'all' is given twice"),
        (["a.csv", "test=b.csv"], [], None, "bad data {'all': 'a.csv', 'test': 'b.csv'}: 'all' is split by hash"),
        (["test=b.csv"], [], None, "no training data: give 'all' or 'train'"),
        (["a.csv"], ["tweets"], None, "bad OOD value 'tweets': expected NAME=PATH"),
        (["a.csv"], [], ["a", "b", "c"], "bad text columns ('a', 'b', 'c')"),
    ],
)
def test_bad_arguments_are_data_file_errors(data: list, ood: list, text_columns: list | None, expected: str) -> None:
    with pytest.raises(DataFileError, match=re.escape(expected)):
        data_spec_from_arguments(data, ood, text_columns, None, None)


def test_data_spec_validates_its_fields() -> None:
    with pytest.raises(ValidationError, match="give it alone"):
        DataSpec(files={"all": "a.csv", "train": "b.csv"})
    with pytest.raises(ValidationError, match="is also a text column"):
        DataSpec(files={"all": "a.csv"}, label_column="text")
    with pytest.raises(ValidationError, match="extra"):
        DataSpec(files={"all": "a.csv"}, labels=("a", "b"))
    with pytest.raises(ValidationError, match="cache folders"):
        DataSpec(files={"all": "a.csv"}, name="../escape")


# --- errors: each names the file and, where there is one, the line or row and the column ---


def test_missing_path_and_unknown_file_type(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"nope\.csv: no such file or folder$"):
        load({"all": tmp_path / "nope.csv"})
    sheet = tmp_path / "data.xlsx"
    sheet.write_bytes(b"PK")
    with pytest.raises(DataFileError) as error:
        load({"all": sheet})
    assert re.search(r"data\.xlsx: unsupported file type '\.xlsx'; supported: \.csv \(CSV\), \.tsv", message(error))
    assert ".parquet (Parquet), a datasets save_to_disk folder, or hub:<dataset>[:<config>]" in message(error)
    with pytest.raises(DataFileError, match="a folder that datasets' save_to_disk did not write"):
        load({"all": tmp_path})


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine,pos\ncaf\xe9 au lait,neg\n".encode("latin-1"))
    with pytest.raises(DataFileError) as error:
        load({"all": path})
    assert message(error).endswith(
        "latin1.csv, line 3: not UTF-8 (byte 0xe9 at byte 4 of the line); save the file as UTF-8"
    )


def test_jsonl_lines_that_are_not_objects(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n[1, 2]\n')
    with pytest.raises(DataFileError, match=r"data\.jsonl, line 3: not a JSON object \(JSON Lines: one \{\.\.\.\}"):
        load({"all": path})
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", label: 1}\n')
    with pytest.raises(DataFileError, match=r"data\.jsonl, line 2: not valid JSON \(Expecting property name"):
        load({"all": path})
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": 1.5}\n')
    with pytest.raises(DataFileError, match=r"data\.jsonl, line 2, column 'label': 1\.5 is not text or an integer"):
        load({"all": path})


def test_no_rows_and_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"empty\.csv: no rows$"):
        load({"all": write_csv(tmp_path / "empty.csv", [])})
    path = write_csv(tmp_path / "data.csv", reviews(10), header=("review", "sentiment"))
    with pytest.raises(DataFileError) as error:
        load({"all": path}, text_columns=("review",))
    assert message(error).endswith("data.csv: no label column 'label' (its columns: review, sentiment)")
    with pytest.raises(DataFileError, match=r"data\.csv: no text column 'text' \(its columns: review, sentiment\)"):
        load({"all": path}, label_column="sentiment")


def test_empty_cells_name_the_line_an_editor_shows(tmp_path: Path) -> None:
    # the header is line 1; a quoted text over two lines takes lines 2-3; a blank line 4; the empty label is on line 5
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"two\nlines",pos\n\nno label here,\n', encoding="utf-8")
    with pytest.raises(DataFileError) as error:
        load({"all": path})
    assert message(error).endswith("data.csv, line 5, column 'label': empty label")
    path.write_text("text,label\n  ,pos\n")
    with pytest.raises(DataFileError, match=r"data\.csv, line 2, column 'text': empty text$"):
        load({"all": path})
    path.write_text("text,label\na,pos\nb,neg,extra\n")
    with pytest.raises(DataFileError, match=r"data\.csv, line 3: 3 fields, but the header has 2 \(quote a text"):
        load({"all": path})
    frame = pd.DataFrame({"text": ["a", None, "c"], "label": ["x", "y", "x"]})
    frame.to_parquet(tmp_path / "data.parquet")
    with pytest.raises(DataFileError, match=r"data\.parquet, row 2, column 'text': empty text$"):
        load({"all": tmp_path / "data.parquet"})


def test_labels_outside_train(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", reviews(100))
    test_path = write_csv(tmp_path / "test.csv", [("fine", "pos"), ("meh", "neutral")])
    with pytest.raises(DataFileError) as error:
        load({"train": train, "test": test_path})
    assert message(error).endswith(
        "test.csv, line 3, column 'label': label 'neutral' does not occur in train (train labels: neg, pos)"
    )
    ood = write_jsonl(tmp_path / "ood.jsonl", [{"text": "x", "label": "pos"}, {"text": "y", "label": "other"}])
    with pytest.raises(DataFileError, match=r"ood\.jsonl, line 2, column 'label': label 'other' does not occur in"):
        load_data(DataSpec(files={"all": str(train)}, ood={"o": str(ood)}), progress=False)
    with pytest.raises(
        DataFileError, match=r"train\.csv, line 2, column 'label': label 'neg' is not one of the given "
    ):
        load({"all": train}, label_names=("pos", "positive"))


def test_too_few_labels_or_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", [(f"text {i}", "pos") for i in range(100)])
    with pytest.raises(DataFileError, match=r"one\.csv: train has 1 label \(pos\); a classifier needs at least 2"):
        load({"all": path})
    tiny = write_csv(tmp_path / "tiny.csv", reviews(3))
    with pytest.raises(DataFileError, match=r"tiny\.csv: 3 distinct rows are too few for a hash split: \w+ is empty"):
        load({"all": tiny})
