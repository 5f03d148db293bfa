"""What the benchmarks share: the default teacher and task, the environment line and markdown output."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import datasets
import torch

from distilsearch.kdlib.core.versions import runtime_versions
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.distiller import DistillationOutcome, distill
from distilsearch.kdlib.training.teacher import get_teacher

RESULTS = Path(__file__).resolve().parent.parent / "results"
TIMING_STUDENT = StudentSpec(
    num_layers=2,
    hidden_size=192,
    num_heads=6,
    ffn_size=768,
    head_selection="position",
    ffn_selection="position",
    hidden_selection="position",
)
"""The student the step-time benchmarks cut from the teacher: cut by position, so no calibration batch is needed
(they measure time, not accuracy)."""
TIMING_STUDENT_LABEL = (
    f"{TIMING_STUDENT.num_layers} layers, hidden {TIMING_STUDENT.hidden_size}, {TIMING_STUDENT.num_heads} heads, "
    f"FFN {TIMING_STUDENT.ffn_size} (cut by position)"
)


def default_evaluator(task: str = "rt-polarity", progress: bool = False, **options: object) -> StudentEvaluator:
    """The default teacher of ``task`` (fine-tuned once, then cached) wrapped for candidate evaluation."""
    teacher = get_teacher(task, progress=progress)
    return StudentEvaluator(teacher, load_task(task, progress=False), progress=progress, **options)


def distil_from(
    evaluator: StudentEvaluator,
    student: torch.nn.Module,
    train: datasets.Dataset,
    validation: datasets.Dataset,
    config: KDConfig,
    logits: torch.Tensor | None,
    device: torch.device | None = None,
    **options: object,
) -> DistillationOutcome:
    """Distil ``student`` in place from ``evaluator``'s teacher on ``device`` (default: the evaluator's), with cached
    teacher ``logits`` or, when None, the teacher run online; ``options`` go to ``distill`` (e.g. ``general_set``,
    ``transfer_set``, ``substitutions``)."""
    device = evaluator.device if device is None else device
    return distill(
        evaluator.teacher_model.to(device),
        student.to(device),
        train,
        validation,
        config,
        teacher_logits=logits,
        pad_id=evaluator.pad_id,
        device=device,
        progress=False,
        **options,
    )


def environment_line() -> str:
    """One markdown line naming the machine and versions the numbers come from."""
    info = runtime_versions()
    return (
        f"Machine: {platform.machine()}, {info['cpu_count']} CPUs, torch {info['torch']} "
        f"({torch.get_num_threads()} threads), transformers {info['transformers']}, Python {info['python']}; "
        f"device {info['cuda_device'] or 'cpu'}."
    )


def command_line() -> str:
    """The command that produced the numbers, for the report."""
    return "python " + " ".join(sys.orig_argv[1:])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
