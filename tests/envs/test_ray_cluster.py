"""A search across a two-node Ray cluster on one machine (loopback only): the workers live on a node of their own
with an empty ``DISTILSEARCH_HOME`` and no part in the run folder; the driver alone writes the store, the ledger and
the students the workers send back, and nothing is evaluated twice."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import ray._private.ray_constants as ray_constants
from ray.cluster_utils import Cluster
from ray_helpers import FAST_LATENCY
from toy_table import TOY_TEACHER

from distilsearch.envs.fidelity import Fidelity
from distilsearch.envs.ray_evaluator import LOOPBACK, RayEvaluator
from distilsearch.envs.space import SearchSpace
from distilsearch.envs.store import EvaluationStore
from distilsearch.search.agents import make_agent
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator, read_ledger

SPACE = SearchSpace(
    TOY_TEACHER,
    {"num_layers": [1, 2], "ffn_size": [16, 48]},
    {"hidden_size": 32, "num_heads": 4, "batch_size": 16, "max_length": 16, "lr": 1e-3, "seed": 21},
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, Path]]:
    """A head node with no CPUs (the driver's) and a 2-CPU worker node whose processes see an empty home of their
    own; both on 127.0.0.1. Yields the cluster, the worker node's id and that home."""
    assert not ray.is_initialized()
    home = tmp_path_factory.mktemp("worker_node_home")
    temp_dir = Path(tempfile.mkdtemp(prefix="kdc-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    (temp_dir / "ray").mkdir()
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", str(temp_dir))  # where the cluster writes its address file, not /tmp/ray
        ray_constants.ENABLE_RAY_CLUSTER = False  # keep Ray's servers on the loopback address (see init_local_ray)
        try:
            common = {"node_ip_address": LOOPBACK, "temp_dir": str(temp_dir), "object_store_memory": 100 * 2**20}
            head = {"num_cpus": 0, "include_dashboard": False}
            cluster = Cluster(initialize_head=True, head_node_args=common | head)
            node = cluster.add_node(num_cpus=2, env_vars={"DISTILSEARCH_HOME": str(home)}, **common)
            # The driver joins on the head's loopback address (a driver on a real cluster joins on its own node's).
            ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = enabled
        yield cluster, node.node_id, home
        ray.shutdown()
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_search_runs_on_the_other_node_and_the_driver_writes_everything(
    cluster: tuple[Cluster, str, Path], toy_teacher_and_task, tmp_path: Path
) -> None:
    head, worker_node, worker_home = cluster
    teacher, task = toy_teacher_and_task
    run_dir = tmp_path / "run"
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == head.address
    with RayEvaluator(
        task,
        teacher=teacher,
        num_workers=2,
        run_dir=run_dir,
        students_dir=run_dir / "students",
        fidelity=Fidelity("tiny", max_steps=6),
        device="cpu",
        latency=FAST_LATENCY,
        startup_timeout_s=120,
    ) as pool:
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {LOOPBACK} and len(ray.nodes()) == 2
        assert {identity.node_id for identity in pool.identities} == {worker_node}
        assert ray.get_runtime_context().get_node_id() != worker_node
        budgeted = BudgetedEvaluator(pool, 4, history_path=run_dir / HISTORY_FILE)
        make_agent("random").run(budgeted, SPACE, run_dir, seed=0)
        assert pool.distillations == 4 and pool.reused == 0 and pool.worker_failures == 0

    rows = EvaluationStore(run_dir / "store.sqlite").rows()
    assert len(rows) == 4 and {row.status for row in rows} == {"ok"}
    assert {row.pid for row in rows} == {os.getpid()}, "the driver is the only writer of the store"
    _, records = read_ledger(run_dir / HISTORY_FILE)
    assert len(records) == len({candidate.content_hash() for candidate, *_ in records}) == 4
    workers = {entry.result.provenance["worker"]["node"] for entry in budgeted.entries()}
    assert workers == {worker_node}
    assert not (worker_home / "teachers").exists(), "no worker fine-tuned or cached a teacher of its own"
    for row in rows:
        student = Path(row.result.student_path)
        assert student == run_dir / "students" / row.key and (student / "model.safetensors").is_file()
