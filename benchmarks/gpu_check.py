"""Is the GPU path ready? Precision of training and of latency measurement, KD step time against the CPU, and a
short live search that reserves a GPU per evaluation on Ray.

1. Precision: a student is cut from the default rt-polarity teacher and distilled for a few steps on ``--device``
   while a forward hook on its first linear layer records whether autocast was on and the dtype it produced; then
   its latency is measured the same way. On a CUDA GPU with bf16, training must run under bf16 autocast and latency
   in fp32; on the CPU (``--device cpu``, a dry run of this script) both run in fp32.
2. KD step time: per-step time of logit KD with cached teacher logits, measured differentially
   ((t(2N) - t(N)) / N), on ``--device`` and on the CPU, and their ratio.
3. With ``--search`` (CUDA only): ``distilsearch search --gpus-per-eval 1`` for a budget of 2 low-fidelity
   evaluations into a temporary run folder; every stored result must be ``ok`` and name a CUDA device.

Exits 1 when a check fails, 2 when ``--device cuda`` is asked for on a machine without CUDA.

    .venv/bin/python -m benchmarks.gpu_check [--device cuda] [--steps 20] [--search]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.common import (
    RESULTS,
    TIMING_STUDENT,
    TIMING_STUDENT_LABEL,
    command_line,
    default_evaluator,
    distil_from,
    environment_line,
    markdown_table,
)
from distilsearch.envs.store import EvaluationStore
from distilsearch.kdlib.measure.latency import LatencyProtocol, measure_latency
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.specs import KDConfig

BATCH, MAX_LENGTH = 32, 64
PROBE_LATENCY = LatencyProtocol(points=((1, 64),), warmup=1, repeats=3, num_threads=1)


@contextmanager
def precision_probe(model: torch.nn.Module, device: torch.device) -> Iterator[list[tuple[bool, torch.dtype]]]:
    """Record (autocast on, output dtype) at every call of the model's first linear layer."""
    seen: list[tuple[bool, torch.dtype]] = []
    layer = next(module for module in model.modules() if isinstance(module, torch.nn.Linear))
    handle = layer.register_forward_hook(
        lambda _module, _inputs, output: seen.append((torch.is_autocast_enabled(device.type), output.dtype))
    )
    try:
        yield seen
    finally:
        handle.remove()


def logit_kd(evaluator, student, train, validation, logits, steps: int, device: torch.device) -> None:
    """``steps`` logit-KD steps of ``student`` (trained in place) on ``device`` with cached teacher logits."""
    config = KDConfig(alpha=0.5, temperature=2.0, max_steps=steps, batch_size=BATCH, max_length=MAX_LENGTH)
    outcome = distil_from(evaluator, student, train, validation, config, logits, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if outcome.status != "ok":
        raise SystemExit(f"distillation on {device} failed: {outcome.error}")


def kd_seconds(evaluator, student, train, validation, logits, steps: int, device: torch.device) -> float:
    """Wall seconds of ``steps`` logit-KD steps of a copy of ``student`` on ``device``."""
    started = time.perf_counter()
    logit_kd(evaluator, copy.deepcopy(student), train, validation, logits, steps, device)
    return time.perf_counter() - started


def per_step_ms(run, steps: int) -> float:
    """Differential per-step milliseconds: (t(2N) - t(N)) / N, which cancels set-up and the final validation."""
    return (run(2 * steps) - run(steps)) / steps * 1000


def check_precision(evaluator, student, train, validation, logits, device: torch.device) -> list[list[str]]:
    """Rows (phase, autocast, dtype, expected, verdict) for training and latency measurement on ``device``."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    trained = copy.deepcopy(student).to(device)
    with precision_probe(trained, device) as training:
        logit_kd(evaluator, trained, train, validation, logits, 2, device)
    with precision_probe(trained, device) as latency:
        measure_latency(trained.eval(), PROBE_LATENCY, trained.config.vocab_size, device)
    rows = []
    for phase, seen, expected in (
        ("training and validation", training, (True, torch.bfloat16) if bf16 else (False, torch.float32)),
        ("latency measurement", latency, (False, torch.float32)),
    ):
        found = sorted({(on, str(dtype)) for on, dtype in seen})
        verdict = "ok" if found == [(expected[0], str(expected[1]))] else "FAIL"
        rows.append([phase, str(found), f"autocast={expected[0]}, {expected[1]}", verdict])
    return rows


def live_search(out: Path) -> list[list[str]]:
    """A 2-evaluation search reserving one GPU per evaluation; rows (candidate, status, device)."""
    command = [
        str(Path(sys.executable).parent / "distilsearch"), "search", "--task", "rt-polarity", "--agent", "random",
        "--budget", "2", "--fidelity", "low", "--gpus-per-eval", "1", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    rows = []
    for result in (row.result for row in EvaluationStore(out / "store.sqlite").rows()):
        rows.append([result.candidate.summary(), result.status, json.dumps(result.provenance.get("device"))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (a GPU check) or cpu (a dry run of this script)")
    parser.add_argument("--steps", type=int, default=20, help="N: KD step time from N and 2N steps")
    parser.add_argument("--search", action="store_true", help="also run a short live search with --gpus-per-eval 1")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(2)
    evaluator = default_evaluator()
    sets = evaluator.tokenized(MAX_LENGTH)
    train, validation = sets["train"], sets["validation"].select(range(64))
    logits = evaluator.teacher_logits_for(train)
    torch.manual_seed(0)
    student = cut_student(evaluator.teacher_model.cpu(), TIMING_STUDENT)

    precision = check_precision(evaluator, student, train, validation, logits, device)
    cpu = torch.device("cpu")
    timing = {
        "cpu": per_step_ms(lambda n: kd_seconds(evaluator, student, train, validation, logits, n, cpu), args.steps)
    }
    if device.type != "cpu":
        timing[str(device)] = per_step_ms(
            lambda n: kd_seconds(evaluator, student, train, validation, logits, n, device), args.steps
        )
    sections = [
        "# GPU check",
        f"Command: `{command_line()}`.",
        environment_line(),
        f"Student: {TIMING_STUDENT_LABEL}; batch {BATCH}, length {MAX_LENGTH}.",
        "## Precision",
        markdown_table(["phase", "seen (autocast, dtype)", "expected", "verdict"], precision),
        "## Logit-KD step time (cached teacher logits)",
        markdown_table(
            ["device", "ms / step", "speed-up over the CPU"],
            [[name, f"{ms:.1f}", f"{timing['cpu'] / ms:.2f}x"] for name, ms in timing.items()],
        ),
    ]
    failed = any(row[-1] != "ok" for row in precision)
    if args.search:
        with tempfile.TemporaryDirectory() as folder:
            searched = live_search(Path(folder) / "run")
        sections += ["## Live search, --gpus-per-eval 1", markdown_table(["candidate", "status", "device"], searched)]
        failed |= any(row[1] != "ok" or "cuda" not in row[2] for row in searched) or not searched
    report = "\n\n".join(sections) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"gpu_check_{device.type}.md").write_text(report)
    print(report)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
