"""How well does a cheap checkpoint rank students? Learning curves of candidates from the default space.

Draws ``--candidates`` distinct candidates from the default search space under ``--min-speedup`` (FLOPs speed-up
at 1 x 64), distils each with the space's recipe for ``--steps`` steps (its whole schedule) and records its learning
curve (validation and OOD-dev accuracy at geometric checkpoints 25, 50, 100, ...). For every checkpoint the report
gives the Kendall tau between the checkpoint's validation accuracy and the final **test** accuracy (reporting only:
the test numbers are never used to choose anything), with the checkpoint's share of the final training cost. It also
breaks the final validation accuracy down by each searched choice: the evidence for the default space.

Every finished candidate is appended to ``results/fidelity_rank.jsonl`` (one EvalResult per line) at once, and a
rerun skips candidates already there: commit the file to keep partial results; the report is rebuilt from it.

    .venv/bin/python -m benchmarks.fidelity_rank [--candidates 20] [--min-speedup 3] [--steps 320] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from benchmarks.common import RESULTS, command_line, default_evaluator, environment_line, markdown_table
from distilsearch.envs.limits import Limits
from distilsearch.envs.space import DEFAULT_FIXED, SearchSpace
from distilsearch.kdlib.measure.scoring import labels_of
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.training.distiller import curve_checkpoints

ROWS = RESULTS / "fidelity_rank.jsonl"
REPORT = RESULTS / "fidelity_rank.md"
MAX_LENGTH = 64
MAJORITY_MARGIN = 0.005
QUIET = "nothing else ran on the machine."


def draw(space: SearchSpace, count: int, seed: int) -> list[Candidate]:
    """``count`` distinct candidates drawn uniformly (by :meth:`SearchSpace.sample`) with ``seed``."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, Candidate] = {}
    while len(chosen) < min(count, space.num_valid()):
        candidate = space.decode(space.sample(rng))
        chosen.setdefault(candidate.content_hash(), candidate)
    return list(chosen.values())


def load_rows(path: Path) -> dict[str, EvalResult]:
    """The results recorded so far, by candidate hash (a torn last line from a crash is ignored)."""
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            result = EvalResult.model_validate_json(line)
        except ValueError:
            continue
        rows[result.candidate.content_hash()] = result
    return rows


def append_row(path: Path, result: EvalResult) -> None:
    """Append one result as a JSON line and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(result.model_dump_json() + "\n")


def majority_rate(evaluator: StudentEvaluator) -> float:
    """Validation accuracy of always predicting the training set's most frequent label."""
    sets = evaluator.tokenized(MAX_LENGTH)
    train, validation = labels_of(sets["train"]).numpy(), labels_of(sets["validation"]).numpy()
    return float((validation == np.bincount(train).argmax()).mean())


def rank_table(results: list[EvalResult]) -> tuple[list[list[str]], float]:
    """Per checkpoint: Kendall tau (validation at the checkpoint vs final test), its cost share, and the mean
    checkpoint overhead of the curves (curve seconds / training seconds)."""
    ok = [r for r in results if r.status == "ok" and r.learning_curve]
    finals = np.array([r.accuracy for r in ok])
    final_validation = np.array([r.validation_accuracy for r in ok])
    steps = sorted({point.step for r in ok for point in r.learning_curve})
    rows = []
    for step in steps:
        values, shares, kept = [], [], []
        for index, result in enumerate(ok):
            point = next((p for p in result.learning_curve if p.step == step), None)
            if point is not None:
                values.append(point.validation_accuracy)
                shares.append(point.train_seconds / result.learning_curve[-1].train_seconds)
                kept.append(index)
        tau = kendalltau(values, finals[kept]).statistic if len(kept) > 2 else math.nan
        tau_validation = kendalltau(values, final_validation[kept]).statistic if len(kept) > 2 else math.nan
        rows.append(
            [
                str(step),
                str(len(kept)),
                f"{tau:.3f}",
                f"{tau_validation:.3f}",
                f"{np.mean(shares):.1%}",
                f"{step / max(steps):.1%}",
            ]
        )
    tau_final = kendalltau([r.validation_accuracy for r in ok], finals).statistic
    rows.append(["final (best validated weights)", str(len(ok)), f"{tau_final:.3f}", "1.000", "100.0%", "100.0%"])
    overhead = float(np.mean([r.curve_seconds / r.learning_curve[-1].train_seconds for r in ok]))
    return rows, overhead


def projected_overhead(results: list[EvalResult], total_steps: int) -> float:
    """The curve's cost share at a ``total_steps`` budget, from each run's measured seconds per checkpoint and per
    training step (checkpoints grow like log(steps), training like steps)."""
    shares = []
    for result in results:
        if result.status != "ok" or not result.learning_curve:
            continue
        per_checkpoint = result.curve_seconds / len(result.learning_curve)
        last = result.learning_curve[-1]
        shares.append(
            len(curve_checkpoints(total_steps)) * per_checkpoint / (total_steps * last.train_seconds / last.step)
        )
    return float(np.mean(shares))


def choice_table(results: list[EvalResult], space: SearchSpace, majority: float) -> list[list[str]]:
    """Mean final validation accuracy and share of students at the majority rate, per value of each dimension."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for result in results:
        if result.status != "ok":
            continue
        fields = result.candidate.spec.model_dump() | result.candidate.kd.model_dump()
        for name in space.names:
            groups[(name, repr(fields[name]))].append(result.validation_accuracy)
    rows = []
    for (name, value), accuracies in sorted(groups.items()):
        stuck = sum(accuracy <= majority + MAJORITY_MARGIN for accuracy in accuracies)
        rows.append([name, value, str(len(accuracies)), f"{np.mean(accuracies):.3f}", f"{stuck}/{len(accuracies)}"])
    return rows


def report(results: list[EvalResult], space: SearchSpace, majority: float, args: argparse.Namespace) -> str:
    """The markdown report of the rows so far."""
    ok = [r for r in results if r.status == "ok"]
    ranks, overhead = rank_table(results)
    rows = [
        [
            r.candidate.summary() + f" {r.candidate.spec.init} L-{r.candidate.spec.layer_selection}",
            f"{r.latency[0].theoretical_speedup:.1f}x",
            f"{r.latency[0].speedup:.1f}x",
            f"{r.validation_accuracy:.3f}",
            f"{r.accuracy:.3f}",
            f"{r.mean_ood_accuracy:.3f}" if r.mean_ood_accuracy is not None else "-",
            f"{r.train_seconds:.0f}",
        ]
        for r in sorted(ok, key=lambda r: -(r.validation_accuracy or 0))
    ]
    failed = [f"{r.candidate.summary()}: {r.error}" for r in results if r.status != "ok"]
    return "\n\n".join(
        [
            "# Fidelity ranking: do early checkpoints rank students like their final test accuracy?",
            f"Command: `{command_line()}`. Machine state: {args.context}",
            environment_line(),
            f"{len(results)} candidates drawn with seed {args.seed} from the default space under "
            f"--min-speedup {args.min_speedup} (FLOPs, 1 x 64), each distilled for its whole schedule of "
            f"{args.steps} steps (batch 32: {args.steps * 32 / 10_000:.1f} passes over ~10k training examples), "
            f"fixed fields {json.dumps(space.fixed)}. {len(ok)} ok, {len(failed)} failed"
            + (f" ({'; '.join(failed)})" if failed else "")
            + ".",
            "## Rank correlation per checkpoint",
            "Kendall tau between each checkpoint's validation accuracy and the final test accuracy, and with the "
            "final validation accuracy (what a multi-fidelity search promotes on: the ranking its top rung would "
            "give); cost share = training seconds to the checkpoint / training seconds of the whole run (mean over "
            "candidates), beside the share in steps. The last row is the ceiling of any validation-based choice: "
            "how well the final validation accuracy itself ranks the final test accuracy.",
            markdown_table(
                [
                    "checkpoint step",
                    "candidates",
                    "tau vs final test",
                    "tau vs final validation",
                    "cost share (time)",
                    "steps share",
                ],
                ranks,
            ),
            f"Checkpoint cost: evaluating the curve (validation + OOD dev at every checkpoint) took {overhead:.1%} "
            f"of the training time on average (curve seconds / training seconds to the last step) at {args.steps} "
            f"steps. Checkpoints grow like log2(steps) and training like steps: from the same runs' seconds per "
            f"checkpoint and per step, the share would be {projected_overhead(results, 2000):.1%} at the default "
            "space's 2000-step budget.",
            "## Per choice",
            f"Mean final validation accuracy per value of each searched dimension; 'at majority' counts students "
            f"within {MAJORITY_MARGIN} of the majority-class validation rate ({majority:.4f}).",
            markdown_table(
                ["dimension", "value", "students", "mean validation", "at majority"], choice_table(ok, space, majority)
            ),
            "## Students",
            markdown_table(
                ["candidate", "FLOPs speed-up", "measured speed-up 1x64", "validation", "test", "OOD test", "train s"],
                rows,
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--min-speedup", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the recorded rows")
    parser.add_argument("--context", default=QUIET, help="how the machine was shared while the rows were recorded")
    args = parser.parse_args()
    evaluator = default_evaluator(progress=False)
    fixed = DEFAULT_FIXED | {"max_steps": args.steps, "max_length": MAX_LENGTH}
    space = SearchSpace.default_for(evaluator.teacher_config, fixed=fixed, limits=Limits(min_speedup=args.min_speedup))
    done = load_rows(ROWS)
    candidates = draw(space, args.candidates, args.seed)
    for number, candidate in enumerate(candidates, start=1):
        if args.report_only or candidate.content_hash() in done:
            continue
        started = time.perf_counter()
        result = evaluator.evaluate(candidate)
        append_row(ROWS, result)
        done[candidate.content_hash()] = result
        print(
            f"[{number}/{len(candidates)}] {candidate.summary()}: {result.status} validation "
            f"{result.validation_accuracy} test {result.accuracy} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    results = [done[c.content_hash()] for c in candidates if c.content_hash() in done]
    text = report(results, space, majority_rate(evaluator), args)
    REPORT.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
