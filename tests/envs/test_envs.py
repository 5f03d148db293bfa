"""The StudentSearch environments on the toy benchmark table (TOY TEST DATA, see tests/test_table_evaluator.py)."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from toy_table import TOY_SPACE, toy_result

from distilsearch import envs
from distilsearch.envs.evaluators import TableEvaluator
from distilsearch.envs.rewards import MnasNetReward, WeightedReward
from distilsearch.envs.student_search import StudentSearchEnv, StudentSearchOneShotEnv

SEQUENTIAL, ONE_SHOT = "distilsearch/StudentSearch-v0", "distilsearch/StudentSearchOneShot-v0"
REWARD = MnasNetReward(target_latency_ms=2.0)


@pytest.fixture(scope="module")
def table(toy_table_evaluator: TableEvaluator) -> TableEvaluator:
    return toy_table_evaluator


def make(env_id: str, table: TableEvaluator, **kwargs: object) -> gym.Env:
    return gym.make(env_id, **({"evaluator": table, "space": TOY_SPACE, "reward": REWARD} | kwargs))


def test_ids_are_registered_on_import(table: TableEvaluator) -> None:
    assert set(envs.ENV_IDS) <= set(gym.registry)
    assert isinstance(make(SEQUENTIAL, table).unwrapped, StudentSearchEnv)
    assert isinstance(make(ONE_SHOT, table).unwrapped, StudentSearchOneShotEnv)
    module_form = gym.make(f"distilsearch.envs:{SEQUENTIAL}", evaluator=table, space=TOY_SPACE)
    assert isinstance(module_form.unwrapped, StudentSearchEnv)


@pytest.mark.parametrize("env_id", [SEQUENTIAL, ONE_SHOT])
def test_checkers_pass_without_warnings(table: TableEvaluator, env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(make(env_id, table, render_mode="ansi").unwrapped)
        sb3_check_env(make(env_id, table).unwrapped)
    assert [str(w.message) for w in caught] == []


def test_masked_episode_ends_with_the_table_result(table: TableEvaluator) -> None:
    env = make(SEQUENTIAL, table, render_mode="ansi")
    obs, info = env.reset(seed=3)
    assert obs.shape == env.observation_space.shape and info == {}
    rng = np.random.default_rng(0)
    terminated, steps = False, 0
    while not terminated:
        mask = env.unwrapped.action_masks()
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        steps += 1
        assert not truncated and env.observation_space.contains(obs)
    assert steps == len(TOY_SPACE.names) and info["invalid_reason"] is None
    candidate = TOY_SPACE.decode(info["choices"])
    expected = toy_result(candidate)
    assert info["candidate_hash"] == candidate.content_hash() and info["candidate"] == candidate.model_dump_json()
    assert reward == pytest.approx(REWARD(expected)) and info["status"] == expected.status
    assert json.loads(info["provenance"]) == expected.provenance
    if expected.status == "ok":
        assert info["validation_accuracy"] == expected.validation_accuracy
        assert info["latency_ms/1x64"] == expected.latency[0].median_ms
        assert info["ood_dev_accuracy/echo"] == expected.ood_dev_accuracy["echo"]
        assert info["objectives"].shape == (4,) and info["objectives"][0] == expected.validation_accuracy
        # the info is the blinded result: nothing measured on the test split or the OOD test halves reaches the agent
        assert info["accuracy"] is None and info["retention"] is None and "ood_accuracy/echo" not in info
    assert "step 7/7" in env.render()


def test_sequential_invalid_actions_end_the_episode_with_a_reason(table: TableEvaluator) -> None:
    env = make(SEQUENTIAL, table)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(4)
    assert terminated and reward == REWARD.penalty and info["status"] == "invalid"
    assert "exceeds the teacher's num_hidden_layers=4" in info["invalid_reason"]
    env.reset()
    env.step(0)
    env.step(0)
    assert not env.unwrapped.action_masks()[1]
    _, reward, terminated, _, info = env.step(1)
    assert terminated and reward == REWARD.penalty
    assert "num_heads=3 is masked out: hidden_size=16 is not divisible by num_heads=3" in info["invalid_reason"]
    env.reset()
    env.step(0)
    _, _, terminated, _, info = env.step(3)
    assert terminated and "action 3 is not a choice index of hidden_size (0..2)" in info["invalid_reason"]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.unwrapped.step(0)


def test_one_shot_invalid_combination_is_penalised(table: TableEvaluator) -> None:
    env = make(ONE_SHOT, table, render_mode="ansi")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.array([0, 0, 0, 0, 1, 1, 0]))
    assert terminated and reward == REWARD.penalty and info["candidate"] is None
    assert info["invalid_reason"].startswith("weight_bits=2 is forbidden when init='random'")
    assert "invalid" in env.render()
    _, reward, _, _, info = env.unwrapped.step([0, 0])
    assert reward == REWARD.penalty and "is not 7 integer choice indices" in info["invalid_reason"]
    _, reward, _, _, info = env.unwrapped.step(np.full(7, 0.5))
    assert reward == REWARD.penalty and "is not 7 integer choice indices" in info["invalid_reason"]
    _, reward, _, _, info = env.unwrapped.step(np.array([1, 0, 0, 0, 0, 0, 0]))
    assert info["invalid_reason"] is None and reward == pytest.approx(REWARD(toy_result(info_candidate(info))))
    assert env.unwrapped.action_masks().tolist() == np.concatenate(TOY_SPACE.validity_mask([])).tolist()


def info_candidate(info: dict) -> object:
    return TOY_SPACE.decode(info["choices"])


@pytest.mark.parametrize("env_id", [SEQUENTIAL, ONE_SHOT])
def test_seeded_reset_is_reproducible(table: TableEvaluator, env_id: str) -> None:
    first, second = make(env_id, table), make(env_id, table)
    obs_a, _ = first.reset(seed=11)
    obs_b, _ = second.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    action = first.action_space.sample()
    step_a, step_b = first.step(action), second.step(action)
    np.testing.assert_array_equal(step_a[0], step_b[0])
    assert step_a[1:4] == step_b[1:4]


def test_bad_configuration_is_refused(table: TableEvaluator) -> None:
    with pytest.raises(ValueError, match="task_features"):
        StudentSearchEnv(table, TOY_SPACE, task_features=[1.5])
    with pytest.raises(ValueError, match="render_mode='human'"):
        StudentSearchEnv(table, TOY_SPACE, render_mode="human")
    with pytest.raises(TypeError, match="evaluator"):
        StudentSearchEnv(object(), TOY_SPACE)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.integers(-2, 6), min_size=1, max_size=10))
def test_random_action_sequences_never_raise(table: TableEvaluator, actions: list[int]) -> None:
    env = StudentSearchEnv(table, TOY_SPACE, reward=REWARD, task_features=[0.5])
    env.reset(seed=0)
    for action in actions:
        mask = env.action_masks()
        allowed = 0 <= action < len(mask) and mask[action]
        pending = env.pending_candidate(action)
        obs, reward, terminated, _, info = env.step(action)
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        assert info.get("candidate_hash") == (pending.content_hash() if pending is not None else None)
        if not allowed:
            assert terminated and reward == REWARD.penalty and info["invalid_reason"]
        if terminated:
            assert allowed or info["status"] == "invalid"
            env.reset()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.lists(st.integers(-1, 5), min_size=7, max_size=7))
def test_random_one_shot_actions_never_raise(table: TableEvaluator, action: list[int]) -> None:
    env = StudentSearchOneShotEnv(table, TOY_SPACE, reward=REWARD)
    env.reset(seed=0)
    pending = env.pending_candidate(np.array(action))
    _, reward, terminated, _, info = env.step(np.array(action))
    validity = TOY_SPACE.is_valid(action)
    assert terminated and np.isfinite(reward)
    assert pending == (TOY_SPACE.decode(action) if validity else None)
    assert info["candidate_hash"] == (pending.content_hash() if pending is not None else None)
    assert (info["invalid_reason"] is None) == bool(validity)
    if not validity:
        assert reward == REWARD.penalty and info["invalid_reason"] == validity.reason


@pytest.mark.parametrize(
    ("algorithm", "env_id", "deterministic"),
    [(PPO, ONE_SHOT, False), (PPO, SEQUENTIAL, True), (MaskablePPO, ONE_SHOT, False)],
    ids=["ppo-1", "ppo-seq", "mppo-1"],
)
def test_agents_learn_to_beat_the_random_policy_on_the_table(
    table: TableEvaluator, algorithm: type, env_id: str, deterministic: bool
) -> None:
    """After training, the policy's episodes (sampled, or greedy for the unmasked sequential env, which samples
    invalid prefixes for longer) earn more than the same policy untrained and than uniformly random actions."""
    model = algorithm("MlpPolicy", make(env_id, table), n_steps=64, batch_size=32, n_epochs=4, seed=0, device="cpu")
    episodes = 1 if deterministic else 100

    def policy(obs: np.ndarray, env: gym.Env) -> np.ndarray:
        return model.predict(obs, deterministic=deterministic)[0]

    untrained = np.mean(episode_returns(make(env_id, table), policy, episodes))
    model.learn(total_timesteps=1024)
    trained = np.mean(episode_returns(make(env_id, table), policy, episodes))
    uniform = np.mean(episode_returns(make(env_id, table), lambda obs, env: env.action_space.sample(), 200))
    assert trained > untrained + 0.3 and trained > uniform + 0.3, (trained, untrained, uniform)


def episode_returns(env: gym.Env, policy, episodes: int) -> list[float]:
    """The total reward of ``episodes`` episodes of ``policy(obs, env) -> action`` (seeded)."""
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs, env))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def test_maskable_ppo_trains_on_the_sequential_env_without_invalid_actions(table: TableEvaluator) -> None:
    env = make(SEQUENTIAL, table, reward=WeightedReward(w_acc=1.0, w_speed=0.1))
    model = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=320)
    obs, _ = env.reset(seed=1)
    terminated = False
    while not terminated:
        action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks(), deterministic=True)
        obs, _, terminated, _, info = env.step(action)
    assert info["invalid_reason"] is None
