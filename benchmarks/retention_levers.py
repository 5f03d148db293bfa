"""Which retention lever pays off? The two key students of ``benchmarks.retention`` under each lever, 3 seeds each.

Students ``2L-H384-F384`` (~5.6x measured speed-up) and ``2L-H192`` (~9x), the recipe of ``benchmarks.retention``
(logit KD, alpha 0.5, T 2, 3 epochs, lr 2e-4) and, one at a time, each lever of issue 15: a general-distillation stage
on the ``general-en`` corpus (600 extra steps of TinyBERT's hidden and attention losses), the rt-polarity transfer set
mixed in at 25 % of every batch, and each augmentation (mask, shuffle, n-gram, teacher-embedding substitution); then
the best combination: every lever whose 3-seed mean OOD retention beat plain logit KD for both students, together.
Seeds 0, 1 and 2 for every row. Each run is appended to ``results/retention_levers.jsonl`` as it finishes, so the
benchmark resumes from the committed rows (commit the file as it grows); the report goes to
``results/retention_levers.md`` and is appended to ``results/retention.md`` (whose base table comes from
``results/retention.csv``).

    .venv/bin/python -m benchmarks.retention_levers [--only LEVER ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Mapping

from benchmarks.common import RESULTS, command_line, default_evaluator, environment_line, markdown_table
from benchmarks.retention import STUDENTS, kd_config
from distilsearch.kdlib.students.candidate import Candidate, EvalResult

KEY_STUDENTS = ("2L-H384-F384", "2L-H192")
SEEDS = (0, 1, 2)
EPOCHS = 3.0
GENERAL_STEPS = 600
BASELINE = "logit KD (today)"
LEVERS: dict[str, dict[str, object]] = {
    BASELINE: {},
    "general stage on general-en": {
        "general_distillation_steps": GENERAL_STEPS,
        "hidden_weight": 1.0,
        "attention_weight": 1.0,
        "intermediate_share": 0.0,
    },
    "transfer set 25 %": {"transfer_ratio": 0.25},
    "augmentation mask": {"augmentation": "mask"},
    "augmentation shuffle": {"augmentation": "shuffle"},
    "augmentation n-gram": {"augmentation": "ngram"},
    "augmentation substitute": {"augmentation": "substitute"},
}
COMBINATION = "best combination"
ROWS = RESULTS / "retention_levers.jsonl"
TARGET = {"test": 0.97, "ood": 0.95, "cost": 3.0, "speedup": 5.0}


def recipe(overrides: Mapping[str, object], seed: int, train_steps: int) -> dict[str, object]:
    """The KD settings of a lever: the base recipe plus its overrides; a general stage adds its steps on top of the
    base budget instead of taking them from the task stages."""
    settings = dict(overrides) | {"seed": seed}
    general = int(settings.get("general_distillation_steps", 0))
    if general:
        settings["max_steps"] = train_steps + general
    return settings


def combination(rows: list[dict]) -> dict[str, object] | None:
    """The overrides of every single lever whose mean OOD retention beat the baseline for both key students (the
    augmentation with the best mean if several did); None until all single levers are measured."""
    means = {}
    for lever in LEVERS:
        for student in KEY_STUDENTS:
            values = [r["ood_retention"] for r in rows if r["lever"] == lever and r["student"] == student]
            if len(values) < len(SEEDS):
                return None
            means[lever, student] = statistics.mean(values)
    better = [
        lever
        for lever in LEVERS
        if lever != BASELINE and all(means[lever, s] > means[BASELINE, s] for s in KEY_STUDENTS)
    ]
    augmentations = [lever for lever in better if "augmentation" in LEVERS[lever]]
    if len(augmentations) > 1:
        best = max(augmentations, key=lambda lever: sum(means[lever, s] for s in KEY_STUDENTS))
        better = [lever for lever in better if lever not in augmentations or lever == best]
    merged: dict[str, object] = {}
    for lever in better:
        merged |= LEVERS[lever]
    return merged


def measured(rows: list[dict], lever: str, student: str, seed: int) -> bool:
    return any(r["lever"] == lever and r["student"] == student and r["seed"] == seed for r in rows)


def record(lever: str, student: str, seed: int, result: EvalResult) -> dict[str, object]:
    fast = result.latency[0]
    return {
        "lever": lever,
        "student": student,
        "seed": seed,
        "test_retention": result.retention,
        "ood_retention": result.ood_retention,
        "ood": {name: value / result.teacher_ood_accuracy[name] for name, value in result.ood_accuracy.items()},
        "test_accuracy": result.accuracy,
        "validation_accuracy": result.validation_accuracy,
        "speedup": fast.speedup,
        "train_seconds": result.train_seconds,
        "candidate": result.candidate.model_dump(mode="json"),
    }


def load_rows() -> list[dict]:
    if not ROWS.is_file():
        return []
    return [json.loads(line) for line in ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(levers: Mapping[str, Mapping[str, object]], rows: list[dict]) -> None:
    """Evaluate every (lever, key student, seed) not in ``rows``, appending each to the JSON-lines file."""
    todo = [
        (lever, student, seed)
        for lever in levers
        for student in KEY_STUDENTS
        for seed in SEEDS
        if not measured(rows, lever, student, seed)
    ]
    if not todo:
        return
    evaluator = default_evaluator(progress=True)
    train_steps = math.ceil(EPOCHS * math.ceil(len(evaluator.tokenized(64)["train"]) / 32))
    for number, (lever, student, seed) in enumerate(todo, start=1):
        spec, extra = STUDENTS[student]
        kd = kd_config(EPOCHS, **(dict(extra) | recipe(levers[lever], seed, train_steps)))
        result = evaluator.evaluate(Candidate(spec=spec, kd=kd))
        if result.status != "ok":
            raise SystemExit(f"{lever} / {student} / seed {seed}: {result.status}: {result.error}")
        row = record(lever, student, seed, result)
        rows.append(row)
        with ROWS.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        print(
            f"[{number}/{len(todo)}] {lever} / {student} / seed {seed}: test retention {result.retention:.3f}, "
            f"OOD retention {result.ood_retention:.3f}, {result.train_seconds:.0f} s",
            flush=True,
        )


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def report(rows: list[dict], combined: Mapping[str, object] | None) -> str:
    """The markdown section: per lever and student, 3-seed mean ± sd of test / OOD (per set) retention, speed-up,
    training cost against the baseline, and whether the target is met."""
    table, met = [], []
    for lever in [*LEVERS, COMBINATION]:
        for student in KEY_STUDENTS:
            chosen = [r for r in rows if r["lever"] == lever and r["student"] == student]
            base = [r for r in rows if r["lever"] == BASELINE and r["student"] == student]
            if not chosen or not base:
                continue
            cost = statistics.mean(r["train_seconds"] for r in chosen) / statistics.mean(
                r["train_seconds"] for r in base
            )
            test = [r["test_retention"] for r in chosen]
            ood = [r["ood_retention"] for r in chosen]
            speedup = statistics.median(r["speedup"] for r in chosen)
            sets = sorted(chosen[0]["ood"])
            per_set = [spread([r["ood"][name] for r in chosen]) for name in sets]
            hit = (
                statistics.mean(test) >= TARGET["test"]
                and statistics.mean(ood) >= TARGET["ood"]
                and cost <= TARGET["cost"]
                and speedup >= TARGET["speedup"]
            )
            if hit:
                met.append(f"{lever} / {student}")
            table.append(
                [
                    lever,
                    student,
                    str(len(chosen)),
                    spread(test),
                    spread(ood),
                    *per_set,
                    f"{speedup:.2f}x",
                    f"{cost:.2f}x",
                ]
            )
    sets = sorted(rows[0]["ood"]) if rows else []
    header = ["lever", "student", "seeds", "test retention", "OOD retention", *(f"OOD {s}" for s in sets)]
    header += ["speed-up 1x64", "train cost vs logit KD"]
    combo = "not yet measured" if combined is None else json.dumps(combined) if combined else "no lever beat logit KD"
    planned = len(LEVERS) * len(KEY_STUDENTS) * len(SEEDS)
    single = sum(1 for r in rows if r["lever"] in LEVERS)
    status = (
        f"**Partial: {single} of the {planned} single-lever runs measured so far** (rerun the command to continue)."
        if single < planned
        else f"All {planned} single-lever runs measured."
    )
    return "\n\n".join(
        [
            "## Retention levers (issue 15): 3 seeds per row",
            status,
            f"Command: `{command_line()}`; rows in `results/retention_levers.jsonl`.",
            environment_line(),
            f"Base recipe: {kd_config(EPOCHS).model_dump_json()}. Levers: "
            + "; ".join(f"**{name}** {json.dumps(values)}" for name, values in LEVERS.items() if values)
            + f". **{COMBINATION}**: {combo}.",
            markdown_table(header, table),
            f"Target: at >= {TARGET['speedup']:g}x measured speed-up, >= {TARGET['test']:.0%} test retention and >= "
            f"{TARGET['ood']:.0%} OOD retention (3-seed means) at no more than {TARGET['cost']:g}x today's training "
            f"cost: {'met by ' + ', '.join(met) if met else 'not met'}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(LEVERS), help="measure only these levers")
    parser.add_argument("--report-only", action="store_true", help="write the report from the rows measured so far")
    args = parser.parse_args()
    rows = load_rows()
    if not args.report_only:
        run({name: LEVERS[name] for name in args.only or LEVERS}, rows)
    combined = combination(rows)
    if combined and not args.report_only and not args.only:
        run({COMBINATION: combined}, rows)
    section = report(rows, combined)
    (RESULTS / "retention_levers.md").write_text(section + "\n", encoding="utf-8")
    base = (RESULTS / "retention.md").read_text(encoding="utf-8").split("\n## Retention levers")[0].rstrip()
    (RESULTS / "retention.md").write_text(base + "\n\n" + section + "\n", encoding="utf-8")
    print(section)


if __name__ == "__main__":
    main()
