"""KD-Bench's builder on the tiny teacher and the toy task: plan order, resume from the written table, int8 twins from
one training, the recorded space, and the errors for a table that belongs to another space, teacher or level."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from ray_helpers import FAST_LATENCY
from typer.testing import CliRunner

from distilsearch.envs.bench_space import BENCH_DIMENSIONS, bench_space
from distilsearch.envs.bench_table import BenchTable, BenchTableError, write_bench_table
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.ray_evaluator import RayEvaluator
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search.bench_build import build_bench, build_plan, training_key
from distilsearch.search.bench_datasheet import hardware_rows, render_datasheet
from distilsearch.search.cli.main import app

runner = CliRunner()

FIXED = {"hidden_size": 32, "num_heads": 4, "ffn_size": 32, "max_steps": 4, "batch_size": 8, "max_length": 16}


def tiny_space(teacher: Teacher, **dimensions: tuple) -> SearchSpace:
    shape = TeacherShape.from_config(teacher.load_model().config)
    dims = {"num_layers": (1, 2), "weight_bits": (32, 8), "alpha": (0.0, 0.9)} | dimensions
    return SearchSpace(shape, dims, FIXED | {"seed": 0})


@pytest.fixture(scope="module")
def toy(toy_teacher_and_task: tuple[Teacher, TaskData]) -> tuple[Teacher, TaskData]:
    return toy_teacher_and_task


def live(toy: tuple[Teacher, TaskData], fidelity: str = "full") -> LiveEvaluator:
    teacher, task = toy
    return LiveEvaluator(task, teacher=teacher, fidelity=fidelity, device="cpu", latency=FAST_LATENCY, progress=False)


def test_the_bench_space_has_240_candidates_from_120_trainings() -> None:
    space = bench_space()
    assert space.num_valid() == 240 == len(list(space.enumerate_valid()))
    plan = build_plan(space)
    primary = [c for c in plan if c.kd.seed == 0]
    assert len(primary) == 240 and len({training_key(c) for c in primary}) == 120
    assert len(plan) == 300 and {c.kd.seed for c in plan[60:120]} == {1}
    assert set(BENCH_DIMENSIONS) <= set(space.names)


def test_the_plan_and_its_hashes_are_those_of_the_committed_table() -> None:
    # A change of plan order or of candidate hashes would make the build redo (or orphan) committed rows.
    plan = build_plan(bench_space())
    assert [plan[i].content_hash() for i in (0, 1, 61, 299)] == [
        "dd5ac1db155ec4ef",
        "59e58f22b00a9101",
        "6f40339647048435",
        "0eb67ef8acd9d056",
    ]


def test_plan_keeps_twins_adjacent_fp32_first_and_is_seeded() -> None:
    space = bench_space()
    plan = build_plan(space, noise_trainings=3)
    for fp32, int8 in zip(plan[0::2], plan[1::2], strict=True):
        assert (fp32.spec.weight_bits, int8.spec.weight_bits) == (32, 8)
        assert training_key(fp32) == training_key(int8)
    assert [c.content_hash() for c in plan] == [c.content_hash() for c in build_plan(space, noise_trainings=3)]
    assert plan[:6] != build_plan(space, noise_trainings=3, seed=1)[:6]
    noise = plan[6:12]
    assert {c.kd.seed for c in noise} == {1} and {c.kd.seed for c in plan[:6] + plan[12:]} == {0}
    assert [c.model_copy(update={"kd": c.kd.model_copy(update={"seed": 0})}) for c in noise] == plan[:6]
    with pytest.raises(ValueError, match="noise_trainings=121 must be between 0 and the 120 trainings"):
        build_plan(space, noise_trainings=121)


def test_build_resumes_from_the_table_and_int8_twins_share_one_training(toy, tmp_path: Path) -> None:
    space = tiny_space(toy[0])
    plan = build_plan(space, noise_trainings=1)
    path = tmp_path / "bench.parquet"
    first = build_bench(live(toy), space, path, plan=plan, max_new=2)
    assert (first.rows, first.added, first.remaining) == (2, 2, len(plan) - 2)
    seen: list[tuple[int, int]] = []
    evaluator = live(toy)
    second = build_bench(evaluator, space, path, plan=plan, on_result=lambda r, done, total: seen.append((done, total)))
    assert (second.rows, second.added, second.remaining) == (len(plan), len(plan) - 2, 0)
    assert seen[0] == (3, len(plan)) and seen[-1] == (len(plan), len(plan))
    assert evaluator.distillations == len(plan) - 2
    assert len(second.build["sessions"]) == 2
    assert second.build["sessions"][1]["rows_added"] == len(plan) - 2

    table = BenchTable.load(path)
    assert table.complete and table.space == space and table.missing() == []
    assert len(table.in_space()) == space.num_valid()
    rows = {r.candidate.content_hash(): r for r in table.results()}
    for fp32, int8 in zip(plan[0::2], plan[1::2], strict=True):
        a, b = rows[fp32.content_hash()], rows[int8.content_hash()]
        assert a.status == b.status == "ok"
        assert b.provenance["trained_with"] == fp32.content_hash()
        assert b.train_seconds == a.train_seconds and b.learning_curve == a.learning_curve
        assert "load_average" in a.provenance
    pairs = table.seed_pairs()
    assert len(pairs) == 2 and {(a.candidate.kd.seed, b.candidate.kd.seed) for a, b in pairs} == {(0, 1)}

    with pytest.raises(BenchTableError, match=f"is not the space {space.space_hash()}.*differ in dimensions"):
        build_bench(live(toy), tiny_space(toy[0], alpha=(0.0, 0.5)), path, plan=plan)


def test_a_ray_build_runs_trainings_in_parallel_with_each_twin_beside_its_fp32(toy, tmp_path: Path) -> None:
    teacher, task = toy
    space = tiny_space(teacher)
    plan = build_plan(space, noise_trainings=0)
    with RayEvaluator(
        task,
        teacher=teacher,
        num_workers=2,
        run_dir=tmp_path / "ray",
        fidelity="full",
        device="cpu",
        latency=FAST_LATENCY,
        runtime_env={"env_vars": {"DISTILSEARCH_HOME": str(tmp_path / "home")}},
        object_store_bytes=100 * 2**20,
        startup_timeout_s=120,
        remeasure_teacher_latency=True,
    ) as pool:
        report = build_bench(pool, space, tmp_path / "bench.parquet", plan=plan, max_new=4)
    assert (report.rows, report.added, report.remaining) == (4, 4, len(plan) - 4)
    rows = {r.candidate.content_hash(): r for r in BenchTable.load(tmp_path / "bench.parquet").results()}
    for fp32, int8 in zip(plan[0:4:2], plan[1:4:2], strict=True):
        a, b = rows[fp32.content_hash()], rows[int8.content_hash()]
        assert a.status == b.status == "ok"
        assert b.provenance["trained_with"] == fp32.content_hash()
        assert a.provenance["worker"] == b.provenance["worker"]
    workers = {rows[c.content_hash()].provenance["worker"]["pid"] for c in plan[:4]}
    assert len(workers) == 2, "the two trainings should have run on both workers"


def test_a_table_of_another_teacher_or_level_is_refused(toy, tmp_path: Path) -> None:
    space = tiny_space(toy[0])
    path = tmp_path / "bench.parquet"
    plan = build_plan(space, noise_trainings=0)
    build_bench(live(toy), space, path, plan=plan, max_new=1)
    table = BenchTable.load(path)
    write_bench_table(
        table.results(), path, space=space, task=table.evaluator.task, teacher_key="another", fidelity="full", build={}
    )
    with pytest.raises(ValueError, match="was built with teacher_key='another'"):
        build_bench(live(toy), space, path, plan=plan)
    with pytest.raises(ValueError, match="a bench is built at the 'full' level, not 'low'"):
        build_bench(live(toy, fidelity="low"), space, tmp_path / "other.parquet", plan=plan)


def test_bench_table_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BenchTableError, match="no bench table there"):
        BenchTable.load(tmp_path / "missing.parquet")
    plain = tmp_path / "plain.parquet"
    plain.write_bytes(b"not parquet")
    with pytest.raises(BenchTableError, match=r"plain\.parquet: not a readable Parquet file"):
        BenchTable.load(plain)


def test_datasheet_reports_counts_hash_noise_sessions_and_hardware(toy, tmp_path: Path) -> None:
    space = tiny_space(toy[0])
    plan = build_plan(space, noise_trainings=1)
    path = tmp_path / "bench.parquet"
    build_bench(live(toy), space, path, plan=[c for c in plan if c.kd.seed == 0][:4])
    incomplete = render_datasheet(BenchTable.load(path))
    assert f"**incomplete: 4 of {space.num_valid()} candidates**" in incomplete
    build_bench(live(toy), space, path, plan=plan)
    text = render_datasheet(BenchTable.load(path), surrogate_section="| target | tau |")
    assert f"sha256 `{hashlib.sha256(path.read_bytes()).hexdigest()}`" in text
    assert f"{len(plan)} rows: {space.num_valid()} candidates of the space (complete) and 2 noise re-runs" in text
    assert f"Space hash `{space.space_hash()}`" in text
    assert "| validation accuracy | 2 |" in text
    assert text.count("| 20") >= 2  # two build sessions, each a row starting with its date
    assert "## Surrogate (off-table candidates)" in text and "| target | tau |" in text

    assert "## Hardware" in text and "CPU models.**" not in text

    table = BenchTable.load(path)
    relabelled = [
        r.model_copy(update={"provenance": r.provenance | {"hardware": {"cpu_model": "Other CPU", "cpus": 2}}})
        if r.candidate.spec.num_layers == 2
        else r
        for r in table.results()
    ]
    write_bench_table(
        relabelled, path, space=space, task=table.evaluator.task, teacher_key=table.evaluator.teacher_key,
        fidelity="full", build=table.build,
    )  # fmt: skip
    rows = hardware_rows(relabelled, point=FAST_LATENCY.points[0])
    assert len(rows) == 2 and sum(row[1] for row in rows) == len(relabelled)
    assert all(row[3] != "-" and row[4] != "-" for row in rows), "each model has fp32 and int8 speed-ups"
    assert "**The rows were measured on 2 CPU models.**" in render_datasheet(BenchTable.load(path))

    result = runner.invoke(app, ["bench", "datasheet", "--table", str(path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "DATASHEET.md").read_text(encoding="utf-8").startswith("# KD-Bench datasheet")
    missing = runner.invoke(app, ["bench", "datasheet", "--table", str(tmp_path / "none.parquet")])
    assert missing.exit_code == 2 and "none.parquet: no bench table there" in missing.output
