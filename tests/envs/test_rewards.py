import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distilsearch.envs.rewards import (
    OBJECTIVES,
    REWARDS,
    ConstrainedReward,
    MnasNetReward,
    Reward,
    WeightedReward,
    make_reward,
    objectives,
    register_reward,
    result_metrics,
)
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.kdlib.students.specs import StudentSpec

CANDIDATE = Candidate(spec=StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64))


def point(batch: int, seq_len: int, median_ms: float, teacher_ms: float) -> LatencyPoint:
    return LatencyPoint(
        batch=batch,
        seq_len=seq_len,
        median_ms=median_ms,
        p10_ms=median_ms,
        p90_ms=median_ms,
        teacher_median_ms=teacher_ms,
        speedup=teacher_ms / median_ms,
        theoretical_speedup=2.0,
    )


def ok_result(accuracy: float = 0.8, latency_ms: float = 2.0, ood: float = 0.6) -> EvalResult:
    """A result whose selection metrics (validation, OOD dev) are ``accuracy`` and ``ood``; its test metrics differ
    on purpose, so a reward or objective that read them would score differently."""
    return EvalResult(
        candidate=CANDIDATE,
        status="ok",
        validation_accuracy=accuracy,
        teacher_validation_accuracy=0.9,
        ood_dev_accuracy={"a": ood},
        teacher_ood_dev_accuracy={"a": 0.75},
        accuracy=0.5,
        teacher_accuracy=0.95,
        ood_accuracy={"a": 0.3},
        teacher_ood_accuracy={"a": 0.9},
        latency=[point(1, 64, latency_ms, 8.0)],
        params_total=1000,
    )


def test_weighted_reward_combines_retentions_and_log_speedup() -> None:
    reward = WeightedReward(w_acc=1.0, w_ood=0.5, w_speed=0.2)
    expected = 0.8 / 0.9 + 0.5 * 0.6 / 0.75 + 0.2 * math.log(4.0)
    assert reward(ok_result()) == pytest.approx(expected)
    assert reward.platform_dependent and not reward.deterministic
    plain = WeightedReward()
    assert plain(ok_result()) == pytest.approx(0.8 / 0.9) and plain.deterministic and not plain.platform_dependent
    assert plain.range == (-1.0, 2.0) and plain.penalty == -1.0
    assert reward(ok_result().blinded()) == reward(ok_result())  # test fields are never read


def test_mnasnet_reward_scales_accuracy_by_latency() -> None:
    reward = MnasNetReward(target_latency_ms=4.0)
    assert reward(ok_result(latency_ms=2.0)) == pytest.approx(0.8 * 0.5**-0.07)
    assert reward(ok_result(latency_ms=4.0)) == pytest.approx(0.8)
    assert reward.penalty == -1.0 and reward.platform_dependent and not reward.deterministic


def test_constrained_reward_is_accuracy_within_budget_else_overshoot() -> None:
    reward = ConstrainedReward(latency_budget_ms=3.0)
    assert reward(ok_result(latency_ms=2.0)) == pytest.approx(0.8)
    assert reward(ok_result(latency_ms=4.5)) == pytest.approx(-0.5)
    assert reward(ok_result(latency_ms=30.0)) == -1.0
    assert reward.penalty == -2.0 and reward.range == (-2.0, 1.0)


def test_failed_and_invalid_results_earn_the_penalty() -> None:
    for status in ("failed", "invalid"):
        result = EvalResult(candidate=CANDIDATE, status=status, error="boom")
        assert WeightedReward(penalty=-3.0)(result) == -3.0
        assert ConstrainedReward(1.0)(result) == -2.0
        assert np.isnan(objectives(result)).all()


def test_missing_metrics_raise_naming_them() -> None:
    no_latency = ok_result().model_copy(update={"latency": [point(32, 128, 9.0, 90.0)]})
    with pytest.raises(ValueError, match=r"needs the latency at \(batch, seq_len\)=\(1, 64\).*\[\(32, 128\)\]"):
        MnasNetReward(target_latency_ms=4.0)(no_latency)
    assert MnasNetReward(target_latency_ms=4.0, point=(32, 128))(no_latency) > 0
    with pytest.raises(ValueError, match="needs ood_dev_retention"):
        WeightedReward(w_ood=1.0)(ok_result().model_copy(update={"ood_dev_accuracy": {}}))
    with pytest.raises(ValueError, match="needs validation_retention"):
        WeightedReward()(ok_result().model_copy(update={"teacher_validation_accuracy": None}))
    with pytest.raises(ValueError, match="needs validation_accuracy"):
        ConstrainedReward(latency_budget_ms=3.0)(ok_result().model_copy(update={"validation_accuracy": None}))


def test_objectives_and_metrics() -> None:
    result = ok_result()
    assert OBJECTIVES == ("validation_accuracy", "ood_dev_accuracy", "neg_latency_ms", "neg_params")
    np.testing.assert_allclose(objectives(result), [0.8, 0.6, -2.0, -1000.0])
    np.testing.assert_array_equal(objectives(result.blinded()), objectives(result))
    assert np.isnan(objectives(result, point=(32, 128))[2])
    metrics = result_metrics(result)
    assert metrics["validation_retention"] == pytest.approx(0.8 / 0.9) and metrics["speedup/1x64"] == 4.0
    assert metrics["ood_dev_accuracy/a"] == 0.6 and metrics["ood_dev_retention"] == pytest.approx(0.6 / 0.75)
    assert metrics["retention"] == pytest.approx(0.5 / 0.95) and metrics["ood_accuracy/a"] == 0.3
    assert metrics["status"] == "ok" and metrics["flops"] is None
    blind = result_metrics(result.blinded())
    assert blind["accuracy"] is None and blind["retention"] is None and "ood_accuracy/a" not in blind
    assert blind["validation_retention"] == metrics["validation_retention"]


def test_registry_builds_by_name_with_clear_errors() -> None:
    assert isinstance(make_reward("mnasnet", target_latency_ms=5.0), MnasNetReward)
    assert set(REWARDS) == {"weighted", "mnasnet", "constrained"}
    with pytest.raises(ValueError, match=r"unknown reward 'speed'; registered rewards: \['constrained'"):
        make_reward("speed")
    with pytest.raises(ValueError, match=r"make_reward\('mnasnet', \.\.\.\).*target_latency_ms"):
        make_reward("mnasnet")
    with pytest.raises(ValueError, match="w_acc=nan must be a finite number"):
        make_reward("weighted", w_acc=math.nan)
    with pytest.raises(ValueError, match=r"point=\(0, 64\)"):
        WeightedReward(point=(0, 64))

    class Other(WeightedReward):
        name = "weighted"

    with pytest.raises(ValueError, match="already registered"):
        register_reward(Other)


REWARD_FACTORIES = [
    lambda: WeightedReward(),
    lambda: WeightedReward(w_acc=0.5, w_ood=0.5, w_speed=0.3),
    lambda: WeightedReward(w_acc=1.0, w_speed=-0.2, penalty=0.5),
    lambda: MnasNetReward(target_latency_ms=3.0),
    lambda: MnasNetReward(target_latency_ms=3.0, w=0.3),
    lambda: ConstrainedReward(latency_budget_ms=3.0),
]


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(0, len(REWARD_FACTORIES) - 1),
    status=st.sampled_from(["ok", "ok", "ok", "failed", "invalid"]),
    accuracy=st.floats(0.0, 1.0),
    teacher=st.floats(0.01, 1.0),
    ood=st.floats(0.0, 1.0),
    latency=st.floats(1e-4, 1e4),
    teacher_ms=st.floats(1e-4, 1e4),
)
def test_declared_ranges_hold_on_random_results(
    index: int, status: str, accuracy: float, teacher: float, ood: float, latency: float, teacher_ms: float
) -> None:
    reward: Reward = REWARD_FACTORIES[index]()
    result = EvalResult(
        candidate=CANDIDATE,
        status=status,
        validation_accuracy=accuracy,
        teacher_validation_accuracy=teacher,
        ood_dev_accuracy={"a": ood},
        teacher_ood_dev_accuracy={"a": teacher},
        latency=[point(1, 64, latency, teacher_ms)],
    )
    low, high = reward.range
    value = reward(result)
    assert math.isfinite(value) and low <= value <= high
