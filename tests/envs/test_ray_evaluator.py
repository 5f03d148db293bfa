"""RayEvaluator: a private local Ray (2 CPUs), two workers over the tiny teacher and the toy task sent by the driver,
which alone writes the store; dead, killed and stuck workers; the failed-result policy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray_helpers import (
    CRASH_SEED,
    FAST_LATENCY,
    HANG_SEED,
    KILL_ONCE_SEED,
    MARKERS_ENV,
    TOY_TASK,
    register_toy_task_with_faults,
    toy_candidate,
)
from toy_table import TOY_TEACHER

from distilsearch.envs.evaluators import BatchEvaluator, Evaluator
from distilsearch.envs.fidelity import Fidelity
from distilsearch.envs.ray_evaluator import (
    MAX_TEMP_DIR_BYTES,
    WORKER_FOLDER_PREFIX,
    RayEvaluator,
    remove_stale_worker_folders,
)
from distilsearch.envs.space import SearchSpace
from distilsearch.envs.store import EvaluationStore
from distilsearch.kdlib.students.candidate import EvalResult
from distilsearch.search.agents import make_agent
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator, read_ledger
from distilsearch.search.dnas.tune import NoRoomForTrials, check_room

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, toy_teacher_and_task) -> Iterator[RayEvaluator]:
    """Two one-CPU workers (an empty home of their own) that die on ``seed=CRASH_SEED``, hang on ``seed=HANG_SEED``
    and are SIGKILLed once per ``seed=KILL_ONCE_SEED`` candidate; a dead worker's candidate is retried once; Ray is
    stopped after."""
    assert not ray.is_initialized()
    teacher, task = toy_teacher_and_task
    python_path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    home, markers = tmp_path_factory.mktemp("ray_home"), tmp_path_factory.mktemp("markers")
    evaluator = RayEvaluator(
        task,
        teacher=teacher,
        num_workers=2,
        num_cpus_per_eval=1,
        run_dir=tmp_path_factory.mktemp("a_rather_long_run_folder_name_for_the_ray_evaluator_tests"),
        fidelity=Fidelity("tiny", max_steps=6),
        device="cpu",
        latency=FAST_LATENCY,
        setup=register_toy_task_with_faults,
        runtime_env={
            "env_vars": {"PYTHONPATH": python_path, "DISTILSEARCH_HOME": str(home), MARKERS_ENV: str(markers)}
        },
        object_store_bytes=100 * 2**20,
        startup_timeout_s=120,
        max_worker_restarts=8,
        max_retries=1,
    )
    yield evaluator
    evaluator.shutdown()
    assert not ray.is_initialized()


def test_four_candidates_run_in_parallel_into_the_store(pool: RayEvaluator) -> None:
    assert isinstance(pool, Evaluator) and ray.cluster_resources()["CPU"] == 2
    assert pool.temp_dir is not None and pool.temp_dir.is_relative_to(pool.run_dir.resolve())
    assert len(os.fsencode(pool.temp_dir)) > MAX_TEMP_DIR_BYTES and (pool.temp_dir / "session_latest").is_dir()
    assert (pool.run_dir / "ray_tmp").stat().st_mode & 0o777 == 0o700
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
    candidates = [toy_candidate(num_layers=n, ffn_size=f) for n in (1, 2) for f in (32, 64)]
    results = pool.evaluate_many([*candidates, candidates[0]])
    assert [r.status for r in results] == ["ok"] * 5, [r.error for r in results]
    assert results[4] == results[0] and [r.candidate.kd.max_steps for r in results] == [6] * 5
    assert [r.candidate.spec for r in results[:4]] == [c.spec for c in candidates]
    rows = EvaluationStore(pool.store_path).rows()
    assert len(rows) == 4 and {row.fidelity for row in rows} == {"tiny"}
    assert {row.task for row in rows} == {pool.task} and {row.teacher_key for row in rows} == {pool.teacher_key}
    assert {row.pid for row in rows} == {os.getpid()}, "the driver is the store's only writer"
    assert len({r.provenance["worker"]["pid"] for r in results}) == 2, "both workers should have distilled"
    assert {identity.teacher_files_sha256 for identity in pool.identities} == {pool.teacher_files_sha256}
    assert (pool.distillations, pool.reused) == (4, 0)
    assert pool.evaluate(candidates[1]) == results[1]
    assert (pool.distillations, pool.reused) == (4, 1)


def test_workers_killed_mid_evaluation_are_replaced_and_the_search_completes(
    pool: RayEvaluator, tmp_path: Path
) -> None:
    space = SearchSpace(
        TOY_TEACHER,
        {"num_layers": [1, 2]},
        {"hidden_size": 32, "num_heads": 4, "ffn_size": 32, "batch_size": 16, "max_length": 16, "lr": 1e-3}
        | {"seed": KILL_ONCE_SEED},
    )
    failures, distilled = pool.worker_failures, pool.distillations
    budgeted = BudgetedEvaluator(pool, 2, history_path=tmp_path / HISTORY_FILE)
    make_agent("random").run(budgeted, space, tmp_path, seed=0)
    _, records = read_ledger(tmp_path / HISTORY_FILE)
    assert [result.status for _, result, _, _ in records] == ["ok", "ok"], [r.error for _, r, _, _ in records]
    assert len({candidate.content_hash() for candidate, *_ in records}) == 2, "each candidate once in the ledger"
    assert pool.worker_failures == failures + 2 and pool.live_workers == 2
    assert pool.distillations == distilled + 2
    store = EvaluationStore(pool.store_path)
    assert all(store[pool.key(candidate)] == result for candidate, result, _, _ in records)


def test_a_worker_that_keeps_dying_gives_a_stored_failed_result(pool: RayEvaluator) -> None:
    failures, stored = pool.worker_failures, len(EvaluationStore(pool.store_path))
    crashed, fine = pool.evaluate_many([toy_candidate(seed=CRASH_SEED), toy_candidate(seed=1)])
    assert crashed.status == "failed" and "its worker died 2 time(s)" in crashed.error, crashed.error
    assert fine.status == "ok", fine.error
    assert pool.worker_failures == failures + 2 and pool.live_workers == 2
    store = EvaluationStore(pool.store_path)
    assert len(store) == stored + 2 and store[pool.key(toy_candidate(seed=CRASH_SEED))] == crashed
    assert pool.evaluate(toy_candidate(seed=CRASH_SEED)) == crashed, "a failed result is answered from the store"
    assert pool.worker_failures == failures + 2
    after = pool.evaluate_many([toy_candidate(seed=2), toy_candidate(seed=3)])
    assert [r.status for r in after] == ["ok", "ok"], [r.error for r in after]


def test_retry_failed_runs_a_stored_failure_again_once(pool: RayEvaluator) -> None:
    candidate = toy_candidate(seed=5)
    failed = EvalResult(candidate=pool.trained_candidate(candidate), status="failed", error="loss became NaN")
    key = pool.key(candidate)
    pool.store.put(key, failed, task=pool.task, teacher_key=pool.teacher_key, fidelity=pool.fidelity)
    assert pool.evaluate(candidate).error == "loss became NaN"
    pool.retry_failed = True
    try:
        fresh = pool.evaluate(candidate)
        assert fresh.status == "ok" and EvaluationStore(pool.store_path)[key] == fresh
        assert pool.evaluate(candidate) == fresh
    finally:
        pool.retry_failed = False


def test_a_stuck_worker_times_out(pool: RayEvaluator) -> None:
    failures = pool.worker_failures
    (stuck,) = pool.evaluate_many([toy_candidate(seed=HANG_SEED)], timeout_s=3)
    assert stuck.status == "failed" and "timed out after 3 s" in stuck.error
    assert pool.worker_failures == failures + 1 and pool.live_workers == 2
    assert EvaluationStore(pool.store_path)[pool.key(toy_candidate(seed=HANG_SEED))] == stuck


@pytest.mark.parametrize("agent", ["evolution", "ppo"])
def test_an_agent_keeps_both_workers_busy(pool: RayEvaluator, tmp_path: Path, agent: str) -> None:
    # A sequential caller always gets the first idle worker, so two writing processes mean batches of two.
    space = SearchSpace(
        TOY_TEACHER,
        {"num_layers": [1, 2, 3], "ffn_size": [16, 48], "seed": [11 if agent == "ppo" else 12, 13]},
        {"hidden_size": 32, "num_heads": 4, "batch_size": 16, "max_length": 16, "lr": 1e-3},
    )
    known = {row.key for row in EvaluationStore(pool.store_path).rows()}
    distilled = pool.distillations
    budgeted = BudgetedEvaluator(pool, 4, history_path=tmp_path / HISTORY_FILE)
    assert isinstance(pool, BatchEvaluator) and budgeted.parallelism == 2
    options = {"population_size": 2, "sample_size": 1} if agent == "evolution" else {}
    make_agent(agent, **options).run(budgeted, space, tmp_path, seed=0)
    rows = [row for row in EvaluationStore(pool.store_path).rows() if row.key not in known]
    assert budgeted.spent == len(rows) == 4 and pool.distillations == distilled + 4
    assert {row.status for row in rows} == {"ok"}
    assert len({entry.result.provenance["worker"]["pid"] for entry in budgeted.entries()}) == 2


def test_a_dnas_sweep_refuses_a_ray_whose_cpus_are_all_held(pool: RayEvaluator) -> None:
    with pytest.raises(
        NoRoomForTrials, match=r"a DNAS trial needs 1 CPU, but the Ray already running has 0 free \(of 2\)"
    ):
        check_room({"cpu": 1, "gpu": 0})


def test_the_folders_of_dead_workers_are_removed(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{WORKER_FOLDER_PREFIX}{int(finished.stdout)}-abc"
    alive = tmp_path / f"{WORKER_FOLDER_PREFIX}{os.getpid()}-def"
    other = tmp_path / "kdsearch-something-else"
    for folder in (dead, alive, other):
        (folder / "teacher").mkdir(parents=True)
    assert remove_stale_worker_folders(tmp_path) == [dead]
    assert not dead.exists() and alive.is_dir() and other.is_dir()


def test_bad_settings_are_rejected_before_ray_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_workers=0 must be a positive int"):
        RayEvaluator(TOY_TASK, num_workers=0, run_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown fidelity 'fastest'"):
        RayEvaluator(TOY_TASK, num_workers=1, run_dir=tmp_path, fidelity="fastest")


def test_gpus_the_local_ray_lacks_are_refused_at_once(pool: RayEvaluator, toy_teacher_and_task, tmp_path: Path) -> None:
    teacher, task = toy_teacher_and_task
    with pytest.raises(ValueError, match=r"num_gpus_per_eval=1, but the local Ray has 0 GPUs"):
        RayEvaluator(task, teacher=teacher, num_workers=1, num_gpus_per_eval=1, run_dir=tmp_path, device="cpu")
    assert ray.is_initialized(), "the Ray the evaluator did not start is left running"
