"""TOY TEST DATA shared by the table-evaluator and environment tests.

``toy_result`` is a made-up deterministic formula over a small search space (bigger students are more accurate and
slower, random init and ternary weights cost accuracy); it is not a measurement of anything.
"""

from __future__ import annotations

import math
from pathlib import Path

from distilsearch.envs.evaluators import write_table
from distilsearch.envs.space import Constraint, SearchSpace, TeacherShape
from distilsearch.kdlib.students.candidate import Candidate, CurvePoint, EvalResult, LatencyPoint

TOY_TEACHER = TeacherShape(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64)
TOY_SPACE = SearchSpace(
    TOY_TEACHER,
    {
        "num_layers": [1, 2, 3, 4, 5],
        "hidden_size": [16, 24, 32],
        "num_heads": [2, 3, 4],
        "ffn_size": [32, 64],
        "init": ["teacher", "random"],
        "weight_bits": [32, 2],
        "alpha": [0.5, 0.9],
    },
    {"max_steps": 100},
    [Constraint({"init": ["random"]}, {"weight_bits": [2]}, "ternary students need teacher init")],
)
TOY_TASK, TOY_TEACHER_KEY = "toy-task", "toy-teacher"
TEACHER_SIZE = 4 * (4 * 32**2 + 2 * 32 * 64)
TEACHER_MS = {(1, 64): 5.2, (32, 128): 104.0}


def toy_result(candidate: Candidate) -> EvalResult:
    """TOY TEST DATA (not a measurement): a deterministic made-up result for a candidate of TOY_SPACE."""
    spec = candidate.spec
    size = spec.num_layers * (4 * spec.hidden_size**2 + 2 * spec.hidden_size * spec.ffn_size)
    if spec.num_layers == 1 and spec.init == "random":
        return EvalResult(
            candidate=candidate, status="failed", error="toy divergence", train_steps=candidate.kd.max_steps
        )
    jitter = int(candidate.content_hash()[:4], 16) / 0xFFFF - 0.5
    accuracy = (
        0.85
        + 0.04 * math.log(size / TEACHER_SIZE)
        - 0.05 * (spec.init == "random")
        - 0.03 * (spec.weight_bits == 2)
        + 0.02 * (candidate.kd.alpha - 0.5)
        + 0.01 * jitter
    )
    latency = []
    for (batch, seq_len), teacher_ms in TEACHER_MS.items():
        ms = teacher_ms * (0.04 + 0.96 * size / TEACHER_SIZE) * (0.6 if spec.weight_bits == 2 else 1.0)
        latency.append(
            LatencyPoint(
                batch=batch,
                seq_len=seq_len,
                median_ms=ms,
                p10_ms=0.95 * ms,
                p90_ms=1.05 * ms,
                teacher_median_ms=teacher_ms,
                speedup=teacher_ms / ms,
                theoretical_speedup=TEACHER_SIZE / size,
            )
        )
    validation = accuracy - 0.01 + 0.01 * (int(candidate.content_hash()[4:8], 16) / 0xFFFF - 0.5)
    ood_dev = validation - 0.1 + 0.02 * (spec.num_heads == 4)
    steps = candidate.kd.max_steps or 100
    curve = [
        CurvePoint(
            step=step,
            validation_accuracy=0.5 + (validation - 0.5) * math.sqrt(step / steps),
            ood_dev_accuracy={"echo": 0.5 + (ood_dev - 0.5) * math.sqrt(step / steps)},
            train_seconds=0.01 * step,
        )
        for step in (*range(25, steps, 25), steps)
    ]
    return EvalResult(
        candidate=candidate,
        status="ok",
        accuracy=accuracy,
        validation_accuracy=validation,
        ood_accuracy={"echo": accuracy - 0.1 + 0.02 * (spec.num_heads == 4)},
        ood_dev_accuracy={"echo": ood_dev},
        teacher_accuracy=0.86,
        teacher_validation_accuracy=0.85,
        teacher_ood_accuracy={"echo": 0.78},
        teacher_ood_dev_accuracy={"echo": 0.77},
        learning_curve=curve,
        train_steps=steps,
        train_seconds=0.01 * steps,
        latency=latency,
        params_total=712 * spec.hidden_size + size,
        provenance={"toy": "test data"},
    )


def toy_results() -> list[EvalResult]:
    """TOY TEST DATA: one toy result per valid candidate of TOY_SPACE."""
    return [toy_result(TOY_SPACE.decode(choices)) for choices in TOY_SPACE.enumerate_valid()]


def write_toy_table(path: Path) -> Path:
    """TOY TEST DATA: the toy results as a benchmark table."""
    return write_table(toy_results(), path, task=TOY_TASK, teacher_key=TOY_TEACHER_KEY, fidelity="toy")
