"""How well does the search's orchestration scale over Ray workers? Evaluations per hour at 1, 2, 4 and 8 workers.

The real orchestration runs: a :class:`~distilsearch.envs.ray_evaluator.RayEvaluator` (local Ray on loopback, the
embedded rt-polarity teacher packed and sent to every worker, the driver writing the SQLite store), a
:class:`~distilsearch.search.budget.BudgetedEvaluator` with its fsynced ledger, and the random agent proposing one
batch per round. Only the workers' evaluation is replaced: each sleeps ``--sleep`` seconds and returns a fixed result
(:class:`SleepEvaluator`), so 8 workers overlap on a 2-core machine and what is measured is the orchestration itself.
Each run spends ``--rounds`` rounds of ``workers`` evaluations; efficiency is the throughput over ``workers`` times
the throughput of ideal sleeping (``1 / sleep`` per worker). The driver's overhead per evaluation is the wall time
beyond the ideal, split by where the driver spent it (the evaluator's own timings; the rest is the agent, the
ledger and the budget). Worker start-up (teacher unpacking) is timed apart and not counted.

    .venv/bin/python -m benchmarks.ray_scaling [--workers 1 2 4 8] [--sleep 5] [--rounds 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import RESULTS, command_line, environment_line, markdown_table
from distilsearch.envs.bench_space import bench_space
from distilsearch.envs.fidelity import Fidelity
from distilsearch.envs.ray_evaluator import RayEvaluator, WorkerSettings
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search.agents import make_agent
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator

REPO = Path(__file__).resolve().parent.parent


class SleepEvaluator:
    """A worker evaluator whose work is a fixed sleep: each candidate takes ``seconds`` and gets a fixed result."""

    def __init__(self, seconds: float, teacher_key: str) -> None:
        self.seconds, self.teacher_key = seconds, teacher_key
        self.distillations = 0
        self.reused = 0

    def evaluate(self, candidate: Candidate, fidelity: Fidelity | None = None) -> EvalResult:
        time.sleep(self.seconds)
        self.distillations += 1
        return EvalResult(
            candidate=candidate,
            status="ok",
            validation_accuracy=0.75,
            teacher_validation_accuracy=0.8,
            provenance={"teacher_key": self.teacher_key, "evaluator": "sleep", "seconds": self.seconds},
        )


@dataclass(frozen=True)
class Sleeping:
    """The ``worker_evaluator`` factory: a :class:`SleepEvaluator` of ``seconds`` in every worker."""

    seconds: float

    def __call__(self, settings: WorkerSettings, teacher: Teacher, task: TaskData, students: Path | None):
        return SleepEvaluator(self.seconds, teacher.key)


@dataclass(frozen=True)
class Measured:
    workers: int
    evaluations: int
    startup_s: float
    wall_s: float
    timings: dict[str, float]


def measure(workers: int, sleep: float, rounds: int, folder: Path) -> Measured:
    """One search of ``rounds * workers`` sleeping evaluations on ``workers`` workers."""
    started = time.perf_counter()
    pool = RayEvaluator(
        "rt-polarity",
        num_workers=workers,
        run_dir=folder,
        fidelity="low",
        device="cpu",
        worker_evaluator=Sleeping(sleep),
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        startup_timeout_s=600,
    )
    startup = time.perf_counter() - started
    try:
        budgeted = BudgetedEvaluator(pool, rounds * workers, history_path=folder / HISTORY_FILE)
        started = time.perf_counter()
        make_agent("random").run(budgeted, bench_space(), folder, seed=0)
        wall = time.perf_counter() - started
        if len(budgeted) != rounds * workers or pool.distillations != rounds * workers:
            raise SystemExit(f"{workers} workers: {len(budgeted)} evaluations, {pool.distillations} distilled")
        return Measured(workers, len(budgeted), startup, wall, dict(pool.timings))
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds of work per evaluation")
    parser.add_argument("--rounds", type=int, default=6, help="batches of `workers` evaluations per run")
    args = parser.parse_args()
    runs = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="kdscale-") as folder:
            run = measure(workers, args.sleep, args.rounds, Path(folder))
        runs.append(run)
        print(f"{workers} workers: {run.evaluations} evaluations in {run.wall_s:.1f} s", flush=True)
    rows, overheads = [], []
    for run in runs:
        ideal = args.rounds * args.sleep
        per_hour = run.evaluations / run.wall_s * 3600
        efficiency = per_hour / (run.workers * 3600 / args.sleep)
        driver = {name: seconds for name, seconds in run.timings.items() if name != "wait"}
        rest = run.wall_s - sum(run.timings.values())
        overhead_ms = (run.wall_s - ideal) / run.evaluations * 1000
        rows.append(
            [
                str(run.workers),
                str(run.evaluations),
                f"{run.startup_s:.1f}",
                f"{run.wall_s:.1f}",
                f"{per_hour:.0f}",
                f"{efficiency:.3f}",
                f"{overhead_ms:.0f}",
            ]
        )
        overheads.append(
            [str(run.workers)]
            + [f"{seconds / run.evaluations * 1000:.1f}" for seconds in driver.values()]
            + [f"{rest / run.evaluations * 1000:.1f}"]
        )
    names = [name for name in runs[0].timings if name != "wait"]
    eight = next((run for run in runs if run.workers == 8), None)
    verdict = ""
    if eight is not None:
        efficiency = eight.evaluations * args.sleep / (eight.workers * eight.wall_s)
        verdict = f"Efficiency at 8 workers: **{efficiency:.3f}** of linear (goal >= 0.9)."
    report = "\n\n".join(
        [
            "# Ray scaling of the search orchestration",
            f"Command: `{command_line()}` ({args.sleep:g} s of sleep per evaluation, {args.rounds} rounds per run; "
            "the machine was otherwise quiet).",
            environment_line(),
            markdown_table(
                [
                    "workers",
                    "evaluations",
                    "start-up s",
                    "search s",
                    "evaluations / hour",
                    "efficiency vs linear",
                    "overhead ms / evaluation",
                ],
                rows,
            ),
            verdict,
            "Where the driver's time goes, ms per evaluation (`rest`: the agent, the ledger and the budget, i.e. the "
            "search's time outside the evaluator):",
            markdown_table(["workers", *names, "rest"], overheads),
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_scaling.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
