"""SurrogateEvaluator and surrogate_quality on the toy benchmark rows of ``toy_table`` (TOY TEST DATA)."""

from __future__ import annotations

import json

import pytest
from toy_table import TOY_TASK, TOY_TEACHER_KEY, toy_results

from distilsearch.envs.evaluators import Evaluator
from distilsearch.envs.surrogate import MODEL, SurrogateEvaluator, is_predicted, surrogate_quality
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

ROWS = toy_results()[::2]  # half of the toy rows keep the fits fast


def outside_candidate(seed: int = 0) -> Candidate:
    """A candidate that is not among the toy rows (alpha 0.7 is not a choice of TOY_SPACE)."""
    return Candidate(
        spec=StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64),
        kd=KDConfig(alpha=0.7, max_steps=100, seed=seed),
    )


@pytest.fixture(scope="module")
def surrogate() -> SurrogateEvaluator:
    return SurrogateEvaluator(TOY_TASK, TOY_TEACHER_KEY).fit(ROWS)


def test_surrogate_results_are_labelled_predictions(surrogate: SurrogateEvaluator) -> None:
    result = surrogate.evaluate(outside_candidate())
    assert isinstance(surrogate, Evaluator) and surrogate.fidelity == "surrogate"
    assert is_predicted(result) and not any(is_predicted(row) for row in ROWS)
    label = result.provenance["surrogate"]
    ok = [row for row in ROWS if row.status == "ok"]
    assert label["model"] == MODEL and label["rows"] == len(ok) and len(label["rows_hash"]) == 16
    assert {"validation_accuracy", "accuracy", "ood_dev_accuracy/echo", "log_latency_ms/1x64"} <= set(label["targets"])
    assert 0.0 <= result.accuracy <= 1.0 and set(result.ood_accuracy) == {"echo"}
    assert result.speedup(1, 64) > 1.0 and result.params_total > 0 and result.retention is not None
    # what rewards read: validation and OOD-dev predictions with the teacher's values on the same sets
    assert 0.0 <= result.validation_accuracy <= 1.0 and set(result.ood_dev_accuracy) == {"echo"}
    assert result.validation_retention is not None and result.ood_dev_retention is not None


def test_latency_spread_is_the_rows_spread_around_the_median(surrogate: SurrogateEvaluator) -> None:
    for point in surrogate.evaluate(outside_candidate()).latency:  # every toy row has p10 = 0.95 and p90 = 1.05 x
        assert point.p10_ms / point.median_ms == pytest.approx(0.95)
        assert point.p90_ms / point.median_ms == pytest.approx(1.05)


def test_predictions_are_deterministic(surrogate: SurrogateEvaluator) -> None:
    again = SurrogateEvaluator(TOY_TASK, TOY_TEACHER_KEY).fit(ROWS)
    assert again.predict([outside_candidate()]) == surrogate.predict([outside_candidate()])


def test_the_seed_is_noise_not_a_feature() -> None:
    """Re-runs of some rows with seed 1 and 0.1 lower accuracy move the prediction for every seed alike."""
    reruns = [
        row.model_copy(
            update={
                "candidate": row.candidate.model_copy(update={"kd": row.candidate.kd.model_copy(update={"seed": 1})}),
                "validation_accuracy": row.validation_accuracy - 0.1,
            }
        )
        for row in ROWS[:40]
        if row.status == "ok"
    ]
    surrogate = SurrogateEvaluator(TOY_TASK, TOY_TEACHER_KEY).fit([*ROWS, *reruns])
    assert surrogate.predict([outside_candidate(seed=1)]) == surrogate.predict([outside_candidate(seed=0)])


def test_bigger_students_are_predicted_more_accurate_and_slower(surrogate: SurrogateEvaluator) -> None:
    small, big = (
        Candidate(spec=StudentSpec(num_layers=n, hidden_size=h, num_heads=4, ffn_size=64), kd=KDConfig(max_steps=100))
        for n, h in ((1, 16), (4, 32))
    )
    predicted_small, predicted_big = surrogate.predict([small, big])
    assert predicted_big["validation_accuracy"] > predicted_small["validation_accuracy"]
    assert predicted_big["log_latency_ms/1x64"] > predicted_small["log_latency_ms/1x64"]


def test_surrogate_needs_fitting_and_enough_rows() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        SurrogateEvaluator(TOY_TASK, TOY_TEACHER_KEY).evaluate(outside_candidate())
    with pytest.raises(ValueError, match="at least 2 rows"):
        SurrogateEvaluator(TOY_TASK, TOY_TEACHER_KEY).fit(toy_results()[:1])


def test_quality_beats_predicting_the_mean_on_held_out_rows() -> None:
    quality = surrogate_quality(ROWS, folds=4, seed=0)
    by_target = {target.target: target for target in quality.targets}
    assert quality.rows == sum(row.status == "ok" for row in ROWS) and quality.folds == 4
    assert set(by_target) >= {
        "accuracy",
        "validation_accuracy",
        "ood_accuracy/echo",
        "ood_dev_accuracy/echo",
        "log_latency_ms/1x64",
        "log_latency_ms/32x128",
        "log_params_total",
    }
    for name, target in by_target.items():
        assert target.rows == quality.rows and target.mae < target.mean_mae, name
        assert target.kendall_tau is not None and target.kendall_tau > 0.6, name
    assert by_target["validation_accuracy"].mae < 0.02


def test_quality_report_as_markdown_and_plain_data() -> None:
    quality = surrogate_quality(toy_results()[::6], folds=2, seed=1)
    markdown = quality.to_markdown()
    assert "2-fold cross-validation" in markdown
    assert "| target | rows | Kendall tau | MAE | MAE of the mean |" in markdown
    assert all(f"| {target.target} | {target.rows} |" in markdown for target in quality.targets)
    data = json.loads(json.dumps(quality.to_dict()))
    assert data["model"] == MODEL and data["seed"] == 1 and len(data["targets"]) == len(quality.targets)


def test_quality_needs_enough_rows_for_its_folds() -> None:
    with pytest.raises(ValueError, match="at least 10 ok rows"):
        surrogate_quality(toy_results()[:9], folds=5)
    with pytest.raises(ValueError, match="folds >= 2"):
        surrogate_quality(toy_results(), folds=1)


def test_cross_validation_keeps_twins_and_seeds_of_one_student_in_one_fold() -> None:
    from distilsearch.envs.surrogate import student_group
    from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

    spec = StudentSpec(num_layers=2, hidden_size=96, num_heads=12, ffn_size=384)
    base = Candidate(spec=spec, kd=KDConfig(alpha=0.5))
    int8 = base.model_copy(update={"spec": spec.model_copy(update={"weight_bits": 8})})
    reseeded = base.model_copy(update={"kd": base.kd.model_copy(update={"seed": 1})})
    ternary = base.model_copy(update={"spec": spec.model_copy(update={"weight_bits": 2})})
    other = base.model_copy(update={"kd": base.kd.model_copy(update={"alpha": 0.9})})
    assert student_group(base) == student_group(int8) == student_group(reseeded)
    assert len({student_group(base), student_group(ternary), student_group(other)}) == 3
