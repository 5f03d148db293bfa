"""RayEvaluator: a private local Ray (2 CPUs), two workers over the tiny teacher and the toy task, one shared store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray_helpers import (
    CRASH_SEED,
    FAST_LATENCY,
    HANG_SEED,
    TOY_RECIPE,
    TOY_TASK,
    register_toy_task_with_faults,
    toy_candidate,
)

from envs.evaluators import Evaluator
from envs.fidelity import Fidelity
from envs.ray_evaluator import MAX_TEMP_DIR_BYTES, RayEvaluator
from envs.store import EvaluationStore

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Iterator[RayEvaluator]:
    """Two one-CPU workers that die on ``seed=CRASH_SEED`` and hang on ``seed=HANG_SEED``; Ray is stopped after."""
    assert not ray.is_initialized()
    python_path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    home = tmp_path_factory.mktemp("ray_home")
    evaluator = RayEvaluator(
        TOY_TASK,
        num_workers=2,
        num_cpus_per_eval=1,
        run_dir=tmp_path_factory.mktemp("a_rather_long_run_folder_name_for_the_ray_evaluator_tests"),
        fidelity=Fidelity("tiny", max_steps=6),
        device="cpu",
        teacher_recipe=TOY_RECIPE,
        base_dir=tiny_bert_dir,
        latency=FAST_LATENCY,
        setup=register_toy_task_with_faults,
        runtime_env={"env_vars": {"PYTHONPATH": python_path, "KDSEARCH_HOME": str(home)}},
        object_store_bytes=100 * 2**20,
        startup_timeout_s=120,
        max_worker_restarts=2,
    )
    yield evaluator
    evaluator.shutdown()
    assert not ray.is_initialized()


def test_four_candidates_run_in_parallel_into_the_store(pool: RayEvaluator) -> None:
    assert isinstance(pool, Evaluator) and ray.cluster_resources()["CPU"] == 2
    assert pool.temp_dir is not None and pool.temp_dir.is_relative_to(pool.run_dir.resolve())
    assert len(os.fsencode(pool.temp_dir)) > MAX_TEMP_DIR_BYTES and (pool.temp_dir / "session_latest").is_dir()
    assert (pool.run_dir / "ray_tmp").stat().st_mode & 0o777 == 0o700
    candidates = [toy_candidate(num_layers=n, ffn_size=f) for n in (1, 2) for f in (32, 64)]
    results = pool.evaluate_many([*candidates, candidates[0]])
    assert [r.status for r in results] == ["ok"] * 5, [r.error for r in results]
    assert results[4] == results[0] and [r.candidate.kd.max_steps for r in results] == [6] * 5
    assert [r.candidate.spec for r in results[:4]] == [c.spec for c in candidates]
    rows = EvaluationStore(pool.store_path).rows()
    assert len(rows) == 4 and {row.fidelity for row in rows} == {"tiny"}
    assert {row.task for row in rows} == {pool.task} and {row.teacher_key for row in rows} == {pool.teacher_key}
    assert len({row.pid for row in rows}) == 2, "both workers should have distilled"
    assert (pool.distillations, pool.reused) == (4, 0)
    assert pool.evaluate(candidates[1]) == results[1]
    assert (pool.distillations, pool.reused) == (4, 1)


def test_a_dead_worker_gives_a_failed_result_and_is_replaced(pool: RayEvaluator) -> None:
    failures, stored = pool.worker_failures, len(EvaluationStore(pool.store_path))
    crashed, fine = pool.evaluate_many([toy_candidate(seed=CRASH_SEED), toy_candidate(seed=1)])
    assert crashed.status == "failed" and "the worker died" in crashed.error, crashed.error
    assert fine.status == "ok", fine.error
    assert pool.worker_failures == failures + 1 and pool.live_workers == 2
    assert len(EvaluationStore(pool.store_path)) == stored + 1, "worker failures are not stored"
    after = pool.evaluate_many([toy_candidate(seed=2), toy_candidate(seed=3)])
    assert [r.status for r in after] == ["ok", "ok"], [r.error for r in after]


def test_a_stuck_worker_times_out(pool: RayEvaluator) -> None:
    failures = pool.worker_failures
    (stuck,) = pool.evaluate_many([toy_candidate(seed=HANG_SEED)], timeout_s=3)
    assert stuck.status == "failed" and "timed out after 3 s" in stuck.error
    assert pool.worker_failures == failures + 1 and pool.live_workers == 2


def test_bad_settings_are_rejected_before_ray_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_workers=0 must be a positive int"):
        RayEvaluator(TOY_TASK, num_workers=0, run_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown fidelity 'fastest'"):
        RayEvaluator(TOY_TASK, num_workers=1, run_dir=tmp_path, fidelity="fastest")
