"""Bring your own teacher and data: `teacher`, `distill`, `search` and `export` with --teacher and --data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_bert, build_tiny_electra, build_tiny_roberta
from typer.testing import CliRunner

from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.search.cli.main import app
from distilsearch.search.run import Run
from distilsearch.search.run_config import SearchConfig

runner = CliRunner()
POSITIVE = ("a great film", "an absolute delight", "funny warm and wonderfully made", "the best movie of the year")
NEGATIVE = ("the plot is dull", "boring predictable and far too long", "a mess of a script", "no heart at all")


def write_reviews(path: Path) -> Path:
    """A user's CSV of labelled reviews (column names of their own)."""
    lines = ["review,sentiment"]
    lines += [f'"{POSITIVE[i % 4]}, take {i}",pos' for i in range(60)]
    lines += [f'"{NEGATIVE[i % 4]}, take {i}",neg' for i in range(60)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def own_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """A user's fine-tuned teacher folder: the tiny BERT fine-tuned on the reviews (outside any run), copied out."""
    from distilsearch.kdlib.data.tasks import load_task
    from distilsearch.kdlib.training.recipe import FineTuneRecipe
    from distilsearch.kdlib.training.teacher import get_teacher

    folder = tmp_path_factory.mktemp("own")
    data = DataSpec(
        files={"all": str(write_reviews(folder / "reviews.csv"))}, text_columns=("review",), label_column="sentiment"
    )
    recipe = FineTuneRecipe(epochs=2, batch_size=16, max_length=16, learning_rate=3e-3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILSEARCH_HOME", str(folder / "home"))
        tuned = get_teacher(load_task(data, progress=False), recipe, base_dir=tiny_bert_dir, progress=False)
    return Path(shutil.copytree(tuned.path, folder / "my_teacher"))


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    return write_reviews(tmp_path / "reviews.csv")


def data_flags(reviews: Path) -> list[str]:
    return ["--data", str(reviews), "--text-column", "review", "--label-column", "sentiment"]


def test_teacher_scores_the_users_teacher_on_the_users_data(own_teacher: Path, reviews: Path) -> None:
    result = runner.invoke(app, ["teacher", "--teacher", str(own_teacher), *data_flags(reviews), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["task"] == "reviews" and summary["path"] == str(own_teacher)
    assert {"validation", "test"} <= set(summary["scores"]) and summary["train_seconds"] is None
    arguments = ["teacher", "--teacher", str(own_teacher), *data_flags(reviews), "--json"]
    again = json.loads(runner.invoke(app, arguments).stdout)
    assert again["from_cache"] and again["key"] == summary["key"]


def test_distill_cuts_a_student_from_the_users_teacher(own_teacher: Path, reviews: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "student"
    arguments = ["distill", "--teacher", str(own_teacher), *data_flags(reviews), "--num-layers", "1"]
    result = runner.invoke(app, [*arguments, "--max-steps", "3", "--device", "cpu", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 1 and student.config.id2label == {0: "neg", 1: "pos"}


@pytest.mark.parametrize("build", [build_tiny_roberta, build_tiny_electra], ids=["roberta", "electra"])
def test_distill_from_a_roberta_or_electra_teacher_on_user_data(build, reviews: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    labels = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}
    folder = build(tmp_path / "teacher", **labels)
    out = tmp_path / "student"
    arguments = ["distill", "--teacher", str(folder), *data_flags(reviews), "--num-layers", "2", "--hidden-size", "16"]
    result = runner.invoke(app, [*arguments, "--max-steps", "3", "--device", "cpu", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    student = AutoModelForSequenceClassification.from_pretrained(out)
    teacher = AutoModelForSequenceClassification.from_pretrained(folder)
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 2
    assert json.loads(result.stdout)["status"] == "ok"


def search_arguments(own_teacher: Path, reviews: Path, run: Path) -> list[str]:
    return [
        "search",
        "--teacher",
        str(own_teacher),
        *data_flags(reviews),
        "--backend",
        "live",
        "--agent",
        "random",
        "--budget",
        "2",
        "--fidelity",
        "low",
        "--out",
        str(run),
    ]


def test_a_live_search_goes_from_files_to_a_frontier_and_resumes(
    own_teacher: Path, reviews: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, search_arguments(own_teacher, reviews, run))
    assert result.exit_code == 0, result.output
    assert (run / "frontier.csv").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"] == "reviews" and saved["teacher"] == str(own_teacher)
    assert saved["data"]["files"] == {"all": str(reviews)} and saved["data"]["text_columns"] == ["review"]
    opened = Run.open(run)
    expected = DataSpec(files={"all": str(reviews)}, text_columns=("review",), label_column="sentiment")
    assert opened.config.data == expected
    assert len(opened.ledger()) == 2 and all(result.status == "ok" for result in opened.results())
    again = runner.invoke(app, search_arguments(own_teacher, reviews, run))
    assert again.exit_code == 0, again.output
    assert len(Run.open(run).ledger()) == 2, "a resume with the same command evaluates nothing again"

    moved = tmp_path / "moved_teacher"
    shutil.copytree(own_teacher, moved)
    exported = runner.invoke(app, ["export", str(run), "--teacher", str(moved), "--out", str(tmp_path / "s"), "--json"])
    assert exported.exit_code == 0, exported.output
    labels = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}
    other = build_tiny_bert(tmp_path / "other_teacher", seed=5, **labels)
    refused = runner.invoke(app, ["export", str(run), "--teacher", str(other), "--out", str(tmp_path / "t")])
    assert refused.exit_code == 2 and "is not the teacher this run distilled from" in refused.output


def test_search_config_takes_its_task_name_from_the_data(reviews: Path) -> None:
    data = DataSpec(files={"all": str(reviews)}, text_columns=("review",), label_column="sentiment")
    assert SearchConfig(data=data).task == "reviews"
    assert SearchConfig(data=data).run_dir().name.startswith("reviews-")
    with pytest.raises(ValueError, match="task='rt-polarity' and the data's task name 'reviews' differ"):
        SearchConfig(data=data, task="rt-polarity")
    with pytest.raises(ValueError, match="not both"):
        SearchConfig(data=data, teacher=Path("a"), base=Path("b"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "rt-polarity"], "give --task ('rt-polarity') or --data, not both"),
        (["--label-column", "stars"], "stars"),
        (["--text-column", "body"], "body"),
    ],
)
def test_bad_data_flags_are_one_line_errors(own_teacher: Path, reviews: Path, extra: list[str], message: str) -> None:
    arguments = ["teacher", "--teacher", str(own_teacher), "--data", str(reviews)]
    if "--label-column" not in extra:
        arguments += ["--label-column", "sentiment"]
    if "--text-column" not in extra:
        arguments += ["--text-column", "review"]
    result = runner.invoke(app, [*arguments, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_data_flags_without_data_are_refused() -> None:
    result = runner.invoke(app, ["teacher", "--ood", "tweets=t.csv"])
    assert result.exit_code == 2 and "--ood describe(s) --data" in result.output


def test_a_teacher_whose_labels_differ_from_the_data_names_both(tmp_path: Path, reviews: Path) -> None:
    folder = build_tiny_bert(tmp_path / "animals", id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    result = runner.invoke(app, ["teacher", "--teacher", str(folder), *data_flags(reviews)])
    assert result.exit_code == 2
    assert "labels (cat, dog) do not match task 'reviews' labels (neg, pos)" in " ".join(result.output.split())


def test_a_missing_teacher_folder_is_an_error_before_any_work(tmp_path: Path, reviews: Path) -> None:
    result = runner.invoke(app, ["distill", "--teacher", str(tmp_path / "nope"), *data_flags(reviews)])
    assert result.exit_code == 2 and "does not exist" in result.output
