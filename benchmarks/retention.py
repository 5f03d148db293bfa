"""Teacher vs. distilled students on rt-polarity: the shape of the seed's Table 1 for our teacher.

Each row is a real ``StudentEvaluator`` run (cut from the teacher, distilled with logit KD using the cached teacher
logits, scored on test and every OOD set, timed beside the teacher in the same process with the fixed latency
protocol). Writes ``results/retention.md`` and ``results/retention.csv``.

    .venv/bin/python -m benchmarks.retention [--epochs 3] [--only NAME ...] [--name REPORT]
"""

from __future__ import annotations

import argparse

import pandas as pd

from benchmarks.common import RESULTS, command_line, default_evaluator, environment_line, markdown_table
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

TINYBERT = {"hidden_weight": 1.0, "attention_weight": 1.0, "embedding_weight": 1.0}
H384_F384 = {"num_layers": 2, "hidden_size": 384, "num_heads": 12, "ffn_size": 384}
H192 = {"num_layers": 2, "hidden_size": 192, "num_heads": 6, "ffn_size": 768}
STUDENTS: dict[str, tuple[StudentSpec, dict[str, object]]] = {
    "3L-H384": (StudentSpec(num_layers=3, hidden_size=384, num_heads=12, ffn_size=1536), {}),
    "2L-H384-F384": (StudentSpec(**H384_F384), {}),
    "2L-H384-F384-int8": (StudentSpec(**H384_F384, weight_bits=8), {}),
    "2L-H384-F384-ternary": (StudentSpec(**H384_F384, weight_bits=2), {}),
    "2L-H192": (StudentSpec(**H192), {}),
    "2L-H192-TinyBERT": (StudentSpec(**H192), TINYBERT),
    "2L-H192-trimmed-vocab": (StudentSpec(**H192, trim_vocab=True), {}),
    "1L-H128": (StudentSpec(num_layers=1, hidden_size=128, num_heads=4, ffn_size=512), {}),
}


def kd_config(epochs: float, **overrides: object) -> KDConfig:
    """The recipe shared by every student row: logit KD (Hinton), plus a row's overrides (e.g. TinyBERT losses)."""
    base = {"alpha": 0.5, "temperature": 2.0, "epochs": epochs, "lr": 2e-4, "batch_size": 32, "max_length": 64}
    return KDConfig(**(base | overrides))


def row(name: str, result: EvalResult) -> dict[str, object]:
    """One table row: accuracy and retention, OOD and retention, params, measured and FLOPs speed-ups."""
    fast, slow = result.latency[0], result.latency[-1]
    return {
        "model": name,
        "status": result.status,
        "test_accuracy": result.accuracy,
        "retention": result.retention,
        "ood_accuracy": result.mean_ood_accuracy,
        "ood_retention": result.ood_retention,
        **{f"ood_{set_name}": value for set_name, value in result.ood_accuracy.items()},
        "params_m": result.params_total / 1e6,
        "non_embedding_params_m": result.params_non_embedding / 1e6,
        "size_mb": result.size_bytes / 1e6,
        f"speedup_{fast.batch}x{fast.seq_len}": fast.speedup,
        f"speedup_{slow.batch}x{slow.seq_len}": slow.speedup,
        f"flops_speedup_{fast.batch}x{fast.seq_len}": fast.theoretical_speedup,
        f"latency_ms_{fast.batch}x{fast.seq_len}": fast.median_ms,
        f"latency_ms_{slow.batch}x{slow.seq_len}": slow.median_ms,
        "train_seconds": result.train_seconds,
        "candidate_hash": result.candidate.content_hash(),
    }


def teacher_row(evaluator, result: EvalResult) -> dict[str, object]:
    """The teacher's row, read from the same evaluator (its accuracy, OOD accuracy and latency)."""
    fast, slow = result.latency[0], result.latency[-1]
    params = sum(p.numel() for p in evaluator.teacher_model.parameters())
    embedding = sum(p.numel() for p in evaluator.teacher_model.bert.embeddings.parameters())
    ood = result.teacher_ood_accuracy
    return {
        "model": "teacher (MiniLM-L6-H384, fine-tuned)",
        "status": "ok",
        "test_accuracy": result.teacher_accuracy,
        "retention": 1.0,
        "ood_accuracy": sum(ood.values()) / len(ood),
        "ood_retention": 1.0,
        **{f"ood_{set_name}": value for set_name, value in ood.items()},
        "params_m": params / 1e6,
        "non_embedding_params_m": (params - embedding) / 1e6,
        "size_mb": None,
        f"speedup_{fast.batch}x{fast.seq_len}": 1.0,
        f"speedup_{slow.batch}x{slow.seq_len}": 1.0,
        f"flops_speedup_{fast.batch}x{fast.seq_len}": 1.0,
        f"latency_ms_{fast.batch}x{fast.seq_len}": fast.teacher_median_ms,
        f"latency_ms_{slow.batch}x{slow.seq_len}": slow.teacher_median_ms,
        "train_seconds": None,
        "candidate_hash": "",
    }


def fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--only", nargs="*", choices=sorted(STUDENTS), help="evaluate only these students")
    parser.add_argument("--name", default="retention", help="report name: results/NAME.md and results/NAME.csv")
    args = parser.parse_args()
    evaluator = default_evaluator(progress=True)
    rows = []
    for name in args.only or STUDENTS:
        spec, overrides = STUDENTS[name]
        result = evaluator.evaluate(Candidate(spec=spec, kd=kd_config(args.epochs, **overrides)))
        if result.status != "ok":
            raise SystemExit(f"{name}: {result.status}: {result.error}")
        if not rows:
            rows.append(teacher_row(evaluator, result))
        rows.append(row(name, result))
        print(
            f"{name}: accuracy {result.accuracy:.4f} ({result.retention:.1%}), "
            f"speed-up {result.latency[0].speedup:.2f}x"
        )
    frame = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    frame.to_csv(RESULTS / f"{args.name}.csv", index=False)
    shown = ["model", "test_accuracy", "retention", "ood_accuracy", "ood_retention"]
    shown += [c for c in frame.columns if c.startswith("ood_") and c not in shown and c != "ood_retention"]
    shown += ["params_m", "non_embedding_params_m", "size_mb"]
    shown += [c for c in frame.columns if c.startswith(("speedup_", "flops_speedup_"))]
    table = markdown_table(shown, [[fmt(value) for value in record] for record in frame[shown].itertuples(index=False)])
    students = frame.iloc[1:]
    fast_column = next(c for c in frame.columns if c.startswith("speedup_"))
    winners = students[(students[fast_column] >= 5) & (students["retention"] >= 0.95)]
    verdict = (
        f"Target (>= 5x measured speed-up at {fast_column.removeprefix('speedup_')} keeping >= 95% of the teacher's "
        f"test accuracy): {'met by ' + ', '.join(winners['model']) if len(winners) else 'not met'}."
    )
    report = "\n\n".join(
        [
            "# Accuracy retention and speed-up on rt-polarity",
            f"Command: `{command_line()}`.",
            environment_line(),
            f"KD recipe for every student: {kd_config(args.epochs).model_dump_json()}; rows named TinyBERT add "
            f"{TINYBERT} (TinyBERT intermediate losses, teacher run online).",
            "Students are cut from the teacher (layers uniform, heads / FFN / hidden dims by gradient importance). "
            "Latency: median of the fixed protocol, 1 thread, in the same process as the teacher's; the FLOPs "
            "speed-up is the analytical ratio. int8 = dynamic int8 linear layers (scored and timed as deployed); "
            "ternary = 2-bit weights trained with KD (size packed; latency of fp32 kernels).",
            table,
            verdict,
        ]
    )
    (RESULTS / f"{args.name}.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
