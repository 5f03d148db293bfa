import json
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from distilsearch.envs.store import EvaluationStore, evaluation_key
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.search.cli import pareto as pareto_cli
from distilsearch.search.cli.pareto import FRONTIER_PNG, HYPERVOLUME_PNG, STORE_FILE, pareto

runner = CliRunner()
TEACHER_MS = 10.0


def result(accuracy: float | None, ms: float | None, seed: int, layers: int = 2) -> EvalResult:
    """``accuracy`` is the validation accuracy (what the frontier ranks by); the test accuracy is 0.1 lower."""
    candidate = Candidate(
        spec=StudentSpec(num_layers=layers, hidden_size=32, num_heads=4, ffn_size=64), kd=KDConfig(seed=seed)
    )
    if accuracy is None:
        return EvalResult(candidate=candidate, status="failed", error="diverged")
    point = LatencyPoint(
        batch=1,
        seq_len=64,
        median_ms=ms,
        p10_ms=ms,
        p90_ms=ms,
        teacher_median_ms=TEACHER_MS,
        speedup=TEACHER_MS / ms,
        theoretical_speedup=2.0,
    )
    return EvalResult(
        candidate=candidate,
        status="ok",
        validation_accuracy=accuracy,
        teacher_validation_accuracy=0.9,
        accuracy=accuracy - 0.1,
        teacher_accuracy=0.95,
        latency=[point],
        params_total=1_000 * layers,
        size_bytes=4_000 * layers,
    )


def make_run(folder: Path, results: list[EvalResult], task: str = "toy") -> Path:
    store = EvaluationStore(folder / STORE_FILE)
    for item in results:
        store.put(
            evaluation_key(item.candidate, task, "teacher0", "full"),
            item,
            task=task,
            teacher_key="teacher0",
            fidelity="full",
        )
    return folder


RUN_A = [result(0.5, 5.0, 1), result(0.6, 8.0, 2), result(None, None, 3), result(0.4, 6.0, 4)]
RUN_B = [result(0.6, 4.0, 11, layers=3), result(0.3, 1.0, 12, layers=1)]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(pareto_cli, "console", Console(width=200))
    app = typer.Typer()
    app.command()(pareto)
    return app


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return make_run(tmp_path / "run_a", RUN_A), make_run(tmp_path / "run_b", RUN_B)


def test_table_output_and_plots(cli: typer.Typer, runs: tuple[Path, Path]) -> None:
    run_a, run_b = runs
    outcome = runner.invoke(cli, [str(run_a)])
    assert outcome.exit_code == 0, outcome.output
    assert "frontier of run_a" in outcome.output
    assert "L2 H32 A4 F64" in outcome.output  # the candidate summary, wrapped in its column
    assert RUN_A[1].candidate.content_hash() in outcome.output
    assert RUN_A[3].candidate.content_hash() not in outcome.output  # dominated
    for metric in ("validation_retention", "test_accuracy", "retention", "speedup/1x64", "params_total", "size_bytes"):
        assert metric in outcome.output
    assert "hypervolume 2.7" in outcome.output
    assert "4 evaluation(s) (1 failed, 3 ok), 3 usable" in outcome.output
    assert "reference point: accuracy=0, latency=10" in outcome.output
    for name in (FRONTIER_PNG, HYPERVOLUME_PNG):
        assert (run_a / name).read_bytes()[:4] == b"\x89PNG"
        assert not (run_b / name).exists()


def test_json_compare_two_runs(cli: typer.Typer, runs: tuple[Path, Path]) -> None:
    run_a, run_b = runs
    outcome = runner.invoke(cli, [str(run_a), "--compare", str(run_b), "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    assert [o["name"] for o in report["objectives"]] == ["accuracy", "latency"]
    assert report["reference"] == {"accuracy": 0.0, "latency": TEACHER_MS}
    assert report["teacher"] == {"accuracy": 0.9, "latency": TEACHER_MS}
    first, second = report["runs"]
    assert (first["run"], first["task"], first["evaluations"], first["usable"]) == ("run_a", "toy", 4, 3)
    assert first["hypervolume"] == pytest.approx(2.7)
    assert first["hypervolume_trace"] == pytest.approx([2.5, 2.7, 2.7, 2.7])
    assert [row["candidate_hash"] for row in first["frontier"]] == [
        RUN_A[1].candidate.content_hash(),
        RUN_A[0].candidate.content_hash(),
    ]
    assert first["frontier"][0]["accuracy"] == 0.6 and first["frontier"][0]["latency"] == 8.0
    assert first["frontier"][0]["test_accuracy"] == pytest.approx(0.5)  # reported beside, not ranked on
    assert second["run"] == "run_b" and second["hypervolume"] == pytest.approx(4.5)
    assert Path(report["plots"]["frontier"]) == run_a / FRONTIER_PNG
    assert (run_a / HYPERVOLUME_PNG).is_file()


def test_reference_and_objectives_options(cli: typer.Typer, runs: tuple[Path, Path]) -> None:
    run_a, _ = runs
    fixed = runner.invoke(cli, [str(run_a), "--json", "--reference", "latency=8"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["runs"][0]["hypervolume"] == pytest.approx(1.5)  # (0.6, 8) sits on the bound
    three = runner.invoke(cli, [str(run_a), "--json", "--objectives", "accuracy,latency,params"])
    assert three.exit_code == 0, three.output
    report = json.loads(three.stdout)
    assert report["reference"]["params"] == 2_200.0
    assert report["runs"][0]["frontier"][0]["params"] == 2_000
    post_hoc = runner.invoke(cli, [str(run_a), "--json", "--objectives", "test_accuracy,latency"])
    assert post_hoc.exit_code == 0, post_hoc.output
    report = json.loads(post_hoc.stdout)
    assert report["teacher"] == {"test_accuracy": 0.95, "latency": TEACHER_MS}
    assert report["runs"][0]["hypervolume"] == pytest.approx(2.2)  # the test accuracies, 0.1 below validation


def test_an_empty_store_is_an_empty_frontier(cli: typer.Typer, tmp_path: Path) -> None:
    empty = make_run(tmp_path / "empty", [])
    outcome = runner.invoke(cli, [str(empty), "--reference", "latency=10"])
    assert outcome.exit_code == 0, outcome.output
    assert "no usable evaluation" in outcome.output and "hypervolume 0" in outcome.output
    assert (empty / FRONTIER_PNG).is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--objectives", "accuracy,speed"], "unknown objective 'speed'; known objectives: accuracy, ood_accuracy"),
        (["--objectives", "accuracy"], "at least two objectives"),
        (["--reference", "latency"], "must look like NAME=VALUE"),
        (["--reference", "latency=fast"], "could not convert"),
        (["--reference", "params=5"], "'params', which is not among the objectives (accuracy, latency)"),
        (["--reference", "latency=inf"], "finite"),
    ],
)
def test_bad_options_are_clear_errors(
    cli: typer.Typer, runs: tuple[Path, Path], arguments: list[str], message: str
) -> None:
    outcome = runner.invoke(cli, [str(runs[0]), *arguments])
    assert outcome.exit_code == 2
    assert message in " ".join(outcome.stderr.split())


def test_bad_run_folders_are_clear_errors(cli: typer.Typer, runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, _ = runs
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str((tmp_path / "bare").mkdir() or tmp_path / "bare"): f"has no evaluation store ({STORE_FILE})",
    }
    for folder, message in cases.items():
        outcome = runner.invoke(cli, [folder])
        assert outcome.exit_code == 2 and message in " ".join(outcome.stderr.split())
    twice = runner.invoke(cli, [str(run_a), "--compare", str(run_a)])
    assert twice.exit_code == 2 and "given more than once" in twice.stderr


def test_runs_of_different_tasks_are_refused(cli: typer.Typer, runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, _ = runs
    other = make_run(tmp_path / "other", [result(0.7, 3.0, 21)], task="sst2")
    outcome = runner.invoke(cli, [str(run_a), "--compare", str(other)])
    assert outcome.exit_code == 2
    assert "cannot compare runs of different tasks: run_a (toy), other (sst2)" in " ".join(outcome.stderr.split())
    mixed = make_run(tmp_path / "mixed", [result(0.7, 3.0, 22)], task="toy")
    make_run(mixed, [result(0.7, 3.0, 23)], task="sst2")
    outcome = runner.invoke(cli, [str(mixed)])
    assert outcome.exit_code == 2 and "several tasks (sst2, toy)" in outcome.stderr


def test_a_reference_that_cannot_be_derived_is_a_clear_error(cli: typer.Typer, tmp_path: Path) -> None:
    failed = make_run(tmp_path / "failed", [result(None, None, 31)])
    outcome = runner.invoke(cli, [str(failed)])
    assert outcome.exit_code == 2
    assert "records the teacher's latency there; give one, e.g. latency=20" in " ".join(outcome.stderr.split())
