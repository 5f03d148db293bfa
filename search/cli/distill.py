"""``distilsearch distill``: distil one student with flags for every StudentSpec / KDConfig field (or a config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.search.cli.console import JsonFlag, console, fail
from distilsearch.search.cli.data_options import TeacherOption, checked_task_source, data_flags, data_spec
from distilsearch.search.cli.options import collect_model_values, model_flags
from distilsearch.search.destinations import DestinationError, check_folder_destination


def read_config_file(path: Path) -> dict[str, dict[str, Any]]:
    """A YAML or JSON file with optional ``spec`` and ``kd`` mappings (and an optional ``task``)."""
    try:
        with path.open(encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        fail(f"cannot read config file {path}: {error}")
    if not isinstance(loaded, dict):
        fail(f"config file {path} must be a mapping with keys spec, kd and task; got a {type(loaded).__name__}")
    unknown = sorted(str(key) for key in set(loaded) - {"spec", "kd", "task"})
    if unknown:
        fail(f"config file {path} must be a mapping with keys spec, kd and task; got also {', '.join(unknown)}")
    for key in ("spec", "kd"):
        if not isinstance(loaded.get(key, {}), dict):
            fail(f"config file {path}: {key} must be a mapping of field: value, got {loaded[key]!r}")
    if not isinstance(loaded.get("task", ""), str):
        fail(f"config file {path}: task must be a task name, got {loaded['task']!r}")
    return loaded


def build_candidate(teacher_config: Any, spec_values: dict[str, Any], kd_values: dict[str, Any]) -> Candidate:
    """The candidate from given values; unspecified sizes keep the teacher's (an identity cut)."""
    spec = StudentSpec.identity(teacher_config, **spec_values)
    return Candidate(spec=spec, kd=KDConfig(**kd_values))


def result_table(result: EvalResult) -> Table:
    """Student metrics beside the teacher's: accuracy and retention, OOD, latency and speed-ups, size."""
    table = Table("metric", "student", "teacher", "ratio", title=f"student {result.candidate.content_hash()}")
    table.add_row(
        "test accuracy", f"{result.accuracy:.4f}", f"{result.teacher_accuracy:.4f}", f"{result.retention:.1%}"
    )
    table.add_row(
        "validation accuracy",
        f"{result.validation_accuracy:.4f}",
        f"{result.teacher_validation_accuracy:.4f}",
        f"{result.validation_retention:.1%}",
    )
    for label, student, teachers in (
        ("OOD test", result.ood_accuracy, result.teacher_ood_accuracy),
        ("OOD dev", result.ood_dev_accuracy, result.teacher_ood_dev_accuracy),
    ):
        for name, value in student.items():
            teacher = teachers[name]
            ratio = f"{value / teacher:.1%}" if teacher else "-"
            table.add_row(f"{label} {name}", f"{value:.4f}", f"{teacher:.4f}", ratio)
    if result.majority_validation_accuracy is not None:
        table.add_row("majority-label rate (validation)", f"{result.majority_validation_accuracy:.4f}", "", "")
    if result.learning_curve:
        curve = ", ".join(f"{point.step}: {point.validation_accuracy:.3f}" for point in result.learning_curve)
        table.add_row("validation curve (step: accuracy)", curve, "", "")
    for point in result.latency:
        table.add_row(
            f"latency {point.batch}x{point.seq_len} (ms)",
            f"{point.median_ms:.2f} [{point.p10_ms:.2f}-{point.p90_ms:.2f}]",
            f"{point.teacher_median_ms:.2f}",
            f"{point.speedup:.2f}x (FLOPs {point.theoretical_speedup:.2f}x)",
        )
    table.add_row(
        "parameters", f"{result.params_total / 1e6:.2f}M", "", f"non-embedding {result.params_non_embedding / 1e6:.2f}M"
    )
    table.add_row("size", f"{result.size_bytes / 1e6:.2f} MB", "", "")
    table.add_row("training", f"{result.train_seconds:.0f} s, {result.train_steps} steps", "", "")
    return table


@data_flags
@model_flags((StudentSpec, "Student"), (KDConfig, "Distillation"))
def distill(
    task: Annotated[
        str | None, typer.Option(help="Task name (default rt-polarity, or the config file's task).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="YAML/JSON file with 'spec' and 'kd' mappings; flags override it."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Save the student here (Hugging Face folder + distilsearch.json).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an --out folder that exists and is not empty.")
    ] = False,
    json_output: JsonFlag = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    base: Annotated[
        Path | None, typer.Option(help="Local base model folder for the teacher (default: MiniLM).")
    ] = None,
    teacher_dir: TeacherOption = None,
    **values: Any,
) -> None:
    """Distil one student from the task's teacher and print its metrics beside the teacher's.

    Every StudentSpec and KDConfig field has a flag; student sizes not given keep the teacher's.
    """
    from distilsearch.kdlib.data.assets import AssetError
    from distilsearch.kdlib.student_evaluator import StudentEvaluator
    from distilsearch.kdlib.training.teacher import resolve_base_dir
    from distilsearch.kdlib.training.teacher_folder import (
        check_teacher_folder,
        load_task_for_teacher,
        teacher_config,
        teacher_for,
    )

    if out is not None:
        try:
            check_folder_destination(out, force=force)
        except DestinationError as error:
            fail(str(error))
    file_values = read_config_file(config) if config else {}
    source = checked_task_source(task or file_values.get("task"), data_spec(values))
    spec_values = file_values.get("spec", {}) | collect_model_values(StudentSpec, values)
    kd_values = file_values.get("kd", {}) | collect_model_values(KDConfig, values)
    progress = not json_output
    try:
        if teacher_dir is not None:
            shape = teacher_config(check_teacher_folder(teacher_dir))
        else:
            from transformers import AutoConfig

            shape = AutoConfig.from_pretrained(resolve_base_dir(base, progress=progress), local_files_only=True)
        candidate = build_candidate(shape, spec_values, kd_values)
        candidate.spec.validate_against(shape)
        loaded = load_task_for_teacher(source, teacher_dir, progress=progress)
        teacher = teacher_for(loaded, folder=teacher_dir, base_dir=base, device=device, progress=progress)
        evaluator = StudentEvaluator(teacher, loaded, device=device, progress=progress)
    except (AssetError, OSError, ValueError) as error:
        fail(str(error))
    result = evaluator.evaluate(candidate, out_dir=out)
    if json_output:
        print(result.model_dump_json(indent=2))
    elif result.status == "ok":
        console.print(result_table(result))
        if result.student_path:
            console.print(f"student saved to {result.student_path}", highlight=False)
    else:
        console.print(f"[bold red]{result.status}:[/] {result.error}", highlight=False)
    if result.status != "ok":
        raise typer.Exit(code=1)
