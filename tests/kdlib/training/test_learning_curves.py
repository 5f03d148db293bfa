"""Learning curves, rungs (stop_after), OOD dev/test halves and step-priced requests."""

from __future__ import annotations

from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from ray_helpers import FAST_LATENCY, toy_candidate
from transformers import AutoTokenizer, BertForSequenceClassification

from distilsearch.envs.evaluators import TableEvaluator, write_table
from distilsearch.envs.fidelity import Fidelity, fidelity_steps, get_fidelity, rung, rung_ladder
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.kdlib.data.splits import split_halves
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training import kd_terms
from distilsearch.kdlib.training.distiller import curve_checkpoints, distill
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search.agents import make_agent
from distilsearch.search.budget import BudgetedEvaluator, BudgetExhausted
from distilsearch.search.pareto import frontier, most_trained

CPU = torch.device("cpu")


@pytest.fixture
def sets(toy_task: str, tiny_bert_dir: Path) -> dict[str, datasets.Dataset]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return tokenize_task(load_task(toy_task, progress=False), tokenizer, 16, progress=False)


def student(teacher: BertForSequenceClassification) -> BertForSequenceClassification:
    spec = StudentSpec.identity(teacher.config, num_layers=2, hidden_size=16, num_heads=2, ffn_size=32)
    return cut_student(
        teacher,
        spec.model_copy(
            update={"head_selection": "position", "ffn_selection": "position", "hidden_selection": "position"}
        ),
    )


def run(teacher, sets, kd: KDConfig, **options):
    settings = {"teacher_logits": None, "pad_id": 0, "device": CPU, "progress": False} | options
    return distill(teacher, student(teacher), sets["train"], sets["validation"], kd, **settings)


def test_checkpoints_are_geometric_and_end_at_the_last_step() -> None:
    assert curve_checkpoints(2000) == (25, 50, 100, 200, 400, 800, 1600, 2000)
    assert curve_checkpoints(25) == (25,) and curve_checkpoints(7) == (7,) and curve_checkpoints(50) == (25, 50)
    with pytest.raises(ValueError, match="total_steps=0"):
        curve_checkpoints(0)


def test_the_curve_scores_validation_and_the_curve_sets(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    kd = KDConfig(max_steps=12, batch_size=16, lr=1e-3)
    outcome = run(tiny_teacher, sets, kd, curve_sets={"echo": sets["ood-dev/echo"]}, curve_steps=(3, 6))
    assert [point.step for point in outcome.learning_curve] == [3, 6, 12]
    assert all(set(point.ood_dev_accuracy) == {"echo"} for point in outcome.learning_curve)
    seconds = [point.train_seconds for point in outcome.learning_curve]
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert 0 < outcome.curve_seconds <= outcome.evaluation_seconds < outcome.seconds
    assert outcome.learning_curve[-1].validation_accuracy == outcome.validation_history[-1][1]


def test_a_rung_is_the_first_steps_of_the_full_schedule(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    kd = KDConfig(max_steps=12, batch_size=16, lr=1e-3, hidden_weight=1.0)  # an intermediate stage, then prediction
    full = run(copy_of(tiny_teacher), sets, kd, curve_steps=(2, 4, 6, 8))
    cut = run(copy_of(tiny_teacher), sets, kd, curve_steps=(2, 4, 6, 8), stop_after=8)
    assert cut.steps == 8 and full.steps == 12
    assert [(p.step, p.validation_accuracy) for p in cut.learning_curve] == [
        (p.step, p.validation_accuracy) for p in full.learning_curve if p.step <= 8
    ]
    assert cut.stage_steps == {"intermediate": 6, "prediction": 2} and full.stage_steps["prediction"] == 6
    with pytest.raises(ValueError, match="stop_after must be a positive int"):
        run(tiny_teacher, sets, kd, stop_after=0)


def copy_of(model: BertForSequenceClassification) -> BertForSequenceClassification:
    clone = BertForSequenceClassification(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_ood_halves_are_disjoint_stable_and_cover_the_set() -> None:
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(200)], "label": [i % 2 for i in range(200)]})
    dev, test = split_halves(frame, ("text",))
    assert len(dev) + len(test) == 200 and not set(dev["text"]) & set(test["text"]) and 70 < len(dev) < 130
    shuffled_dev, _ = split_halves(frame.sample(frac=1.0, random_state=3), ("text",))
    assert set(shuffled_dev["text"]) == set(dev["text"])


def test_tasks_carry_ood_dev_and_test_halves(toy_task: str) -> None:
    task = load_task(toy_task, progress=False)
    assert set(task.ood) == set(task.ood_dev) == {"echo"}
    assert len(task.ood["echo"]) + len(task.ood_dev["echo"]) == 8
    assert task.ood_fingerprints["echo"] != task.ood_dev_fingerprints["echo"]
    assert {"ood/echo", "ood-dev/echo", "validation", "test"} == set(task.evaluation_sets())


def test_rung_levels_and_ladders() -> None:
    assert get_fidelity("rung-40") == rung(40) == Fidelity("rung-40", stop_after=40)
    assert rung_ladder(25, 2000, 3) == [25, 75, 225, 675, 2000] and rung_ladder(100, 100, 3) == [100]
    candidate = toy_candidate(max_steps=200)
    assert fidelity_steps(candidate, rung(40), train_size=100) == 40
    assert fidelity_steps(candidate, rung(500), train_size=100) == 200
    assert fidelity_steps(candidate, "low", train_size=100) == 150
    with pytest.raises(ValueError, match="reserved for rung"):
        get_fidelity(Fidelity("rung-40", max_steps=40))
    with pytest.raises(ValueError, match="stop_after truncates"):
        Fidelity("odd", max_steps=40, stop_after=4)
    with pytest.raises(ValueError, match="eta=1"):
        rung_ladder(10, 100, 1)


def test_live_rungs_cost_their_steps_and_are_stored_apart(
    toy_teacher_and_task: tuple[Teacher, TaskData], tmp_path: Path
) -> None:
    teacher, task = toy_teacher_and_task
    evaluator = LiveEvaluator(
        task, teacher=teacher, fidelity="full", device="cpu", latency=FAST_LATENCY, progress=False
    )
    candidate = toy_candidate(max_steps=30)
    budgeted = BudgetedEvaluator(evaluator, 40, unit="steps", history_path=tmp_path / "ledger.jsonl")
    assert budgeted.cost(candidate, rung(10)) == 10 and budgeted.cost(candidate) == 30
    low = budgeted.evaluate(candidate, rung(10))
    assert low.train_steps == 10 and [p.step for p in low.learning_curve] == [10] and low.accuracy is None
    assert budgeted.spent == 10 and budgeted.cost(candidate, rung(10)) == 0
    full = budgeted.evaluate(candidate)
    assert full.train_steps == 30 and budgeted.spent == 40
    assert [p.step for p in full.learning_curve] == [25, 30]
    with pytest.raises(BudgetExhausted, match="budget of 40 steps cannot pay"):
        budgeted.evaluate(candidate, rung(20))
    resumed = BudgetedEvaluator(evaluator, 60, unit="steps", history_path=tmp_path / "ledger.jsonl")
    assert resumed.spent == 40 and [entry.fidelity for entry in resumed.history] == ["rung-10", "full"]
    assert [entry.cost for entry in resumed.history] == [10, 30]
    full_results = budgeted.results()
    assert full_results[1].accuracy is not None and full_results[1].majority_validation_accuracy is not None
    assert most_trained(full_results) == [full_results[1]]


def test_a_table_replays_rungs_from_learning_curves(toy_table_evaluator: TableEvaluator, tmp_path: Path) -> None:
    result = toy_table_evaluator.results()[0]
    at_50 = toy_table_evaluator.evaluate(result.candidate, rung(50))
    assert at_50.train_steps == 50 and at_50.accuracy is None
    assert at_50.validation_accuracy == max(p.validation_accuracy for p in result.learning_curve if p.step <= 50)
    assert toy_table_evaluator.cost_steps(result.candidate, rung(50)) == 50
    assert toy_table_evaluator.cost_steps(result.candidate) == 100
    with pytest.raises(ValueError, match="no learning-curve checkpoint at step 60"):
        toy_table_evaluator.evaluate(result.candidate, rung(60))
    copy = TableEvaluator(write_table([result], tmp_path / "one.parquet", task="t", teacher_key="k", fidelity="f"))
    assert copy.evaluate(result.candidate) == result


def test_students_at_the_majority_rate_are_on_no_frontier(toy_table_evaluator: TableEvaluator) -> None:
    results = [r for r in toy_table_evaluator.results() if r.status == "ok"][:6]
    stuck = results[0].model_copy(update={"majority_validation_accuracy": results[0].validation_accuracy})
    useful = [r.model_copy(update={"majority_validation_accuracy": 0.5}) for r in results[1:]]
    chosen = frontier([stuck, *useful], ("accuracy", "latency"))
    assert stuck not in chosen and chosen


def test_joint_training_adds_the_intermediate_losses_to_the_prediction_stage(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = kd_terms.hidden_state_loss

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kd_terms, "hidden_state_loss", counted)
    joint = KDConfig(max_steps=6, batch_size=16, lr=1e-3, hidden_weight=1.0, intermediate_share=0.0)
    outcome = run(copy_of(tiny_teacher), sets, joint, curve_steps=(2, 4))
    assert outcome.stage_steps == {"prediction": 6} and outcome.teacher_forward_batches == 6
    assert len(calls) == 6 * 2  # every prediction step computes the hidden-state loss of both student layers
    staged = run(copy_of(tiny_teacher), sets, joint.model_copy(update={"intermediate_share": 0.5}))
    assert staged.stage_steps == {"intermediate": 3, "prediction": 3}
    plain = run(copy_of(tiny_teacher), sets, joint.model_copy(update={"hidden_weight": 0.0}))
    assert plain.stage_steps == {"prediction": 6}
    assert [p.validation_accuracy for p in outcome.learning_curve] != [
        p.validation_accuracy for p in plain.learning_curve
    ] or (outcome.best_validation_accuracy is not None)
    with pytest.raises(ValueError, match="intermediate_share > 0"):
        run(tiny_teacher, sets, joint.model_copy(update={"progressive": True}))


def test_successive_halving_climbs_live_rungs(toy_teacher_and_task: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    teacher, task = toy_teacher_and_task
    evaluator = LiveEvaluator(
        task, teacher=teacher, fidelity="full", device="cpu", latency=FAST_LATENCY, progress=False
    )
    space = SearchSpace(
        TeacherShape(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64),
        {"num_layers": [1, 2, 3], "ffn_size": [32, 64]},
        {"hidden_size": 32, "num_heads": 4, "max_steps": 30, "batch_size": 16, "max_length": 16, "lr": 1e-3},
    )
    budgeted = BudgetedEvaluator(evaluator, 60, unit="steps", history_path=tmp_path / "ledger.jsonl")
    make_agent("successive-halving", min_steps=10, eta=3).run(budgeted, space, tmp_path, seed=0)
    assert [entry.fidelity for entry in budgeted.history] == ["rung-10"] * 3 + ["rung-30"]
    assert budgeted.spent == 60 and [entry.result.train_steps for entry in budgeted.history] == [10, 10, 10, 30]
    low = [entry for entry in budgeted.history if entry.fidelity == "rung-10"]
    best = max(low, key=lambda entry: (entry.reward, -entry.index))
    assert budgeted.history[-1].candidate == best.candidate
