"""The distiller on the tiny teacher and the toy task: stages, budget, teacher use, seeding, failure, learning."""

from __future__ import annotations

import copy
from itertools import pairwise
from pathlib import Path

import datasets
import pytest
import torch
from torch import Tensor
from transformers import AutoTokenizer, BertForSequenceClassification

from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.students.cutting import cut_student, trim_vocabulary
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.students.vocabulary import vocabulary_map
from distilsearch.kdlib.training import distiller
from distilsearch.kdlib.training.distiller import DistillationOutcome, Stage, distill, plan_stages
from distilsearch.kdlib.training.finetune import FineTuneRecipe, fine_tune
from distilsearch.kdlib.training.losses import HiddenProjection, soft_target_loss
from distilsearch.kdlib.training.teacher_outputs import teacher_logits
from distilsearch.kdlib.training.temperature import temperatures

CPU = torch.device("cpu")
ALL_INTERMEDIATE = {"hidden_weight": 1.0, "attention_weight": 1.0, "embedding_weight": 1.0}


@pytest.fixture
def sets(toy_task: str, tiny_bert_dir: Path) -> dict[str, datasets.Dataset]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return tokenize_task(load_task(toy_task, progress=False), tokenizer, 16, progress=False)


def small_student(teacher: BertForSequenceClassification, **changes: object) -> BertForSequenceClassification:
    """A 2-layer, half-width student cut from the teacher by position."""
    spec = StudentSpec.identity(
        teacher.config,
        num_layers=2,
        hidden_size=16,
        num_heads=2,
        ffn_size=32,
        head_selection="position",
        ffn_selection="position",
        hidden_selection="position",
        **changes,
    )
    return cut_student(teacher, spec)


def config(**fields: object) -> KDConfig:
    return KDConfig(**({"max_steps": 4, "batch_size": 16, "lr": 1e-3} | fields))


def run(
    teacher: BertForSequenceClassification,
    student: BertForSequenceClassification,
    sets: dict[str, datasets.Dataset],
    kd: KDConfig,
    **kwargs: object,
) -> DistillationOutcome:
    options = {"teacher_logits": None, "pad_id": 0, "device": CPU, "progress": False} | kwargs
    return distill(teacher, student, sets["train"], sets["validation"], kd, **options)


def snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(before: dict[str, Tensor], after: dict[str, Tensor]) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the teacher ran although cached logits sufficed")


# --- stage plan and budget ----------------------------------------------------------------------------------


def test_budget_is_max_steps_or_epochs_over_the_train_set() -> None:
    assert plan_stages(config(max_steps=10), num_student_layers=2, train_size=100) == (
        Stage("prediction", "prediction", 10),
    )
    by_epochs = KDConfig(epochs=1.5, batch_size=16)
    assert plan_stages(by_epochs, num_student_layers=2, train_size=100)[-1].steps == 11  # ceil(1.5 * 7)


def test_stages_split_the_budget() -> None:
    kd = config(max_steps=13, general_distillation_steps=3, hidden_weight=1.0)
    assert plan_stages(kd, num_student_layers=2, train_size=100) == (
        Stage("general", "general", 3),
        Stage("intermediate", "intermediate", 5),
        Stage("prediction", "prediction", 5),
    )
    progressive = config(max_steps=12, progressive=True, embedding_weight=1.0, hidden_weight=1.0)
    assert plan_stages(progressive, num_student_layers=3, train_size=100) == (
        Stage("progressive-embeddings", "intermediate", 2, 0),
        Stage("progressive-layer-1", "intermediate", 2, 1),
        Stage("progressive-layer-2", "intermediate", 1, 2),
        Stage("progressive-layer-3", "intermediate", 1, 3),
        Stage("prediction", "prediction", 6),
    )
    value_only = config(max_steps=4, progressive=True, value_relation_weight=1.0)
    assert [stage.name for stage in plan_stages(value_only, num_student_layers=3, train_size=100)] == [
        "progressive-layer-3",
        "prediction",
    ]


def test_impossible_plans_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="general_distillation_steps=4 leaves no step"):
        plan_stages(config(general_distillation_steps=4, hidden_weight=1.0), num_student_layers=2, train_size=100)
    with pytest.raises(ValueError, match="general_distillation_steps=2 needs an intermediate loss"):
        plan_stages(config(general_distillation_steps=2), num_student_layers=2, train_size=100)
    with pytest.raises(ValueError, match="progressive=True needs an intermediate loss"):
        plan_stages(config(progressive=True), num_student_layers=2, train_size=100)


# --- temperature schedules ----------------------------------------------------------------------------------


def test_constant_and_linear_decay_schedules() -> None:
    logits = torch.randn(3, 2)
    constant = temperatures("constant", 4.0, logits, step=5, total_steps=10)
    assert torch.equal(constant, torch.full((3,), 4.0))
    decay = [temperatures("linear_decay", 4.0, logits, step=k, total_steps=4)[0].item() for k in range(4)]
    assert decay == pytest.approx([4.0, 3.0, 2.0, 1.0])
    assert temperatures("linear_decay", 4.0, logits, step=0, total_steps=1).tolist() == [1.0] * 3


def test_adaptive_temperature_rises_with_teacher_confidence_within_bounds() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 50.0]])
    values = temperatures("adaptive", 2.0, logits, step=0, total_steps=1)
    assert values.shape == (4,)
    assert values.tolist() == sorted(values.tolist()) and values[0] < values[-1]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(4.0, rel=1e-4)
    assert bool(((values >= 1.0) & (values <= 4.0)).all())
    loss = soft_target_loss(torch.randn(4, 2), logits, values, reduction="none")
    assert loss.shape == (4,) and bool(loss.isfinite().all())


def test_temperature_arguments_are_checked() -> None:
    logits = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="schedule must be one of"):
        temperatures("cosine", 2.0, logits, step=0, total_steps=1)
    with pytest.raises(ValueError, match="temperature must be"):
        temperatures("constant", 0.0, logits, step=0, total_steps=1)
    with pytest.raises(ValueError, match="step must be"):
        temperatures("linear_decay", 2.0, logits, step=3, total_steps=3)
    with pytest.raises(ValueError, match="teacher_logits must be"):
        temperatures("adaptive", 2.0, torch.zeros(2, 1), step=0, total_steps=1)


# --- training -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "linear_decay", "adaptive"])
def test_logit_only_kd_with_cached_logits_never_runs_the_teacher(
    tiny_teacher: BertForSequenceClassification,
    sets: dict[str, datasets.Dataset],
    monkeypatch: pytest.MonkeyPatch,
    schedule: str,
) -> None:
    cached = teacher_logits(tiny_teacher, "tiny", sets["train"], pad_id=0, device=CPU, progress=False)
    student = small_student(tiny_teacher)
    before = snapshot(student)
    monkeypatch.setattr(tiny_teacher, "forward", refuse)
    outcome = run(tiny_teacher, student, sets, config(temperature_schedule=schedule), teacher_logits=cached)
    assert outcome.status == "ok" and outcome.error is None
    assert outcome.teacher_forward_batches == 0
    assert outcome.steps == 4 and outcome.stage_steps == {"prediction": 4}
    assert outcome.validation_history and outcome.best_validation_accuracy is not None
    assert changed(before, snapshot(student))


def test_without_cached_logits_every_step_runs_the_teacher(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, config())
    assert outcome.teacher_forward_batches == outcome.steps == 4


def test_all_losses_together_train_and_reach_the_projections(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[HiddenProjection, dict[str, Tensor]]] = []

    class RecordedProjection(HiddenProjection):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            created.append((self, snapshot(self)))

    monkeypatch.setattr(distiller, "HiddenProjection", RecordedProjection)
    cached = teacher_logits(tiny_teacher, "tiny", sets["train"], pad_id=0, device=CPU, progress=False)
    kd = config(max_steps=6, value_relation_weight=1.0, cosine_weight=1.0, attention_loss="kl", **ALL_INTERMEDIATE)
    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, kd, teacher_logits=cached)
    assert outcome.status == "ok", outcome.error
    assert outcome.stage_steps == {"intermediate": 3, "prediction": 3}
    assert outcome.teacher_forward_batches == 6, "the cosine loss needs the teacher's hidden states"
    [(projection, initial)] = created
    assert projection.layers == (0, 1, 2)
    assert changed(initial, snapshot(projection)) == set(initial), "every W_h must receive gradients"


def test_progressive_blocks_train_only_their_own_layer(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    student = small_student(tiny_teacher)
    states = [("start", snapshot(student))]
    kd = config(max_steps=6, progressive=True, **ALL_INTERMEDIATE)
    outcome = run(
        tiny_teacher, student, sets, kd, on_stage_end=lambda stage, model: states.append((stage.name, snapshot(model)))
    )
    assert outcome.status == "ok", outcome.error
    assert [name for name, _ in states] == [
        "start",
        "progressive-embeddings",
        "progressive-layer-1",
        "progressive-layer-2",
        "prediction",
    ]
    owners = {
        "progressive-embeddings": "bert.embeddings.",
        "progressive-layer-1": "bert.encoder.layer.0.",
        "progressive-layer-2": "bert.encoder.layer.1.",
    }
    for (_, before), (name, after) in pairwise(states):
        moved = changed(before, after)
        if name in owners:
            assert moved, f"{name} trained nothing"
            assert all(key.startswith(owners[name]) for key in moved), f"{name} changed {sorted(moved)}"
        else:
            assert {"classifier.weight", "bert.encoder.layer.0.output.dense.weight"} <= moved
    assert all(parameter.requires_grad for parameter in student.parameters())


def test_general_stage_is_counted_and_ignores_labels(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    kd = config(max_steps=5, general_distillation_steps=3, hidden_weight=1.0)
    after_general = []

    def keep_general(stage: Stage, model: BertForSequenceClassification) -> None:
        if stage.name == "general":
            after_general.append(snapshot(model))

    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, kd, on_stage_end=keep_general)
    assert outcome.stage_steps == {"general": 3, "intermediate": 1, "prediction": 1} and outcome.steps == 5
    flipped = sets | {"train": sets["train"].map(lambda row: {"label": 1 - row["label"]})}
    run(tiny_teacher, small_student(tiny_teacher), flipped, kd, on_stage_end=keep_general)
    assert not changed(*after_general)


def test_a_general_set_feeds_the_general_stage_only(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    kd = config(max_steps=6, general_distillation_steps=3, hidden_weight=1.0, intermediate_share=0.0)
    states: dict[str, list[dict[str, Tensor]]] = {"general": [], "prediction": []}

    def keep(stage: Stage, model: BertForSequenceClassification) -> None:
        states[stage.name].append(snapshot(model))

    run(tiny_teacher, small_student(tiny_teacher), sets, kd, on_stage_end=keep)
    # the train set itself as the general set: the same general stage, but the task stage then starts its stream
    run(tiny_teacher, small_student(tiny_teacher), sets, kd, on_stage_end=keep, general_set=sets["train"])
    other = sets["test"].map(lambda row: {"label": -1})
    run(tiny_teacher, small_student(tiny_teacher), sets, kd, on_stage_end=keep, general_set=other)
    same, _, elsewhere = states["general"]
    assert not changed(states["general"][0], same), "the same rows in the same seeded order"
    assert changed(same, elsewhere), "another set trains the general stage otherwise"
    assert changed(states["prediction"][0], states["prediction"][1]), "the task stream restarts after the general set"
    with pytest.raises(ValueError, match="general_set must not be empty"):
        run(tiny_teacher, small_student(tiny_teacher), sets, kd, general_set=sets["train"].select([]))


def test_transfer_rows_join_every_task_batch_without_labels(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    transfer = sets["test"].map(lambda row: {"label": -1})
    batch = next(distiller._mixed_batches(sets["train"], transfer, 16, 0.25, 0, seed=0))
    assert batch["input_ids"].shape[0] == 16 == len(batch["labels"])
    assert batch["unlabelled"].tolist() == [False] * 12 + [True] * 4
    assert len(batch["rows"]) == 12 and len(batch["transfer_rows"]) == 4 and (batch["labels"][12:] == 0).all()
    assert [distiller.transfer_rows_per_batch(16, r) for r in (0.0, 0.01, 0.25, 0.9)] == [0, 1, 4, 14]

    kd = config(max_steps=3, transfer_ratio=0.25)
    cached = teacher_logits(tiny_teacher, "tiny", transfer, pad_id=0, device=CPU, progress=False)
    train_logits = teacher_logits(tiny_teacher, "tiny", sets["train"], pad_id=0, device=CPU, progress=False)
    students = []
    for labels in (0, 1):
        relabelled = transfer.map(lambda row, value=labels: {"label": value})
        student = small_student(tiny_teacher)
        options = {"teacher_logits": train_logits, "transfer_set": relabelled, "transfer_logits": cached}
        outcome = run(tiny_teacher, student, sets, kd, **options)
        assert outcome.status == "ok" and outcome.teacher_forward_batches == 0
        students.append(snapshot(student))
    assert not changed(*students), "transfer rows are learnt from soft targets only"
    online = run(tiny_teacher, small_student(tiny_teacher), sets, kd, transfer_set=transfer)
    assert online.teacher_forward_batches == 3
    with pytest.raises(ValueError, match=r"transfer_ratio=0\.25 needs a non-empty transfer_set"):
        run(tiny_teacher, small_student(tiny_teacher), sets, kd)
    with pytest.raises(ValueError, match=r"transfer_logits has shape \(2, 2\)"):
        run(tiny_teacher, small_student(tiny_teacher), sets, kd, transfer_set=transfer, transfer_logits=cached[:2])


def test_substitution_needs_the_teachers_neighbours(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    with pytest.raises(ValueError, match="augmentation='substitute' needs substitutions"):
        run(tiny_teacher, small_student(tiny_teacher), sets, config(augmentation="substitute"))


def test_early_stopping_ends_the_prediction_stage(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    kd = config(max_steps=20, lr=1e-9, early_stopping_patience=2)
    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, kd, eval_every=1)
    assert outcome.status == "ok"
    assert outcome.steps == 3 and [step for step, _ in outcome.validation_history] == [1, 2, 3]
    assert outcome.best_validation_accuracy == outcome.validation_history[0][1]


def test_nan_loss_fails_without_raising(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    student = small_student(tiny_teacher)
    with torch.no_grad():
        student.classifier.weight.fill_(float("nan"))
    before = snapshot(student)
    outcome = run(tiny_teacher, student, sets, config(max_steps=4, hidden_weight=1.0))
    assert outcome.status == "failed"
    assert outcome.error == "loss became nan at step 2 (stage prediction)"
    assert outcome.stage_steps == {"intermediate": 2, "prediction": 0} and outcome.steps == 2
    moved = changed(before, snapshot(student))
    assert "bert.encoder.layer.1.output.dense.weight" in moved, "the intermediate stage ran"
    assert not moved & {"classifier.bias", "bert.pooler.dense.weight"}, "no prediction step was applied"
    assert bool(student.classifier.weight.isnan().all())


def test_same_seed_gives_identical_students(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], tiny_bert_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    kd = config(max_steps=4, augmentation="mask", hidden_weight=1.0, temperature_schedule="adaptive")
    students = []
    for seed in (0, 0, 1):
        student = small_student(tiny_teacher)
        run(tiny_teacher, student, sets, kd.model_copy(update={"seed": seed}), mask_token_id=tokenizer.mask_token_id)
        students.append(snapshot(student))
    assert not changed(students[0], students[1])
    assert changed(students[0], students[2])


def test_trimmed_vocabulary_student_trains_through_the_input_id_map(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], tiny_bert_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    used = {int(token) for name in ("train", "validation") for ids in sets[name]["input_ids"] for token in ids}
    student, student_tokenizer = trim_vocabulary(small_student(tiny_teacher), tokenizer, used)
    id_map = vocabulary_map(tokenizer, student_tokenizer)
    assert student.config.vocab_size < tiny_teacher.config.vocab_size
    kd = config(augmentation="mask", hidden_weight=1.0)
    before = snapshot(student)
    outcome = run(tiny_teacher, student, sets, kd, input_id_map=id_map, mask_token_id=tokenizer.mask_token_id)
    assert outcome.status == "ok", outcome.error
    assert "bert.embeddings.word_embeddings.weight" in changed(before, snapshot(student))
    with pytest.raises(ValueError, match="input_id_map has 5 entries"):
        run(tiny_teacher, student, sets, kd, input_id_map=id_map[:5], mask_token_id=tokenizer.mask_token_id)


def test_kd_from_a_trained_teacher_learns_the_toy_task(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset]
) -> None:
    recipe = FineTuneRecipe(epochs=4, batch_size=16, max_length=16, learning_rate=3e-3)
    fine_tune(tiny_teacher, sets["train"], sets["validation"], recipe, pad_id=0, device=CPU, progress=False)
    cached = teacher_logits(tiny_teacher, "tuned", sets["train"], pad_id=0, device=CPU, progress=False)
    torch.manual_seed(0)
    student = small_student(tiny_teacher, init="random")
    kd = config(max_steps=60, lr=3e-3, alpha=1.0)
    outcome = run(tiny_teacher, student, sets, kd, teacher_logits=cached)
    assert outcome.status == "ok" and outcome.teacher_forward_batches == 0
    assert outcome.best_validation_accuracy is not None and outcome.best_validation_accuracy >= 0.85


def test_bad_arguments_are_rejected_by_name(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], tiny_bert_dir: Path
) -> None:
    student = small_student(tiny_teacher)
    with pytest.raises(ValueError, match="mask_token_id=None"):
        run(tiny_teacher, student, sets, config(augmentation="mask"))
    with pytest.raises(ValueError, match="teacher_logits has shape"):
        run(tiny_teacher, student, sets, config(), teacher_logits=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="eval_every must be"):
        run(tiny_teacher, student, sets, config(), eval_every=0)
    sdpa_student = BertForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="student uses attn_implementation='sdpa'"):
        run(tiny_teacher, sdpa_student, sets, config(attention_weight=1.0))
    three_label_config = copy.deepcopy(tiny_teacher.config)
    three_label_config.num_labels = 3
    three_labels = BertForSequenceClassification(three_label_config)
    with pytest.raises(ValueError, match="num_labels=3"):
        run(tiny_teacher, three_labels, sets, config())
