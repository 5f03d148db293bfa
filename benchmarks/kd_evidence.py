"""Does KD help? The same student distilled (logit KD) vs. trained on labels only, same budget, several seeds.

Both arms run through the same distiller with the same optimiser, steps, batches and initialisation (cut from the
teacher); only ``alpha`` differs: 0.5 (half soft targets at temperature 2) vs. 0 (hard labels only, i.e. plain
fine-tuning). Writes ``results/kd_evidence.md``.

    .venv/bin/python -m benchmarks.kd_evidence [--seeds 0 1 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import RESULTS, command_line, default_evaluator, environment_line, markdown_table
from distilsearch.kdlib.measure.latency import LatencyProtocol
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

SPEC = StudentSpec(num_layers=2, hidden_size=192, num_heads=6, ffn_size=768)
ARMS = {"logit KD (alpha 0.5, T 2)": 0.5, "labels only (alpha 0)": 0.0}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=3.0)
    args = parser.parse_args()
    quick_latency = LatencyProtocol(points=((1, 64),), warmup=1, repeats=3, num_threads=1)
    evaluator = default_evaluator(progress=True, latency=quick_latency)
    accuracy: dict[str, list[float]] = {arm: [] for arm in ARMS}
    ood: dict[str, list[float]] = {arm: [] for arm in ARMS}
    per_seed = []
    for seed in args.seeds:
        for arm, alpha in ARMS.items():
            kd = KDConfig(alpha=alpha, temperature=2.0, epochs=args.epochs, lr=2e-4, max_length=64, seed=seed)
            result = evaluator.evaluate(Candidate(spec=SPEC, kd=kd))
            if result.status != "ok":
                raise SystemExit(f"{arm}, seed {seed}: {result.status}: {result.error}")
            accuracy[arm].append(result.accuracy)
            ood[arm].append(result.mean_ood_accuracy)
            per_seed.append([arm, str(seed), f"{result.accuracy:.4f}", f"{result.mean_ood_accuracy:.4f}"])
            print(per_seed[-1])
    teacher = evaluator.teacher_scores(64)
    rows = [[arm, summary(accuracy[arm]), summary(ood[arm])] for arm in ARMS]
    report = "\n\n".join(
        [
            "# KD vs. labels only, same student and budget",
            f"Command: `{command_line()}`.",
            environment_line(),
            f"Student: {SPEC.model_dump_json()}; {args.epochs:g} epochs, lr 2e-4, batch 32, max length 64; "
            f"seeds {args.seeds}. Teacher test accuracy {teacher['test']:.4f}.",
            "Mean ± sample standard deviation over seeds:",
            markdown_table(["arm", "test accuracy", "mean OOD accuracy"], rows),
            "Per seed:",
            markdown_table(["arm", "seed", "test accuracy", "mean OOD accuracy"], per_seed),
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kd_evidence.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
