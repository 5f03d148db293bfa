import json
from pathlib import Path

from typer.testing import CliRunner

from distilsearch.search.cli.main import app

runner = CliRunner()


def test_tasks_json_lists_registry() -> None:
    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0
    names = {row["task"] for row in json.loads(result.stdout)}
    assert {"rt-polarity", "snli", "bbc-news", "glue-sst2"} <= names


def test_unknown_task_is_a_clear_error() -> None:
    result = runner.invoke(app, ["teacher", "--task", "nope"])
    assert result.exit_code == 2
    assert "unknown task 'nope'" in result.output and "rt-polarity" in result.output


def test_teacher_json_then_cache(toy_task: str, tiny_bert_dir: Path) -> None:
    arguments = [
        "teacher",
        "--task",
        toy_task,
        "--base",
        str(tiny_bert_dir),
        "--epochs",
        "1",
        "--max-length",
        "16",
        "--device",
        "cpu",
        "--json",
    ]
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["from_cache"] is False
    assert set(summary["scores"]) == {"validation", "test", "ood-dev/echo", "ood/echo"}
    second = json.loads(runner.invoke(app, arguments).stdout)
    assert second["from_cache"] is True and second["path"] == summary["path"]


def test_teacher_table_output(toy_task: str, tiny_bert_dir: Path) -> None:
    result = runner.invoke(
        app, ["teacher", "--task", toy_task, "--base", str(tiny_bert_dir), "--max-length", "16", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "ood/echo" in result.output and "ood-dev/echo" in result.output and "majority baseline" in result.output


def test_bad_device_is_a_clear_error(toy_task: str, tiny_bert_dir: Path) -> None:
    result = runner.invoke(app, ["teacher", "--task", toy_task, "--base", str(tiny_bert_dir), "--device", "tpu"])
    assert result.exit_code == 2 and "device" in result.output and "tpu" in result.output


def test_assets_no_fetch_reports_missing_in_empty_cache() -> None:
    result = runner.invoke(app, ["assets", "--no-fetch", "--json"])
    rows = json.loads(result.stdout)
    assert {row["name"] for row in rows} >= {"minilm", "rotten-tomatoes", "tweets"}
    assert all(row["cached"] is False for row in rows)
    assert result.exit_code == 1
