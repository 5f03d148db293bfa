"""The KD-term registry: what each term declares, registration rules, and new terms driving the distiller and space."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import pytest
import torch
from test_distiller import CPU, run, small_student, snapshot
from torch import Tensor
from transformers import AutoTokenizer, BertForSequenceClassification

from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.students.specs import KDConfig
from distilsearch.kdlib.training import kd_terms
from distilsearch.kdlib.training.distiller import Stage, intermediate_layers, plan_stages
from distilsearch.kdlib.training.kd_terms import (
    KD_TERMS,
    KDTerm,
    TermInputs,
    enabled_terms,
    no_layers,
    register_kd_term,
)
from distilsearch.kdlib.training.teacher_outputs import teacher_logits

BUILTIN = ("embedding", "hidden", "attention", "value_relation", "prediction", "cosine")


@dataclass(frozen=True)
class FixedWeight(KDTerm):
    """A test term weighted by a constant instead of a KDConfig field."""

    fixed: float = 1.0

    def weight(self, config: KDConfig) -> float:
        return self.fixed


@pytest.fixture
def register() -> Iterator[Callable[[KDTerm], KDTerm]]:
    """Register terms for one test; they leave the registry afterwards."""
    added: list[str] = []

    def add(term: KDTerm) -> KDTerm:
        register_kd_term(term)
        added.append(term.name)
        return term

    yield add
    for name in added:
        del KD_TERMS[name]


@pytest.fixture
def sets(toy_task: str, tiny_bert_dir: Path) -> dict[str, datasets.Dataset]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return tokenize_task(load_task(toy_task, progress=False), tokenizer, 16, progress=False)


def recorder(log: list[TermInputs]) -> Callable[[TermInputs], Tensor]:
    """A loss that keeps what it was given and adds nothing (zero times a student feature keeps it in the graph)."""

    def loss(inputs: TermInputs) -> Tensor:
        log.append(inputs)
        return 0.0 * inputs.student.logits.float().mean()

    return loss


# --- what the built-in terms declare ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_layers", "encoder"),
    [(2, (1, 2)), (3, (1, 2, 3))],
)
def test_builtin_terms_declare_their_indices_features_and_phase(num_layers: int, encoder: tuple[int, ...]) -> None:
    top = (num_layers,)
    expected = {
        "embedding": ("embedding_weight", (0,), {"hidden"}, True, "intermediate"),
        "hidden": ("hidden_weight", encoder, {"hidden"}, True, "intermediate"),
        "attention": ("attention_weight", encoder, {"attention"}, False, "intermediate"),
        "value_relation": ("value_relation_weight", top, {"values"}, False, "intermediate"),
        "prediction": (None, (), {"logits"}, False, "prediction"),
        "cosine": ("cosine_weight", top, {"hidden"}, True, "prediction"),
    }
    assert tuple(KD_TERMS) == BUILTIN, "registry order is the order losses are combined in"
    for name, (weight_field, layers, features, projected, phase) in expected.items():
        term = KD_TERMS[name]
        assert (term.weight_field, term.layers(num_layers), term.features) == (weight_field, layers, features), name
        assert (term.projected, term.phase) == (projected, phase), name


def test_config_weights_turn_terms_on() -> None:
    config = KDConfig(hidden_weight=0.3, cosine_weight=0.7)
    assert [term.name for term in enabled_terms(config)] == ["hidden", "prediction", "cosine"]
    assert [term.name for term in enabled_terms(config, "intermediate")] == ["hidden"]
    assert KD_TERMS["hidden"].weight(config) == 0.3 and KD_TERMS["prediction"].weight(config) == 1.0
    assert not KD_TERMS["attention"].enabled(config)
    assert intermediate_layers(KDConfig(embedding_weight=1.0, value_relation_weight=1.0), 3) == (0, 3)


def test_the_default_space_searches_the_tinybert_weights() -> None:
    searched = {name: term.search_choices for name, term in KD_TERMS.items() if term.search_choices}
    assert searched == {name: (0.0, 0.1, 1.0) for name in ("embedding", "hidden", "attention")}


# --- registration -------------------------------------------------------------------------------------------


def test_registration_refuses_a_taken_name_and_unknown_fields(register: Callable[[KDTerm], KDTerm]) -> None:
    hidden = KD_TERMS["hidden"]
    with pytest.raises(ValueError, match="a KD term named 'hidden' is already registered"):
        register_kd_term(replace(hidden, search_choices=()))
    with pytest.raises(ValueError, match="weight_field='depth_weight' is not a KDConfig field"):
        register(replace(hidden, name="deep", weight_field="depth_weight"))
    with pytest.raises(ValueError, match="'deep': features"):
        register(replace(hidden, name="deep", features=frozenset({"gradients"})))
    with pytest.raises(ValueError, match="hidden_weight is already searched by 'hidden'"):
        register(replace(hidden, name="deep"))
    assert "deep" not in KD_TERMS and KD_TERMS["hidden"] is hidden


# --- new terms in the distiller -----------------------------------------------------------------------------


def test_a_new_intermediate_term_chooses_layers_and_stages(register: Callable[[KDTerm], KDTerm]) -> None:
    plain = KDConfig(max_steps=8)
    register(FixedWeight("off", None, lambda _: (2,), frozenset({"hidden"}), recorder([]), fixed=0.0))
    assert intermediate_layers(plain, 3) == ()
    assert plan_stages(plain, num_student_layers=3, train_size=100) == (Stage("prediction", "prediction", 8),)
    register(FixedWeight("on", None, lambda _: (1,), frozenset({"hidden"}), recorder([]), fixed=2.0))
    assert intermediate_layers(plain, 3) == (1,)
    assert plan_stages(plain.model_copy(update={"progressive": True}), num_student_layers=3, train_size=100) == (
        Stage("progressive-layer-1", "intermediate", 4, 1),
        Stage("prediction", "prediction", 4),
    )


def test_a_new_term_is_computed_weighted_and_combined(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], register: Callable[[KDTerm], KDTerm]
) -> None:
    """A second copy of the hidden-state term, also weighted by hidden_weight, trains like hidden_weight doubled."""

    def trained(kd: KDConfig) -> dict[str, Tensor]:
        student = small_student(tiny_teacher)
        outcome = run(tiny_teacher, student, sets, kd)
        assert outcome.status == "ok", outcome.error
        return snapshot(student)

    joint = KDConfig(max_steps=4, batch_size=16, lr=1e-3, intermediate_share=0.0)
    doubled = trained(joint.model_copy(update={"hidden_weight": 1.0}))
    single = trained(joint.model_copy(update={"hidden_weight": 0.5}))
    register(replace(KD_TERMS["hidden"], name="hidden_again", search_choices=()))
    twice = trained(joint.model_copy(update={"hidden_weight": 0.5}))
    for name, tensor in doubled.items():
        torch.testing.assert_close(twice[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.allclose(single[name], tensor, rtol=1e-3, atol=1e-4) for name, tensor in doubled.items())


def test_a_new_term_gets_the_features_it_declares_at_mapped_pairs(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], register: Callable[[KDTerm], KDTerm]
) -> None:
    log: list[TermInputs] = []
    features = frozenset({"hidden", "attention", "values", "logits"})
    register(FixedWeight("probe", None, lambda _: (1,), features, recorder(log), phase="prediction"))
    cached = teacher_logits(tiny_teacher, "tiny", sets["train"], pad_id=0, device=CPU, progress=False)
    kd = KDConfig(max_steps=2, batch_size=16, lr=1e-3, layer_mapping="last")
    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, kd, teacher_logits=cached)
    assert outcome.status == "ok", outcome.error
    assert len(log) == 2 and outcome.teacher_forward_batches == 2, "cached logits cannot serve the probe's features"
    inputs = log[0]
    batch, seq = inputs.mask.shape
    assert inputs.pairs == ((1, 3),) and inputs.projection is None and inputs.temperature is not None
    assert tuple(inputs.student.hidden[1].shape) == (batch, seq, 16)
    assert tuple(inputs.teacher.hidden[3].shape) == (batch, seq, 32)
    assert tuple(inputs.student.attention[1].shape) == (batch, 2, seq, seq)
    assert tuple(inputs.teacher.attention[3].shape) == (batch, 4, seq, seq)
    assert tuple(inputs.student.values.shape) == (batch, seq, 16)
    assert tuple(inputs.teacher.values.shape) == (batch, seq, 32)
    assert set(inputs.teacher.hidden) == {3} and set(inputs.teacher.attention) == {3}


@pytest.mark.parametrize(("fixed", "status"), [(1.0, "failed"), (0.0, "ok")])
def test_a_weighted_term_enters_the_total_loss(
    tiny_teacher: BertForSequenceClassification,
    sets: dict[str, datasets.Dataset],
    register: Callable[[KDTerm], KDTerm],
    fixed: float,
    status: str,
) -> None:
    def not_a_number(inputs: TermInputs) -> Tensor:
        return inputs.student.logits.float().mean() * float("nan")

    register(FixedWeight("nan", None, no_layers, frozenset({"logits"}), not_a_number, phase="prediction", fixed=fixed))
    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, KDConfig(max_steps=2, batch_size=16))
    assert outcome.status == status
    if status == "failed":
        assert outcome.error == "loss became nan at step 0 (stage prediction)"


def test_joint_training_computes_the_hidden_loss_of_every_layer_each_step(
    tiny_teacher: BertForSequenceClassification, sets: dict[str, datasets.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = kd_terms.hidden_state_loss

    def counted(*args: object, **kwargs: object) -> Tensor:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kd_terms, "hidden_state_loss", counted)
    kd = KDConfig(max_steps=3, batch_size=16, lr=1e-3, hidden_weight=1.0, intermediate_share=0.0)
    outcome = run(tiny_teacher, small_student(tiny_teacher), sets, kd)
    assert outcome.stage_steps == {"prediction": 3} and len(calls) == 3 * 2


# --- new terms in the search space --------------------------------------------------------------------------


def test_a_term_with_search_choices_becomes_a_default_space_dimension(register: Callable[[KDTerm], KDTerm]) -> None:
    teacher = TeacherShape(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    before = SearchSpace.default_for(teacher)
    register(replace(KD_TERMS["value_relation"], name="value_relation_searched", search_choices=(0.0, 1.0)))
    after = SearchSpace.default_for(teacher)
    position = before.names.index("attention_loss") + 1
    assert after.names == (*before.names[:position], "value_relation_weight", *before.names[position:])
    assert after.dimensions["value_relation_weight"] == (0.0, 1.0)
    assert after.num_valid() == 2 * before.num_valid()
