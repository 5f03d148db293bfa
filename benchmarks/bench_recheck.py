"""Do KD-Bench's rows reproduce? Re-evaluate random rows of the shipped table live and compare with the seed noise.

Draws ``--rows`` candidates of the space (seeded) from the table, distils each again with the same evaluator the
build used, and compares validation, test and mean OOD-test accuracy with the stored row. The tolerance per metric is
the largest difference the table's own seed pairs show (the same candidate trained with seeds 0 and 1): a rerun of
the same seed must differ by no more than another seed does. Writes ``results/bench_recheck.md``.

    .venv/bin/python -m benchmarks.bench_recheck [--rows 5] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from benchmarks.common import RESULTS, command_line, environment_line, markdown_table
from distilsearch.envs.bench_space import BENCH_TASK
from distilsearch.envs.bench_table import BENCH_TABLE, BenchTable
from distilsearch.envs.live import LiveEvaluator
from distilsearch.kdlib.students.candidate import EvalResult
from distilsearch.search.bench_build import BENCH_FIDELITY

METRICS: dict[str, Callable[[EvalResult], float | None]] = {
    "validation": lambda r: r.validation_accuracy,
    "test": lambda r: r.accuracy,
    "mean OOD test": lambda r: r.mean_ood_accuracy,
}


def tolerances(table: BenchTable) -> dict[str, float]:
    """Per metric, the largest difference between two seeds of one candidate in the table."""
    pairs = [(a, b) for a, b in table.seed_pairs() if a.status == b.status == "ok"]
    if not pairs:
        raise SystemExit(f"{table.path} holds no seed pairs yet: the noise level is not measured")
    return {name: max(abs(read(a) - read(b)) for a, b in pairs) for name, read in METRICS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = BenchTable.load(BENCH_TABLE)
    tolerance = tolerances(table)
    stored = [row for row in table.in_space().values() if row.status == "ok"]
    picks = np.random.default_rng(args.seed).choice(len(stored), size=min(args.rows, len(stored)), replace=False)
    evaluator = LiveEvaluator(BENCH_TASK, fidelity=BENCH_FIDELITY, progress=True)
    if evaluator.teacher_key != table.evaluator.teacher_key:
        raise SystemExit(f"this machine's teacher {evaluator.teacher_key} is not the table's")
    rows, passed = [], 0
    for index in picks:
        row = stored[int(index)]
        again = evaluator.evaluate(row.candidate)
        within = all(
            abs(read(again) - read(row)) <= tolerance[name] + 1e-9
            for name, read in METRICS.items()
            if read(again) is not None and read(row) is not None
        )
        passed += within
        spec = row.candidate.spec
        cells = [
            f"L{spec.num_layers} H{spec.hidden_size} F{spec.ffn_size} w{spec.weight_bits} a{row.candidate.kd.alpha}"
        ]
        for read in METRICS.values():
            cells.append(f"{read(row):.4f} / {read(again):.4f}")
        rows.append([*cells, "yes" if within else "NO"])
    header = ["candidate", *(f"{name} (table / rerun)" for name in METRICS), "within noise"]
    limits = ", ".join(f"{name} {value:.4f}" for name, value in tolerance.items())
    report = "\n".join(
        [
            "# KD-Bench rows re-evaluated live",
            "",
            f"Command: `{command_line()}`.",
            "",
            environment_line(),
            "",
            f"{len(picks)} rows drawn with seed {args.seed} from the {len(stored)} ok rows of the space; "
            f"tolerance = the largest difference between seeds 0 and 1 of one candidate in the table ({limits}).",
            "",
            markdown_table(header, rows),
            "",
            f"{passed} of {len(picks)} within the seed noise.",
            "",
        ]
    )
    (RESULTS / "bench_recheck.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
