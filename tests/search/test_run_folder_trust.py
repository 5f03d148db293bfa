"""Run folders are data: resuming a PPO or DNAS run never unpickles a file of the run folder, the PPO checkpoint
(safetensors + JSON) continues exactly, a corrupt one is a clear error naming its file, and a local Ray listens on the
loopback interface only (toy table for PPO; tiny teacher, toy task and Ray with 2 CPUs for DNAS)."""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import ray
from dnas_helpers import TINY_SEARCH
from ray_helpers import register_toy_task
from stable_baselines3.common.save_util import load_from_zip_file
from toy_table import TOY_SPACE

from distilsearch.envs.evaluators import TableEvaluator
from distilsearch.envs.ray_evaluator import LOOPBACK
from distilsearch.envs.rewards import WeightedReward
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.students.specs import StudentSpec
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search.agents import make_agent
from distilsearch.search.agents.checkpoint import CheckpointError
from distilsearch.search.agents.rl import LEGACY_MODEL_FILE, STATE_FILE, save_policy
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator
from distilsearch.search.dnas.tune import (
    DNAS_DIR,
    LEGACY_TUNER_FILE,
    TRIALS_FILE,
    TrialOutcome,
    TrialRecordError,
    append_trial,
    local_ray,
    read_trials,
    run_dnas_tune,
    sweep_name,
)

TESTS_DIR = Path(__file__).resolve().parents[1]
REWARD = WeightedReward(w_acc=1.0, w_speed=0.1)


class Touch:
    """Unpickling one creates ``path``: the code a crafted run folder would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.path,)


def payload(marker: Path) -> bytes:
    return pickle.dumps(Touch(marker))


def plant_model_zip(path: Path, marker: Path) -> None:
    """A ``model.zip`` laid out like stable-baselines3's, whose ``data`` holds a pickled entry making ``marker``."""
    serialized = base64.b64encode(payload(marker)).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": serialized}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps(data))
        archive.writestr("_stable_baselines3_version", "2.9.2")


@pytest.fixture(scope="module")
def table(toy_table_evaluator: TableEvaluator) -> TableEvaluator:
    return toy_table_evaluator


def run(name: str, table: TableEvaluator, budget: int, run_dir: Path) -> BudgetedEvaluator:
    budgeted = BudgetedEvaluator(table, budget, reward=REWARD, history_path=run_dir / HISTORY_FILE)
    make_agent(name).run(budgeted, TOY_SPACE, run_dir, seed=0)
    return budgeted


def hashes(budgeted: BudgetedEvaluator) -> list[str]:
    return [entry.candidate.content_hash() for entry in budgeted.history]


# ---- PPO and MaskablePPO ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo"])
def test_a_planted_model_zip_is_refused_and_never_unpickled(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    run_dir = tmp_path / "run"
    run(name, table, 4, run_dir)
    marker = tmp_path / "pwned"
    plant_model_zip(run_dir / LEGACY_MODEL_FILE, marker)
    shutil.copy(run_dir / LEGACY_MODEL_FILE, tmp_path / "copy.zip")
    with pytest.raises(CheckpointError, match=rf"{LEGACY_MODEL_FILE} is a pickled .* could run code"):
        run(name, table, 8, run_dir)
    assert not marker.exists()
    assert len(BudgetedEvaluator(table, 8, reward=REWARD, history_path=run_dir / HISTORY_FILE)) == 4

    load_from_zip_file(tmp_path / "copy.zip")  # what stable-baselines3's load, the old resume, did with it
    assert marker.exists(), "the planted file is armed"


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo"])
def test_a_resume_continues_from_the_saved_policy_exactly(table: TableEvaluator, tmp_path: Path, name: str) -> None:
    first = hashes(run(name, table, 10, tmp_path / "a"))
    state = json.loads((tmp_path / "a" / STATE_FILE).read_text(encoding="utf-8"))
    assert sorted(path.name for path in (tmp_path / "a").glob("policy-*")) == [state["tensors"]]
    for copy in ("b", "fresh"):
        shutil.copytree(tmp_path / "a", tmp_path / copy)
    (tmp_path / "fresh" / STATE_FILE).unlink()

    agent = make_agent(name)
    budgeted = BudgetedEvaluator(table, 10, reward=REWARD, history_path=tmp_path / "a" / HISTORY_FILE)
    model = agent.model_for(budgeted, TOY_SPACE, tmp_path / "a", seed=0)
    assert model.num_timesteps == state["num_timesteps"] > 0 and model.gamma == 1.0
    (tmp_path / "again").mkdir()
    save_policy(model, tmp_path / "again", agent.built_with(TOY_SPACE, 1, 0), budgeted)
    assert json.loads((tmp_path / "again" / STATE_FILE).read_text(encoding="utf-8")) == state
    tensors = state["tensors"]
    assert (tmp_path / "again" / tensors).read_bytes() == (tmp_path / "a" / tensors).read_bytes()

    resumed, twin, without = (hashes(run(name, table, 20, tmp_path / copy)) for copy in ("a", "b", "fresh"))
    assert resumed[:10] == first and len(set(resumed)) == 20
    assert resumed == twin, "a resume from the same checkpoint continues the same way"
    assert resumed != without, "the checkpoint, not a new policy, drives the resumed run"


@pytest.mark.parametrize("damage", ["truncated tensors", "garbled json"])
def test_a_corrupt_policy_state_is_a_clear_error_naming_the_file(
    table: TableEvaluator, tmp_path: Path, damage: str
) -> None:
    run("ppo", table, 4, tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text(encoding="utf-8"))
    if damage == "truncated tensors":
        path = tmp_path / state["tensors"]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        message = rf"policy tensors {path} do not match the SHA-256 in {STATE_FILE}: the file is truncated or corrupt"
    else:
        path = tmp_path / STATE_FILE
        path.write_text('{"version": 1, "algorithm": "PPO", "tens', encoding="utf-8")
        message = rf"policy state {path} is unreadable or of another version"
    with pytest.raises(CheckpointError, match=message):
        run("ppo", table, 8, tmp_path)


# ---- DNAS on Ray Tune ------------------------------------------------------------------------------------------


def ray_env() -> dict[str, object]:
    """Trial processes import ``ray_helpers`` (the setup hook) and share this test's cache."""
    python_path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return {"env_vars": {"PYTHONPATH": python_path, "DISTILSEARCH_HOME": os.environ["DISTILSEARCH_HOME"]}}


def recorded_trial(beta: float) -> TrialOutcome:
    spec = StudentSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_size=16)
    metrics = {"step": 4, "final": True, "spec": spec.model_dump_json(), "validation_accuracy": 0.5}
    return TrialOutcome(beta, 0, "completed", spec, metrics)


def test_a_planted_tune_state_is_never_unpickled(
    toy_teacher_and_task: tuple[Teacher, TaskData], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    teacher, _ = toy_teacher_and_task
    run_dir = tmp_path / "run"
    sweep = run_dir / DNAS_DIR / sweep_name(teacher, (0.0, 10.0), (0,), TINY_SEARCH, None)
    marker = tmp_path / "pwned"
    trial_dir = sweep / "dnas_trial_00000_0_beta=0.0000,seed=0"
    trial_dir.mkdir(parents=True)
    for path in (sweep / LEGACY_TUNER_FILE, trial_dir / "params.pkl", trial_dir / "error.pkl"):
        path.write_bytes(payload(marker))
    append_trial(sweep / TRIALS_FILE, recorded_trial(0.0))

    with caplog.at_level(logging.WARNING, logger="distilsearch.search.dnas.tune"):
        outcomes = run_dnas_tune(
            teacher, (0.0, 10.0), (0,), TINY_SEARCH, run_dir, num_cpus=2, setup=register_toy_task, runtime_env=ray_env()
        )
    assert not marker.exists()
    assert not ray.is_initialized()
    assert "not restored" in caplog.text
    assert outcomes[0] == recorded_trial(0.0), "a recorded trial is read back, not rerun"
    assert (outcomes[1].beta, outcomes[1].status) == (10.0, "completed"), outcomes[1].error
    assert [path.name for path in sweep.glob("tune-*")] == ["tune-1"]
    assert len(list(sweep.glob("tune-1/*/result.json"))) == 1, "only the missing trial ran"
    assert set(read_trials(sweep / TRIALS_FILE)) == {(0.0, 0), (10.0, 0)}

    pickle.loads((sweep / LEGACY_TUNER_FILE).read_bytes())  # what Tuner.restore, the old resume, did with it
    assert marker.exists(), "the planted file is armed"


def test_trial_records_cut_a_torn_last_line_and_name_the_file_of_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / TRIALS_FILE
    append_trial(path, recorded_trial(0.0))
    whole = path.read_text(encoding="utf-8")
    path.write_text(whole + '{"beta": 2.0, "se', encoding="utf-8")
    assert read_trials(path) == {(0.0, 0): recorded_trial(0.0)} and path.read_text(encoding="utf-8") == whole
    path.write_text(whole + '{"beta": 2.0}\n' + whole, encoding="utf-8")
    with pytest.raises(TrialRecordError, match=rf"{path}: line 2 is not a DNAS trial record"):
        read_trials(path)


# ---- the local Ray -----------------------------------------------------------------------------------------------


def listening_hosts(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp and tcp6) of the sockets listening on ``port``."""
    hosts: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                hosts.add(host)
    return hosts


def test_a_local_ray_listens_on_the_loopback_interface_only(tmp_path: Path) -> None:
    # 127.0.0.1, as an IPv4-mapped IPv6 address, and ::1
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    with local_ray(tmp_path, 1, False, None, {"cpu": 1, "gpu": 0}):
        assert ray.util.get_node_ip_address() == LOOPBACK
        (node,) = ray.nodes()
        assert node["NodeManagerAddress"] == LOOPBACK
        gcs_host, _, gcs_port = ray.get_runtime_context().gcs_address.rpartition(":")
        assert gcs_host == LOOPBACK
        for port in (int(gcs_port), node["NodeManagerPort"], node["ObjectManagerPort"]):
            assert listening_hosts(port) and listening_hosts(port) <= loopback, port
    assert not ray.is_initialized()
