"""`distilsearch distill` on the tiny teacher and the toy task."""

import json
from pathlib import Path

from typer.testing import CliRunner

from distilsearch.search.cli.main import app

runner = CliRunner()


def base_arguments(toy_task: str, tiny_bert_dir: Path) -> list[str]:
    return ["distill", "--task", toy_task, "--base", str(tiny_bert_dir), "--device", "cpu"]


def test_distill_flags_reach_the_candidate(toy_task: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    arguments = [
        *base_arguments(toy_task, tiny_bert_dir),
        "--num-layers",
        "2",
        "--hidden-size",
        "16",
        "--num-heads",
        "2",
        "--ffn-size",
        "32",
        "--layer-selection",
        "alternate",
        "--trim-vocab",
        "--alpha",
        "0.7",
        "--temperature-schedule",
        "adaptive",
        "--max-steps",
        "4",
        "--max-length",
        "16",
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "student"),
        "--json",
    ]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    spec, kd = record["candidate"]["spec"], record["candidate"]["kd"]
    assert (spec["num_layers"], spec["hidden_size"], spec["num_heads"], spec["ffn_size"]) == (2, 16, 2, 32)
    assert spec["layer_selection"] == "alternate" and spec["trim_vocab"] is True
    assert kd["alpha"] == 0.7 and kd["temperature_schedule"] == "adaptive" and kd["max_steps"] == 4
    assert record["status"] == "ok" and (tmp_path / "student" / "distilsearch.json").is_file()


def test_config_file_with_flag_override(toy_task: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "student.yaml"
    config.write_text(
        "spec:\n  num_layers: 1\n  hidden_size: 16\n  num_heads: 2\n  ffn_size: 16\n"
        "kd:\n  max_steps: 3\n  max_length: 16\n  alpha: 0.2\n"
    )
    result = runner.invoke(app, [*base_arguments(toy_task, tiny_bert_dir), "--config", str(config), "--alpha", "0.9"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "latency 1x64" in result.output


def test_invalid_values_name_the_field_before_any_training(toy_task: str, tiny_bert_dir: Path) -> None:
    result = runner.invoke(app, [*base_arguments(toy_task, tiny_bert_dir), "--alpha", "7"])
    assert result.exit_code == 2 and "alpha" in result.output
    result = runner.invoke(app, [*base_arguments(toy_task, tiny_bert_dir), "--num-layers", "9"])
    assert result.exit_code == 2 and "num_layers=9" in result.output
    result = runner.invoke(app, [*base_arguments(toy_task, tiny_bert_dir), "--attention-loss", "hinge"])
    assert result.exit_code == 2 and "attention_loss" in result.output


def test_bad_config_file_is_a_clear_error(toy_task: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("students:\n  - 1\n")
    result = runner.invoke(app, [*base_arguments(toy_task, tiny_bert_dir), "--config", str(config)])
    assert result.exit_code == 2 and "spec, kd and task" in result.output
