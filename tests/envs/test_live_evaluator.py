"""Fidelity levels, and the live evaluator on the tiny teacher and the toy task (real distillations, a few steps)."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from ray_helpers import FAST_LATENCY, toy_candidate
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from transformers import AutoModelForSequenceClassification

from distilsearch import envs
from distilsearch.envs.fidelity import FIDELITIES, Fidelity, apply_fidelity, get_fidelity
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.rewards import WeightedReward
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.envs.store import EvaluationStore, evaluation_key
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.teacher import Teacher

TINY = Fidelity("tiny", max_steps=6)
SPEC = StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=32)


@pytest.fixture(scope="module")
def toy(toy_teacher_and_task: tuple[Teacher, TaskData]) -> tuple[Teacher, TaskData]:
    return toy_teacher_and_task


def live(toy: tuple[Teacher, TaskData], **kwargs: object) -> LiveEvaluator:
    teacher, task = toy
    settings = {"fidelity": TINY, "device": "cpu", "latency": FAST_LATENCY, "progress": False} | kwargs
    return LiveEvaluator(task, teacher=teacher, **settings)


# ---- fidelity levels ------------------------------------------------------------------------------------------


def test_builtin_levels_replace_the_budget() -> None:
    candidate = Candidate(spec=SPEC, kd=KDConfig(max_steps=2000, epochs=5.0))
    assert apply_fidelity(candidate, "low").kd.max_steps == 150
    assert apply_fidelity(candidate, "medium").kd.max_steps == 600
    high = apply_fidelity(candidate, "high").kd
    assert (high.max_steps, high.epochs) == (None, 3.0)
    assert apply_fidelity(candidate, "full") is candidate
    assert apply_fidelity(candidate, "low").kd.model_dump(exclude={"max_steps"}) == candidate.kd.model_dump(
        exclude={"max_steps"}
    )
    assert set(FIDELITIES) == {"low", "medium", "high", "full"}


def test_custom_levels_and_bad_names() -> None:
    candidate = Candidate(spec=SPEC, kd=KDConfig(max_steps=2000))
    assert apply_fidelity(candidate, Fidelity("quick", epochs=0.5)).kd.epochs == 0.5
    with pytest.raises(ValueError, match=r"unknown fidelity 'lowest'; known levels: low \(max_steps=150\), medium"):
        get_fidelity("lowest")
    with pytest.raises(ValueError, match="not both"):
        Fidelity("both", max_steps=10, epochs=1.0)
    with pytest.raises(ValueError, match="max_steps=0 must be a positive int"):
        Fidelity("zero", max_steps=0)
    with pytest.raises(ValueError, match="fidelity name 'a b'"):
        Fidelity("a b")
    with pytest.raises(ValueError, match="reuses the built-in name of low"):
        get_fidelity(Fidelity("low", max_steps=10))


def test_general_stage_keeps_its_share_of_the_budget() -> None:
    kd = KDConfig(max_steps=1000, general_distillation_steps=100, hidden_weight=1.0)
    candidate = Candidate(spec=SPEC, kd=kd)
    assert apply_fidelity(candidate, "low").kd.general_distillation_steps == 15
    assert apply_fidelity(candidate, Fidelity("two", max_steps=2)).kd.general_distillation_steps == 1
    by_epochs = Candidate(spec=SPEC, kd=kd.model_copy(update={"max_steps": None, "epochs": 2.0}))
    with pytest.raises(ValueError, match="needs train_size"):
        apply_fidelity(by_epochs, "low")
    assert apply_fidelity(by_epochs, "low", train_size=3200).kd.general_distillation_steps == 75


# ---- live evaluator -------------------------------------------------------------------------------------------


def test_stored_candidates_cost_no_training(toy: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "store.sqlite")
    evaluator = live(toy, store=store, students_dir=tmp_path / "students")
    candidate = toy_candidate()
    result = evaluator.evaluate(candidate)
    assert result.status == "ok", result.error
    assert result.candidate.kd.max_steps == 6 and result.provenance["distillation"]["steps"] == 6
    assert result.provenance["fidelity"] == {"name": "tiny", "max_steps": 6, "epochs": None, "stop_after": None}
    assert result.train_steps == 6 and [point.step for point in result.learning_curve] == [6]
    assert (evaluator.distillations, evaluator.reused) == (1, 0)
    key = evaluation_key(result.candidate, evaluator.task, evaluator.teacher_key, "tiny")
    assert evaluator.key(candidate) == key and store[key] == result
    assert result.student_path == str(tmp_path / "students" / key)
    assert AutoModelForSequenceClassification.from_pretrained(result.student_path).config.num_hidden_layers == 2

    assert evaluator.evaluate(candidate) == result
    assert (evaluator.distillations, evaluator.reused) == (1, 1)
    other_budget = toy_candidate(max_steps=50)
    assert evaluator.evaluate(other_budget) == result
    assert (evaluator.distillations, evaluator.reused) == (1, 2)

    restarted = live(toy, store=EvaluationStore(tmp_path / "store.sqlite"))
    assert restarted.evaluate(candidate) == result
    assert (restarted.distillations, restarted.reused) == (0, 1)


def test_each_fidelity_is_a_separate_evaluation(toy: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "store.sqlite")
    tiny, longer = live(toy, store=store), live(toy, store=store, fidelity=Fidelity("longer", max_steps=9))
    first, second = tiny.evaluate(toy_candidate()), longer.evaluate(toy_candidate())
    assert (tiny.distillations, longer.distillations) == (1, 1)
    assert first.provenance["distillation"]["steps"] == 6 and second.provenance["distillation"]["steps"] == 9
    assert sorted(row.fidelity for row in store.rows()) == ["longer", "tiny"]


def test_invalid_candidates_are_stored_without_training(toy: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "store.sqlite")
    evaluator = live(toy, store=store, students_dir=tmp_path / "students")
    result = evaluator.evaluate(toy_candidate(num_layers=9))
    assert result.status == "invalid" and "num_layers=9" in result.error
    assert [row.status for row in store.rows()] == ["invalid"]
    assert (evaluator.distillations, evaluator.reused) == (0, 0)
    assert not (tmp_path / "students").exists()


def test_without_a_store_results_are_kept_in_memory(toy: tuple[Teacher, TaskData]) -> None:
    evaluator = live(toy)
    assert evaluator.evaluate(toy_candidate()) == evaluator.evaluate(toy_candidate())
    assert (evaluator.distillations, evaluator.reused) == (1, 1)


def test_teacher_arguments_are_exclusive(toy: tuple[Teacher, TaskData], tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="either a built teacher or teacher_recipe"):
        live(toy, base_dir=tiny_bert_dir)


# ---- environments on the live backend ---------------------------------------------------------------------------


def test_env_checkers_pass_on_the_live_backend(toy: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    teacher, _ = toy
    config = teacher.load_model().config
    space = SearchSpace(
        TeacherShape.from_config(config),
        {"num_layers": [1, 2], "hidden_size": [16, 32]},
        {"num_heads": 4, "ffn_size": 32, "max_steps": 3, "batch_size": 16, "max_length": 16, "lr": 1e-3},
    )
    evaluator = live(toy, fidelity="full", store=EvaluationStore(tmp_path / "store.sqlite"))
    settings = {"evaluator": evaluator, "space": space, "reward": WeightedReward(0.5, 0.2, 0.3, point=(1, 16))}
    for env_id in sorted(set(envs.ENV_IDS) - envs.VECTOR_REWARD_IDS):  # SB3's checker takes scalar rewards only
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check_env(gym.make(env_id, render_mode="ansi", **settings).unwrapped)
            sb3_check_env(gym.make(env_id, **settings).unwrapped)
        assert [str(w.message) for w in caught] == [], env_id
    assert 1 <= evaluator.distillations <= 4 and evaluator.reused > 0
    rows = EvaluationStore(tmp_path / "store.sqlite").rows()
    assert all(row.status == "ok" and row.fidelity == "full" for row in rows)
    assert {row.result.candidate.kd.max_steps for row in rows} == {3}
