"""Cost of one logit-KD training step with the teacher-logit cache, relative to plain fine-tuning, and of each
retention lever (transfer set, augmentations, a general stage on the general-en corpus).

The student (2 layers, hidden 192, 6 heads, FFN 768, cut from the rt-polarity teacher) is trained by
``kdlib.training.finetune.fine_tune`` (labels only) and by ``kdlib.training.distiller.distill`` (alpha 0.5, temperature
2) with cached teacher logits, and, for reference, with the teacher run online on every batch (no cache). Per-step time
is measured differentially, (t(2N steps) - t(N steps)) / N, which cancels set-up and the final validation pass; the
variants are interleaved and repeated, and the median per-step time of each is reported. Only ratios measured
in the same run are compared (the machine is shared and noisy).

    .venv/bin/python -m benchmarks.kd_overhead [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

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
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.specs import KDConfig
from distilsearch.kdlib.training.finetune import FineTuneRecipe, fine_tune

BATCH, MAX_LENGTH, LEARNING_RATE = 32, 64, 5e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="N: each variant runs N and 2N steps")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    evaluator = default_evaluator()
    sets = evaluator.tokenized(MAX_LENGTH)
    train, validation = sets["train"], sets["validation"].select(range(64))
    cached_logits = evaluator.teacher_logits_for(train)
    teacher = evaluator.teacher_model
    torch.manual_seed(0)
    student = cut_student(teacher, TIMING_STUDENT)
    device = evaluator.device

    def fine_tuning(steps: int) -> float:
        recipe = FineTuneRecipe(
            epochs=1,
            batch_size=BATCH,
            max_length=MAX_LENGTH,
            learning_rate=LEARNING_RATE,
            max_train_examples=steps * BATCH,
        )
        started = time.perf_counter()
        fine_tune(
            copy.deepcopy(student), train, validation, recipe, pad_id=evaluator.pad_id, device=device, progress=False
        )
        return time.perf_counter() - started

    def distilling(
        steps: int, logits: torch.Tensor | None, online: bool, general: bool = False, **settings: object
    ) -> float:
        """Seconds of ``steps`` KD steps (with ``general``: ``steps`` general-stage steps and one task step);
        ``settings`` are KDConfig overrides (a lever), and the data the lever needs is given."""
        budget = {"max_steps": steps + 1, "general_distillation_steps": steps} if general else {"max_steps": steps}
        base = {"alpha": 0.5, "temperature": 2.0, "batch_size": BATCH, "max_length": MAX_LENGTH, "lr": LEARNING_RATE}
        config = KDConfig(**(base | settings | budget))
        options = {
            "general_set": evaluator.general_set(config),
            "substitutions": evaluator.substitutions(config),
        }
        transfer = evaluator.transfer(config)
        if transfer is not None:
            options |= {"transfer_set": transfer[0], "transfer_logits": transfer[1]}
        started = time.perf_counter()
        outcome = distil_from(evaluator, copy.deepcopy(student), train, validation, config, logits, **options)
        assert outcome.status == "ok", outcome.error
        assert (outcome.teacher_forward_batches > 0) == online, outcome.teacher_forward_batches
        return time.perf_counter() - started

    variants = {
        "fine-tuning (labels only)": fine_tuning,
        "logit KD, cached teacher logits": lambda steps: distilling(steps, cached_logits, online=False),
        "logit KD, teacher run online": lambda steps: distilling(steps, None, online=True),
        "+ transfer set 25 % (its logits cached too)": lambda steps: distilling(
            steps, cached_logits, online=False, transfer_ratio=0.25
        ),
        "+ augmentation substitute (teacher online)": lambda steps: distilling(
            steps, cached_logits, online=True, augmentation="substitute"
        ),
        "+ augmentation mask (teacher online)": lambda steps: distilling(
            steps, cached_logits, online=True, augmentation="mask"
        ),
        "general stage on general-en (hidden + attention losses, teacher online)": lambda steps: distilling(
            steps, cached_logits, online=True, general=True, hidden_weight=1.0, attention_weight=1.0
        ),
    }
    per_step: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            per_step[name].append((run(2 * args.steps) - run(args.steps)) / args.steps)
    baseline = statistics.median(per_step["fine-tuning (labels only)"])
    rows = [
        [
            name,
            f"{statistics.median(times) * 1000:.1f}",
            f"{min(times) * 1000:.1f}-{max(times) * 1000:.1f}",
            f"{statistics.median(times) / baseline:.2f}",
        ]
        for name, times in per_step.items()
    ]
    table = markdown_table(["variant", "ms / step (median)", "range", "ratio to fine-tuning"], rows)
    ratio = statistics.median(per_step["logit KD, cached teacher logits"]) / baseline
    report = "\n\n".join(
        [
            "# KD overhead per training step",
            f"Command: `{command_line()}` (N = {args.steps}, {args.repeats} interleaved repeats).",
            environment_line(),
            f"Student: {TIMING_STUDENT_LABEL}; batch {BATCH}, max length {MAX_LENGTH} "
            "(dynamic padding, length-grouped batches); rt-polarity train set.",
            table,
            f"Cached logit KD / fine-tuning = **{ratio:.2f}** (target <= 1.2).",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kd_overhead.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
