"""The environments' KD-Bench defaults, vector rewards, simulated time, rendering and vectorisation, on toy bench
tables (TOY TEST DATA, see tests/toy_table.py) -- plus one episode on the shipped table itself."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv
from toy_table import TOY_SPACE, TOY_TASK, TOY_TEACHER_KEY, toy_result, toy_results

from distilsearch.envs import ENV_IDS, VECTOR_REWARD_IDS
from distilsearch.envs.bench_env import IncompleteBenchWarning
from distilsearch.envs.bench_space import bench_space
from distilsearch.envs.bench_table import BenchTableError, write_bench_table
from distilsearch.envs.evaluators import TableEvaluator
from distilsearch.envs.rewards import WeightedReward
from distilsearch.envs.student_search import RENDER_CELL, StudentSearchEnv, StudentSearchOneShotEnv
from distilsearch.envs.vector_reward import LinearReward, VectorReward
from distilsearch.kdlib.students.candidate import EvalResult

SEQUENTIAL, ONE_SHOT = "distilsearch/StudentSearch-v0", "distilsearch/StudentSearchOneShot-v0"
SEQUENTIAL_MO, ONE_SHOT_MO = "distilsearch/StudentSearchMO-v0", "distilsearch/StudentSearchOneShotMO-v0"
SCALAR_IDS = (SEQUENTIAL, ONE_SHOT)
EVAL_SECONDS = 0.25
PARTIAL_EVERY = 12


def bench_results() -> list[EvalResult]:
    """TOY TEST DATA: the toy results, each also recording EVAL_SECONDS of evaluation."""
    return [result.model_copy(update={"eval_seconds": EVAL_SECONDS}) for result in toy_results()]


def write_toy_bench(path: Path, results: list[EvalResult]) -> Path:
    return write_bench_table(
        results, path, space=TOY_SPACE, task=TOY_TASK, teacher_key=TOY_TEACHER_KEY, fidelity="toy", build={}
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete toy bench table over TOY_SPACE."""
    return write_toy_bench(tmp_path_factory.mktemp("bench") / "toy.parquet", bench_results())


@pytest.fixture(scope="module")
def partial_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy bench table holding every PARTIAL_EVERY-th candidate of TOY_SPACE."""
    return write_toy_bench(tmp_path_factory.mktemp("partial") / "toy.parquet", bench_results()[::PARTIAL_EVERY])


def one_shot_episode(env: gym.Env, choices: tuple[int, ...]) -> tuple[object, dict]:
    env.reset()
    _, reward, terminated, _, info = env.step(np.array(choices))
    assert terminated
    return reward, info


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_table_alone_gives_the_space_and_the_rows(bench: Path, env_id: str) -> None:
    env = gym.make(env_id, table=bench).unwrapped
    assert env.space.space_hash() == TOY_SPACE.space_hash()
    assert isinstance(env.evaluator, TableEvaluator) and env.evaluator.fallback is None
    choices = next(TOY_SPACE.enumerate_valid())
    env.reset(seed=0)
    done, info = False, {}
    for choice in choices if env_id in (SEQUENTIAL, SEQUENTIAL_MO) else [np.array(choices)]:
        _, _, done, _, info = env.step(choice)
    expected = toy_result(TOY_SPACE.decode(choices))
    assert done and info["candidate_hash"] == expected.candidate.content_hash()
    assert info["validation_accuracy"] == expected.validation_accuracy and info["predicted"] is False


def test_a_space_other_than_the_tables_is_refused_at_construction(bench: Path) -> None:
    other = TOY_SPACE.with_limits({"min_speedup": 2.0})
    for env_id in ENV_IDS:
        with pytest.raises(BenchTableError) as caught:
            gym.make(env_id, table=bench, space=other)
        assert other.space_hash() in str(caught.value) and TOY_SPACE.space_hash() in str(caught.value)
    with pytest.raises(BenchTableError, match=TOY_SPACE.space_hash()):
        StudentSearchEnv(space=bench_space(), table=bench)


def test_a_callers_evaluator_gets_the_tables_space_and_both_together_use_no_table(bench: Path) -> None:
    evaluator = TableEvaluator(bench)
    env = StudentSearchEnv(evaluator, table=bench)
    assert env.evaluator is evaluator and env.space.space_hash() == TOY_SPACE.space_hash()
    with pytest.raises(ValueError, match=r"table=.* is unused when evaluator= and space= are both given"):
        StudentSearchEnv(evaluator, TOY_SPACE, table=bench)


def test_with_a_callers_evaluator_a_result_without_cost_is_charged_nothing(toy_table_evaluator: TableEvaluator) -> None:
    failed = next(c for c in TOY_SPACE.enumerate_valid() if toy_result(TOY_SPACE.decode(c)).status == "failed")
    _, info = one_shot_episode(StudentSearchOneShotEnv(toy_table_evaluator, TOY_SPACE), failed)
    assert info["status"] == "failed" and info["simulated_seconds"] == 0.0 == info["simulated_time"]


def test_a_missing_table_says_how_to_build_it(tmp_path: Path) -> None:
    absent = tmp_path / "absent.parquet"
    for env_id in ENV_IDS:
        with pytest.raises(
            BenchTableError, match=re.escape(f"build it with `distilsearch bench build --out {absent}`")
        ):
            gym.make(env_id, table=absent)


def test_an_incomplete_table_warns_and_labels_the_surrogates_predictions(partial_bench: Path) -> None:
    valid = list(TOY_SPACE.enumerate_valid())
    held = len(valid[::PARTIAL_EVERY])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(ONE_SHOT, table=partial_bench, reward=WeightedReward(w_acc=1.0, w_speed=0.1))
    messages = [str(w.message) for w in caught if issubclass(w.category, IncompleteBenchWarning)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert messages[0].startswith(f"KD-Bench holds {held} of {len(valid)} candidates; the others are surrogate")
    measured = toy_result(TOY_SPACE.decode(valid[0]))
    _, info = one_shot_episode(env, valid[0])
    assert info["predicted"] is False and json.loads(info["provenance"]) == measured.provenance
    assert info["simulated_seconds"] == pytest.approx(measured.train_seconds + EVAL_SECONDS)
    reward, info = one_shot_episode(env, valid[1])
    assert info["predicted"] is True and "surrogate" in json.loads(info["provenance"])
    assert info["status"] == "ok" and np.isfinite(reward) and 0.0 <= info["validation_accuracy"] <= 1.0
    # a prediction records no cost: it is charged the median cost of the measured rows
    ok_costs = [r.train_seconds + EVAL_SECONDS for r in bench_results()[::PARTIAL_EVERY] if r.train_seconds]
    assert info["simulated_seconds"] == pytest.approx(float(np.median(ok_costs)))


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_checkers_pass(bench: Path, env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # with a spec, the checker also renders a fresh copy in every render mode
        gym_check_env(gym.make(env_id, table=bench, render_mode="rgb_array").unwrapped)
        env = gym.make(env_id, table=bench)
        sb3_check_env(LinearReward(env) if env_id in VECTOR_REWARD_IDS else env.unwrapped)
    # Gymnasium's checker asks for scalar rewards; MO-Gymnasium's convention is a vector
    expected = {"must be a float, int, np.integer or np.floating"} if env_id in VECTOR_REWARD_IDS else set()
    assert {str(w.message).split("`step()` ")[-1].split(", actual")[0] for w in caught} == expected


@pytest.mark.parametrize("env_id", SCALAR_IDS)
def test_vectorised_copies_build_from_the_id(bench: Path, env_id: str) -> None:
    kwargs = {"table": str(bench)}
    copies = [
        make_vec_env(env_id, n_envs=2, env_kwargs=kwargs, seed=0),
        make_vec_env(
            env_id, n_envs=2, env_kwargs=kwargs, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}
        ),
    ]
    for vec in copies:
        vec.reset()
        _, rewards, dones, infos = vec.step(np.stack([vec.action_space.sample() for _ in range(2)]))
        assert rewards.shape == (2,) and vec.get_images()[0].shape[2] == 3
        if env_id == ONE_SHOT:
            assert dones.all() and all(info["simulated_seconds"] >= 0.0 for info in infos)
        vec.close()
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", table=bench)
    vec.reset(seed=0)
    _, rewards, *_ = vec.step(vec.action_space.sample())
    assert rewards.shape == (2,)
    vec.close()


@pytest.mark.parametrize("env_id", [SEQUENTIAL_MO, ONE_SHOT_MO])
def test_vector_rewards_lie_in_the_reward_space(bench: Path, env_id: str) -> None:
    env = gym.make(env_id, table=bench)
    space = env.unwrapped.reward_space
    assert space == VectorReward().space and space.shape == (3,)
    rng = np.random.default_rng(0)
    seen_ok = seen_penalty = False
    for episode in range(30):
        env.reset(seed=episode)
        done = False
        while not done:
            action = env.action_space.sample() if episode % 3 == 0 else None
            if action is None and env_id == SEQUENTIAL_MO:
                action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
            elif action is None:
                action = np.array(TOY_SPACE.sample(rng))
            _, reward, done, _, info = env.step(action)
            assert isinstance(reward, np.ndarray) and reward.dtype == np.float32 and space.contains(reward)
        if info["status"] == "ok":
            seen_ok = True
            expected = toy_result(TOY_SPACE.decode(info["choices"]))
            log_speedup = math.log(expected.speedup(1, 64))
            np.testing.assert_allclose(
                reward, [expected.validation_accuracy, expected.mean_ood_dev_accuracy, log_speedup], rtol=1e-6
            )
        else:
            seen_penalty = True
            np.testing.assert_array_equal(reward, space.low)
    assert seen_ok and seen_penalty
    with pytest.raises(TypeError, match="needs a VectorReward reward"):
        gym.make(env_id, table=bench, reward=WeightedReward())


def test_linear_reward_scalarises_with_its_weights(bench: Path) -> None:
    env = LinearReward(gym.make(ONE_SHOT_MO, table=bench), weight=[1.0, 0.0, 0.5])
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array(next(TOY_SPACE.enumerate_valid())))
    vector = info["vector_reward"]
    assert isinstance(reward, float) and reward == pytest.approx(vector[0] + 0.5 * vector[2])
    with pytest.raises(ValueError, match="one per objective"):
        LinearReward(env.env, weight=[1.0, 2.0])


def test_simulated_time_charges_every_evaluation_and_accumulates(bench: Path) -> None:
    env = gym.make(ONE_SHOT, table=bench)
    env.reset(seed=0)
    first, second = list(TOY_SPACE.enumerate_valid())[-2:]
    costs = [toy_result(TOY_SPACE.decode(c)).train_seconds + EVAL_SECONDS for c in (first, second)]
    total = 0.0
    for choices, cost in [(first, costs[0]), (first, costs[0]), (second, costs[1])]:
        _, info = one_shot_episode(env, choices)
        total += cost
        assert info["simulated_seconds"] == pytest.approx(cost) and info["simulated_time"] == pytest.approx(total)
    _, info = one_shot_episode(env, (99,) * len(TOY_SPACE.names))
    assert info["status"] == "invalid" and info["simulated_seconds"] == 0.0
    assert info["simulated_time"] == pytest.approx(total) == env.unwrapped.simulated_time
    env.reset(seed=1)  # a seeded reset begins a new run
    assert env.unwrapped.simulated_time == 0.0
    _, info = one_shot_episode(env, first)
    assert info["simulated_time"] == pytest.approx(costs[0])


def test_rgb_rendering_lights_the_decisions_made(bench: Path) -> None:
    env = gym.make(SEQUENTIAL, table=bench, render_mode="rgb_array")
    env.reset(seed=0)
    choice = int(np.flatnonzero(env.unwrapped.action_masks())[-1])
    env.step(choice)
    image = env.render()
    rows, columns = len(TOY_SPACE.names), max(TOY_SPACE.sizes)
    assert image.shape == (rows * RENDER_CELL, columns * RENDER_CELL, 3) and image.dtype == np.uint8
    cells = image[::RENDER_CELL, ::RENDER_CELL]
    lit = {(int(r), int(c)) for r, c in zip(*np.nonzero(cells[:, :, 1] > cells[:, :, 0]), strict=True)}
    assert lit == {(0, choice)}
    assert (cells[1, TOY_SPACE.sizes[1] :] == 0).all() and (cells[1, : TOY_SPACE.sizes[1]] > 0).all()


def test_the_shipped_bench_runs_an_episode_with_no_argument() -> None:
    env = gym.make(SEQUENTIAL)
    assert env.unwrapped.space.space_hash() == bench_space().space_hash()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    done, steps, info = False, 0, {}
    while not done:
        _, reward, done, truncated, info = env.step(int(rng.choice(np.flatnonzero(env.unwrapped.action_masks()))))
        steps += 1
        assert not truncated
    assert steps == len(bench_space().names) and info["invalid_reason"] is None
    assert np.isfinite(reward) and info["status"] in ("ok", "failed") and info["simulated_seconds"] > 0.0
    # the zero-argument env also builds in the workers of a SubprocVecEnv
    vec = make_vec_env(SEQUENTIAL, n_envs=2, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"})
    assert vec.reset().shape == (2, *env.observation_space.shape)
    vec.close()
