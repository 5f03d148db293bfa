"""Differentiable NAS: the masked super-student, the search loop, the Ray Tune sweep and the ``dnas`` agent, on the
tiny teacher and the toy task (a few optimisation steps each; Ray with 2 CPUs, stopped after each test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray
import torch
from conftest import build_tiny_electra, build_tiny_roberta
from dnas_helpers import TINY_SEARCH
from ray_helpers import FAST_LATENCY, register_toy_task
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from distilsearch.envs.fidelity import Fidelity
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.families import UnsupportedModelError
from distilsearch.kdlib.students.importance import compute_importance
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search.agents import make_agent
from distilsearch.search.budget import BudgetedEvaluator
from distilsearch.search.dnas import train
from distilsearch.search.dnas.agent import STATE_FILE, DNASAgent, dnas_config_for, evaluate_outcomes, nearest_candidate
from distilsearch.search.dnas.supernet import ArchChoices, ArchParameters, SuperNet
from distilsearch.search.dnas.train import DNASConfig, SearchDiverged, search_with_evaluator
from distilsearch.search.dnas.tune import DNAS_DIR, SUMMARY_FILE, TrialOutcome, run_dnas_tune

TESTS_DIR = Path(__file__).resolve().parents[1]
CHOICES = ArchChoices(depths=(1, 2, 3, 4), heads=(1, 2, 4), ffn_sizes=(16, 32, 48, 64))
TOY_SHAPE = TeacherShape(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64)


class Recording:
    """A stand-in evaluator (no teacher): every candidate scores 0.8 validation accuracy against a 0.9 teacher (test
    accuracy differs, so a reward that read it would not be 0.8 / 0.9); ``seen`` lists them."""

    task, teacher_key, fidelity = "toy", "toy-teacher", "tiny"

    def __init__(self) -> None:
        self.seen: list[Candidate] = []

    def evaluate(self, candidate: Candidate) -> EvalResult:
        self.seen.append(candidate)
        return EvalResult(
            candidate=candidate,
            status="ok",
            validation_accuracy=0.8,
            teacher_validation_accuracy=0.9,
            accuracy=0.5,
            teacher_accuracy=0.95,
        )


@pytest.fixture(scope="module")
def toy(toy_teacher_and_task: tuple[Teacher, TaskData]) -> tuple[Teacher, TaskData]:
    return toy_teacher_and_task


@pytest.fixture(scope="module")
def evaluator(toy: tuple[Teacher, TaskData]) -> StudentEvaluator:
    teacher, task = toy
    return StudentEvaluator(teacher, task, device="cpu", latency=FAST_LATENCY, progress=False)


def calibration(teacher: BertForSequenceClassification) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, teacher.config.vocab_size, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def ray_env() -> dict[str, object]:
    """Trial processes import ``ray_helpers`` (the setup hook) and share this test's cache."""
    python_path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return {"env_vars": {"PYTHONPATH": python_path, "DISTILSEARCH_HOME": os.environ["DISTILSEARCH_HOME"]}}


# ---- the relaxation and the super-student ---------------------------------------------------------------------


def test_gumbel_relaxation_shapes_and_seeding() -> None:
    arch = ArchParameters(num_layers=4, choices=CHOICES)
    soft = arch.sample(0.5, torch.Generator().manual_seed(3))
    assert soft.depth.shape == (4,) and soft.heads.shape == (4, 3) and soft.ffn.shape == (4, 4)
    for weights in (soft.depth, soft.heads, soft.ffn):
        assert torch.allclose(weights.sum(dim=-1), torch.ones(weights.shape[:-1])) and (weights > 0).all()
    again = arch.sample(0.5, torch.Generator().manual_seed(3))
    assert torch.equal(soft.heads, again.heads) and torch.equal(soft.ffn, again.ffn)
    hard = arch.sample(0.5, torch.Generator().manual_seed(3), hard=True)
    assert set(hard.heads.detach().flatten().tolist()) <= {0.0, 1.0} and hard.heads.sum().item() == 4
    (hard.ffn[:, -1].sum() + hard.depth[-1]).backward()
    assert arch.ffn.grad is not None and arch.ffn.grad.abs().sum() > 0, "straight-through keeps gradients"
    uniform = arch.probabilities(1.0)
    assert torch.allclose(uniform.heads, torch.full((4, 3), 1 / 3))
    assert arch.choice_indices() == (3, [2] * 4, [3] * 4), "ties go to the largest size"
    with pytest.raises(ValueError, match=r"temperature=0 must be > 0"):
        arch.sample(0, torch.Generator())


@pytest.mark.parametrize("layer_selection", ["first", "uniform"])
def test_a_one_hot_super_student_is_the_cut_student(tiny_teacher: BertForSequenceClassification, layer_selection: str):
    batch = calibration(tiny_teacher)
    supernet = SuperNet(
        tiny_teacher,
        CHOICES,
        importance=compute_importance(tiny_teacher, batch),
        layer_selection=layer_selection,
        flops_point=(2, 16),
    ).eval()
    outputs = []
    for layers, heads, ffn in [(2, 2, 32), (3, 1, 48), (4, 4, 64)]:
        spec = StudentSpec(
            num_layers=layers, hidden_size=32, num_heads=heads, ffn_size=ffn, layer_selection=layer_selection
        )
        with torch.no_grad():
            masked = supernet(supernet.weights_for(spec), **batch)
            cut = cut_student(tiny_teacher, spec, batch)(**batch).logits
        torch.testing.assert_close(masked, cut, rtol=1e-5, atol=1e-6)
        assert float(supernet.flops_of(supernet.weights_for(spec))) == supernet.student_flops(spec)
        outputs.append(masked)
    assert not torch.allclose(outputs[0], outputs[2]), "the architectures should compute different functions"
    assert supernet.student_flops(StudentSpec.identity(tiny_teacher.config)) == supernet.teacher_flops
    assert all(torch.equal(a, b) for a, b in zip(tiny_teacher.parameters(), supernet.model.parameters(), strict=True))
    assert supernet.model.bert.encoder.layer[0] is not tiny_teacher.bert.encoder.layer[0], "the teacher is copied"


@pytest.mark.parametrize(("family", "layer_selection"), [("roberta", "first"), ("electra", "uniform")])
def test_a_one_hot_super_student_of_a_roberta_or_electra_teacher_is_the_cut_student(
    tmp_path: Path, family: str, layer_selection: str
) -> None:
    build = {"roberta": build_tiny_roberta, "electra": build_tiny_electra}[family]
    teacher = AutoModelForSequenceClassification.from_pretrained(build(tmp_path / family)).eval()
    batch = calibration(teacher)
    supernet = SuperNet(
        teacher, CHOICES, importance=compute_importance(teacher, batch), layer_selection=layer_selection
    ).eval()
    for layers, heads, ffn in [(1, 2, 16), (3, 4, 48)]:
        spec = StudentSpec(
            num_layers=layers, hidden_size=32, num_heads=heads, ffn_size=ffn, layer_selection=layer_selection
        )
        with torch.no_grad():
            masked = supernet(supernet.weights_for(spec), **batch)
            cut = cut_student(teacher, spec, batch)(**batch).logits
        torch.testing.assert_close(masked, cut, rtol=1e-5, atol=1e-6)
    relaxed = supernet.train()(supernet.new_arch_parameters().probabilities(), **batch)
    assert relaxed.shape == (4, 2) and bool(torch.isfinite(relaxed).all())


def test_a_distilbert_teacher_is_refused() -> None:
    config = DistilBertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    with pytest.raises(UnsupportedModelError, match="teacher: model_type 'distilbert' is not supported"):
        SuperNet(DistilBertForSequenceClassification(config), ArchChoices((1,), (1,), (16,)))


def test_expected_flops_is_differentiable_and_heads_cost_nothing(tiny_teacher: BertForSequenceClassification):
    supernet = SuperNet(tiny_teacher, CHOICES, head_selection="position", ffn_selection="position")
    arch = supernet.new_arch_parameters()
    expected = supernet.expected_flops(arch, 1.0)
    expected.backward()
    expected = float(expected.detach())
    assert arch.depth.grad.abs().sum() > 0 and arch.ffn.grad.abs().sum() > 0
    assert arch.heads.grad is None, "at the teacher's hidden size, the head count costs no FLOPs"
    smallest = StudentSpec(num_layers=1, hidden_size=32, num_heads=1, ffn_size=16, layer_selection="first")
    smallest = smallest.model_copy(update={"head_selection": "position", "ffn_selection": "position"})
    assert supernet.student_flops(smallest) < expected < supernet.teacher_flops
    with torch.no_grad():
        arch.depth.copy_(torch.tensor([9.0, 0.0, 0.0, 0.0]))
        arch.ffn[:, 0] = 9.0
        sharp = float(supernet.expected_flops(arch, 0.05))
    assert sharp == pytest.approx(supernet.student_flops(smallest), rel=1e-6)


def test_derive_gives_a_spec_cut_student_builds(tiny_teacher: BertForSequenceClassification) -> None:
    batch = calibration(tiny_teacher)
    supernet = SuperNet(tiny_teacher, CHOICES, importance=compute_importance(tiny_teacher, batch))
    arch = supernet.new_arch_parameters()
    with torch.no_grad():
        arch.depth.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # 3 layers
        arch.heads.copy_(torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]]))  # 1, 2, 1, (4 unused)
        arch.ffn.copy_(torch.tensor([[5.0, 0, 0, 0], [0, 0, 0, 5.0], [0, 0, 5.0, 0], [5.0, 0, 0, 0]]))  # 16, 64, 48
    spec = supernet.derive(arch)
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.ffn_size) == (3, 32, 2, 48)
    assert (spec.layer_selection, spec.head_selection, spec.ffn_selection) == ("first", "importance", "importance")
    student = cut_student(tiny_teacher, spec, batch)
    config = student.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (3, 2, 48)
    with pytest.raises(ValueError, match=r"num_heads=8, not one of the searched choices \(1, 2, 4\)"):
        supernet.weights_for(
            StudentSpec(num_layers=2, hidden_size=32, num_heads=8, ffn_size=16, layer_selection="first")
        )
    with pytest.raises(ValueError, match="layer_selection='uniform'; this super-student uses 'first'"):
        supernet.weights_for(StudentSpec(num_layers=2, hidden_size=32, num_heads=2, ffn_size=16))


# ---- the search loop ------------------------------------------------------------------------------------------


def test_a_large_beta_derives_a_cheaper_student(evaluator: StudentEvaluator) -> None:
    free = search_with_evaluator(evaluator, TINY_SEARCH.model_copy(update={"beta": 0.0}))
    costly = search_with_evaluator(evaluator, TINY_SEARCH.model_copy(update={"beta": 10.0}))
    assert costly.expected_flops_ratio < free.expected_flops_ratio
    assert costly.derived_flops_ratio <= free.derived_flops_ratio
    assert costly.spec.num_layers <= free.spec.num_layers
    for outcome in (free, costly):
        assert [report["step"] for report in outcome.history] == [2, 4]
        assert [report["final"] for report in outcome.history] == [False, True]
        assert 0 <= outcome.validation_accuracy <= 1 and 0 < outcome.derived_flops_ratio <= 1
        assert StudentSpec.model_validate_json(outcome.history[-1]["spec"]) == outcome.spec
        cut_student(
            evaluator.teacher_model,
            outcome.spec,
            train.calibration_batch(evaluator.tokenized(16)["train"], evaluator.pad_id, torch.device("cpu")),
        )
    assert [report["tau"] for report in costly.history] == [TINY_SEARCH.tau(1), pytest.approx(0.1)]
    repeated = search_with_evaluator(evaluator, TINY_SEARCH.model_copy(update={"beta": 10.0}))
    assert repeated.history == costly.history and repeated.arch_logits == costly.arch_logits


def test_joint_updates_with_hard_draws(evaluator: StudentEvaluator) -> None:
    config = TINY_SEARCH.model_copy(update={"alternating": False, "hard": True, "steps": 2, "layer_selection": "last"})
    outcome = search_with_evaluator(evaluator, config)
    assert [report["step"] for report in outcome.history] == [2] and outcome.spec.layer_selection == "last"
    assert len(outcome.arch_logits["heads"]) == 4 and outcome.seconds > 0


def test_a_nan_loss_is_a_clear_failure(evaluator: StudentEvaluator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "soft_target_loss", lambda *args, **kwargs: torch.tensor(float("nan")))
    with pytest.raises(SearchDiverged, match=r"became nan at step 1 of 4 \(beta=0.5, seed=0"):
        search_with_evaluator(evaluator, TINY_SEARCH)


def test_bad_settings_are_rejected(tiny_teacher: BertForSequenceClassification, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tau_end=2.0 must be <= tau_start=1.0"):
        DNASConfig(tau_end=2.0)
    with pytest.raises(ValueError, match="beta"):
        DNASConfig(beta=-1.0)
    with pytest.raises(ValueError, match=r"heads=\(1, 3\): \[3\] do not divide the teacher's hidden_size=32"):
        ArchChoices((1, 2), (1, 3), (16,)).check(tiny_teacher.config)
    with pytest.raises(ValueError, match=r"depths=\(1, 5\) exceeds the teacher's num_hidden_layers=4"):
        SuperNet(tiny_teacher, ArchChoices((1, 5), (1,), (16,)), head_selection="position", ffn_selection="position")
    with pytest.raises(ValueError, match=r"ffn_sizes=\(32, 16\) must be strictly increasing"):
        ArchChoices((1,), (1,), (32, 16))
    with pytest.raises(ValueError, match="head_selection='importance' needs the teacher's importance scores"):
        SuperNet(tiny_teacher, CHOICES)
    with pytest.raises(ValueError, match=r"betas=\(0.5, 0.5\) must be finite and distinct"):
        run_dnas_tune(None, (0.5, 0.5), (0,), TINY_SEARCH, tmp_path)
    with pytest.raises(ValueError, match=r"grace_period=3 must be in 2..2"):
        run_dnas_tune(None, (0.5,), (0,), TINY_SEARCH, tmp_path, asha=True, grace_period=3)
    with pytest.raises(ValueError, match=r"unknown DNAS options \['beta'\]"):
        DNASAgent(beta=1.0)
    assert not ray.is_initialized()


# ---- the agent's view of a search space -------------------------------------------------------------------------


def test_derived_specs_map_to_the_nearest_valid_candidate() -> None:
    space = SearchSpace(
        TOY_SHAPE,
        {"num_layers": [1, 2, 4], "num_heads": [2, 4], "ffn_size": [16, 64], "alpha": [0.3, 0.9]},
        {"hidden_size": 16, "layer_selection": "first", "max_steps": 5, "max_length": 16, "batch_size": 8},
    )
    config = dnas_config_for(space, {"steps": 3})
    assert (config.depths, config.heads, config.ffn_sizes) == ((1, 2, 4), (2, 4), (16, 64))
    assert (config.layer_selection, config.head_selection, config.ffn_selection) == ("first",) + ("importance",) * 2
    assert (config.alpha, config.max_length, config.batch_size, config.steps) == (0.3, 16, 8, 3)
    derived = StudentSpec(num_layers=3, hidden_size=32, num_heads=4, ffn_size=48, layer_selection="first")
    candidate, changes = nearest_candidate(space, derived)
    assert space.encode(candidate) and candidate.kd.max_steps == 5 and candidate.kd.alpha == 0.3
    spec = candidate.spec
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.ffn_size) == (4, 16, 4, 64)
    assert changes == {
        "num_layers": {"derived": 3, "evaluated": 4},
        "hidden_size": {"derived": 32, "evaluated": 16},
        "ffn_size": {"derived": 48, "evaluated": 64},
    }
    exact = StudentSpec(num_layers=2, hidden_size=16, num_heads=2, ffn_size=16, layer_selection="first")
    assert nearest_candidate(space, exact) == (space.decode(space.encode(nearest_candidate(space, exact)[0])), {})


def test_completed_trials_are_evaluated_in_order_until_the_budget_is_spent(tmp_path: Path) -> None:
    space = SearchSpace(TOY_SHAPE, {"num_layers": [1, 2, 4], "ffn_size": [16, 64]}, {"hidden_size": 32, "num_heads": 4})
    small = StudentSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_size=16)
    large = StudentSpec(num_layers=3, hidden_size=32, num_heads=4, ffn_size=64)
    outcomes = [
        TrialOutcome(0.0, 0, "completed", large, {"final": True}),
        TrialOutcome(0.5, 0, "stopped", small, {"final": False}),
        TrialOutcome(1.0, 0, "failed", None, {}, error="boom"),
        TrialOutcome(2.0, 0, "completed", large, {"final": True}),
        TrialOutcome(4.0, 0, "completed", small, {"final": True}),
    ]
    recording = Recording()
    budgeted = BudgetedEvaluator(recording, budget=1)
    records = evaluate_outcomes(budgeted, space, outcomes)
    assert [record["evaluated"] for record in records] == [True, False, False, True, False]
    assert [record.get("note") for record in records] == [
        None,
        "not evaluated: the trial stopped",
        "not evaluated: the trial failed",
        None,
        "not evaluated: the budget is spent",
    ]
    assert len(recording.seen) == 1 and budgeted.spent == 1 and budgeted.repeats == 1
    assert recording.seen[0].spec.num_layers == 4 and records[0]["changes"] == {
        "num_layers": {"derived": 3, "evaluated": 4}
    }
    assert records[0]["reward"] == pytest.approx(0.8 / 0.9) and records[2]["error"] == "boom"
    with pytest.raises(ValueError, match="Recording exposes none; pass teacher= to DNASAgent"):
        DNASAgent().run(budgeted, space, tmp_path)


class Stepped(Recording):
    """A :class:`Recording` that prices every evaluation at 60 training steps (for step budgets)."""

    def evaluate(self, candidate: Candidate, fidelity: object = None) -> EvalResult:
        return super().evaluate(candidate)

    def cost_steps(self, candidate: Candidate, fidelity: object = None) -> int:
        return 60


def test_a_step_budget_evaluates_the_trials_it_can_pay_for() -> None:
    space = SearchSpace(TOY_SHAPE, {"num_layers": [1, 2, 4], "ffn_size": [16, 64]}, {"hidden_size": 32, "num_heads": 4})
    small = StudentSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_size=16)
    large = StudentSpec(num_layers=4, hidden_size=32, num_heads=4, ffn_size=64)
    outcomes = [
        TrialOutcome(0.0, 0, "completed", small, {}),
        TrialOutcome(1.0, 0, "completed", large, {}),  # 60 more steps do not fit in the 40 left
        TrialOutcome(2.0, 0, "completed", small, {}),  # a repeat: free
    ]
    stepped = Stepped()
    budgeted = BudgetedEvaluator(stepped, budget=100, unit="steps")
    records = evaluate_outcomes(budgeted, space, outcomes)
    assert [record["evaluated"] for record in records] == [True, False, True]
    assert records[1]["note"] == "not evaluated: the budget is spent"
    assert len(stepped.seen) == 1 and budgeted.spent == 60 and budgeted.remaining == 40


def test_the_dnas_agent_is_registered() -> None:
    agent = make_agent("dnas", betas=(0.0, 1.0), steps=7)
    assert isinstance(agent, DNASAgent)
    assert agent.options() | {"steps": 7} == agent.options() and agent.options()["betas"] == [0.0, 1.0]


# ---- Ray Tune ---------------------------------------------------------------------------------------------------


def test_a_tune_sweep_traces_betas_and_restores(toy: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    teacher, _ = toy
    run_dir = tmp_path / "a_rather_long_run_folder_name_to_need_the_short_ray_link"
    settings = {"num_cpus": 2, "asha": True, "setup": register_toy_task, "runtime_env": ray_env()}
    outcomes = run_dnas_tune(teacher, (0.0, 10.0), (0,), TINY_SEARCH, run_dir, **settings)
    assert not ray.is_initialized()
    assert [(o.beta, o.seed) for o in outcomes] == [(0.0, 0), (10.0, 0)]
    assert [o.status for o in outcomes] == ["completed", "completed"], [o.error for o in outcomes]
    free, costly = outcomes
    assert costly.metrics["expected_flops_ratio"] < free.metrics["expected_flops_ratio"]
    assert costly.metrics["derived_flops_ratio"] <= free.metrics["derived_flops_ratio"]
    assert all(0 <= o.metrics["validation_accuracy"] <= 1 and o.metrics["step"] == 4 for o in outcomes)
    (experiment,) = (run_dir / DNAS_DIR).iterdir()
    summary = json.loads((experiment / SUMMARY_FILE).read_text())
    assert [trial["spec"] for trial in summary["trials"]] == [o.spec.model_dump(mode="json") for o in outcomes]
    results = sorted(experiment.glob("tune-*/*/result.json"))
    assert len(results) == 2 and [len(path.read_text().splitlines()) for path in results] == [2, 2]
    assert (run_dir / "ray_tmp").stat().st_mode & 0o777 == 0o700

    restored = run_dnas_tune(teacher, (0.0, 10.0), (0,), TINY_SEARCH, run_dir, **settings)
    assert [(o.spec, o.status, o.metrics) for o in restored] == [(o.spec, o.status, o.metrics) for o in outcomes]
    assert list((run_dir / DNAS_DIR).iterdir()) == [experiment]
    assert [path.name for path in experiment.glob("tune-*")] == ["tune-1"], "no new Tune experiment"
    assert [len(path.read_text().splitlines()) for path in results] == [2, 2], "finished trials are not rerun"
    assert not ray.is_initialized()


def test_the_dnas_agent_evaluates_derived_students_within_budget(toy: tuple[Teacher, TaskData], tmp_path: Path) -> None:
    teacher, task = toy
    live = LiveEvaluator(
        task,
        teacher=teacher,
        fidelity=Fidelity("tiny", max_steps=3),
        device="cpu",
        latency=FAST_LATENCY,
        progress=False,
    )
    space = SearchSpace(
        TeacherShape.from_config(teacher.load_model().config),
        {"num_layers": [1, 2, 4], "ffn_size": [16, 64]},
        {"hidden_size": 32, "num_heads": 4, "layer_selection": "first", "max_length": 16, "batch_size": 16},
    )
    budgeted = BudgetedEvaluator(live, budget=1)
    agent = DNASAgent(
        betas=(0.0, 10.0),
        num_cpus=2,
        setup=register_toy_task,
        runtime_env=ray_env(),
        **TINY_SEARCH.model_dump(include={"steps", "weight_lr", "arch_lr", "report_every", "validation_rows"}),
    )
    agent.run(budgeted, space, tmp_path / "run", seed=0)
    assert not ray.is_initialized()
    assert budgeted.spent == 1 and live.distillations == 1
    record = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    first, second = record["trials"]
    assert first["evaluated"] and first["result_status"] == "ok" and first["changes"] == {}
    assert budgeted.history[0].candidate.model_dump(mode="json") == first["candidate"]
    if second["candidate"] == first["candidate"]:
        assert second["evaluated"] and budgeted.repeats == 1, "a repeated candidate costs no budget"
    else:
        assert not second["evaluated"] and second["note"] == "not evaluated: the budget is spent"
    assert record["config"]["depths"] == [1, 2, 4] and record["config"]["heads"] == [4]
    assert KDConfig.model_validate(first["candidate"]["kd"]).max_length == 16
