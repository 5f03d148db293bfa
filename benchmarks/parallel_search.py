"""Wall time of the same live search with 1 and with K evaluation workers.

Runs ``distilsearch search --agent random --budget B --fidelity low --seed S`` on rt-polarity once per worker count,
each into a fresh run folder (the teacher, the tokenized data and the teacher logits come from the shared cache, warm
after the first run; no evaluation is reused). Random search proposes the same candidates for any number of workers,
so the runs distil identical students and only the parallelism differs. One worker is the plain live evaluator in
the search process (torch on every core); K workers are a local Ray with K one-thread workers. Writes
``results/parallel_search.md``.

    .venv/bin/python -m benchmarks.parallel_search [--workers 1 2] [--budget 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, command_line, environment_line, markdown_table

CLI = Path(sys.executable).with_name("distilsearch")


def ledger(run_dir: Path) -> list[dict]:
    """The run's evaluations (the ledger without its header line)."""
    lines = (run_dir / "evaluations.jsonl").read_text(encoding="utf-8").splitlines()[1:]
    return [json.loads(line) for line in lines]


def search(run_dir: Path, workers: int, budget: int, seed: int) -> float:
    """Run one search; its wall time in seconds."""
    command = [str(CLI), "search", "--agent", "random", "--budget", str(budget), "--fidelity", "low"]
    command += ["--seed", str(seed), "--workers", str(workers), "--out", str(run_dir)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows, walls, students = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="distilsearch-parallel-") as scratch:
        for workers in args.workers:
            run_dir = Path(scratch) / f"workers-{workers}"
            walls[workers] = search(run_dir, workers, args.budget, args.seed)
            entries = ledger(run_dir)
            students[workers] = [json.dumps(entry["candidate"], sort_keys=True) for entry in entries]
            train = sum(entry["result"].get("train_seconds") or 0.0 for entry in entries)
            accuracy = [entry["result"].get("accuracy") for entry in entries]
            rows.append(
                [
                    str(workers),
                    f"{walls[workers]:.1f}",
                    f"{walls[args.workers[0]] / walls[workers]:.2f}",
                    f"{train:.1f}",
                    f"{train / max(len(entries), 1):.1f}",
                    ", ".join(f"{a:.3f}" if a is not None else "failed" for a in accuracy),
                ]
            )
            print(f"workers={workers}: {walls[workers]:.1f} s", flush=True)
    same = len({tuple(sorted(names)) for names in students.values()}) == 1
    report = [
        "# The same live search with 1 and more evaluation workers",
        "",
        f"`{command_line()}`",
        "",
        environment_line(),
        "",
        f"Random search, rt-polarity, budget {args.budget}, fidelity low, seed {args.seed}; wall time of the whole "
        "`distilsearch search` process (start-up, Ray and workers, the evaluations, the frontier and plots).",
        "",
        markdown_table(
            [
                "workers",
                "wall s",
                f"speed-up vs {args.workers[0]}",
                "sum of train s",
                "train s per student",
                "accuracies (ledger order)",
            ],
            rows,
        ),
        "",
        f"Same students in every run: {'yes' if same else 'NO'}. One worker runs torch on every core in the search "
        "process; K workers each run one thread in a Ray actor. Where the sum of training seconds exceeds the wall "
        "time, students trained side by side. On a machine whose cores one torch process already uses well, K "
        "one-thread workers gain little (each student trains more slowly at one thread); the gain comes with one "
        "device (GPU) or several cores per worker, e.g. `--ray-address auto --gpus-per-eval 1`.",
    ]
    (RESULTS / "parallel_search.md").write_text("\n".join(report) + "\n", encoding="utf-8")
    print("\n".join(report))


if __name__ == "__main__":
    main()
