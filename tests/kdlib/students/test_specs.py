"""StudentSpec / KDConfig validation, JSON round trip and hashing; layer selection and layer mapping."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from transformers import BertConfig

from distilsearch.kdlib.students.layer_map import (
    LAYER_MAPPINGS,
    LAYER_SELECTIONS,
    intermediate_layer_map,
    select_teacher_layers,
)
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

TEACHER = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)
SMALL = {"num_layers": 2, "hidden_size": 16, "num_heads": 2, "ffn_size": 32}
REPO_ROOT = Path(__file__).resolve().parents[3]


def test_student_spec_defaults_and_head_size() -> None:
    spec = StudentSpec(**SMALL)
    assert spec.layer_selection == "uniform" and spec.layers is None
    assert (spec.head_selection, spec.ffn_selection, spec.hidden_selection) == ("importance",) * 3
    assert (spec.init, spec.weight_bits, spec.trim_vocab) == ("teacher", 32, False)
    assert spec.head_size == 8


def test_student_spec_is_frozen_and_forbids_extra_fields() -> None:
    spec = StudentSpec(**SMALL)
    with pytest.raises(ValidationError, match="frozen"):
        spec.num_layers = 3
    with pytest.raises(ValueError, match="dropout"):
        StudentSpec(**SMALL, dropout=0.1)


@pytest.mark.parametrize(
    ("changes", "field", "detail"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size=30", "num_heads=4"),
        ({"hidden_size": 0}, "hidden_size", "greater than 0"),
        ({"num_layers": -1}, "num_layers", "greater than 0"),
        ({"ffn_size": True}, "ffn_size", "bool"),
        (
            {"layer_selection": "random"},
            "layer_selection",
            "'uniform', 'first', 'last', 'alternate' or 'explicit'",
        ),
        ({"head_selection": "magnitude"}, "head_selection", "'importance' or 'position'"),
        ({"ffn_selection": "magnitude"}, "ffn_selection", "'importance' or 'position'"),
        ({"hidden_selection": "pca"}, "hidden_selection", "'importance' or 'position'"),
        ({"init": "xavier"}, "init", "'teacher' or 'random'"),
        ({"weight_bits": 4}, "weight_bits", "32, 8 or 2"),
        ({"layer_selection": "explicit"}, "layers=None", "explicit"),
        ({"layers": (0, 1)}, "layers=(0, 1)", "only allowed with layer_selection='explicit'"),
        ({"layer_selection": "explicit", "layers": (2, 1)}, "layers=(2, 1)", "strictly increasing"),
        ({"layer_selection": "explicit", "layers": (1, 1)}, "layers=(1, 1)", "strictly increasing"),
        ({"layer_selection": "explicit", "layers": (0, 1, 2)}, "layers=(0, 1, 2)", "num_layers=2"),
        ({"layer_selection": "explicit", "layers": (-1, 1)}, "layers=(-1, 1)", ">= 0"),
    ],
)
def test_invalid_student_spec_names_the_field(changes: dict[str, Any], field: str, detail: str) -> None:
    with pytest.raises(ValueError) as error:
        StudentSpec(**(SMALL | changes))
    assert field in str(error.value) and detail in str(error.value)


@pytest.mark.parametrize(
    ("changes", "field", "limit"),
    [
        ({"num_layers": 5}, "num_layers=5", "1..4"),
        ({"hidden_size": 48, "num_heads": 4}, "hidden_size=48", "1..32"),
        ({"num_heads": 8}, "num_heads=8", "1..4"),
        ({"ffn_size": 65}, "ffn_size=65", "1..64"),
        ({"layer_selection": "explicit", "layers": (1, 4)}, "layers=(1, 4)", "0..3"),
    ],
)
def test_validate_against_rejects_specs_larger_than_the_teacher(
    changes: dict[str, Any], field: str, limit: str
) -> None:
    spec = StudentSpec(**(SMALL | changes))
    with pytest.raises(ValueError) as error:
        spec.validate_against(TEACHER)
    assert field in str(error.value) and limit in str(error.value)


def test_identity_spec_matches_teacher_and_validates() -> None:
    spec = StudentSpec.identity(TEACHER, hidden_selection="position")
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.ffn_size) == (4, 32, 4, 64)
    assert spec.hidden_selection == "position"
    assert spec.validate_against(TEACHER) is spec


def test_kd_config_defaults_are_plain_hinton_kd() -> None:
    config = KDConfig()
    assert (config.alpha, config.temperature, config.temperature_schedule) == (0.5, 2.0, "constant")
    weights = (config.hidden_weight, config.attention_weight, config.embedding_weight)
    assert weights == (0.0, 0.0, 0.0) and config.value_relation_weight == config.cosine_weight == 0.0
    assert config.max_steps is None and config.epochs == 3.0 and config.early_stopping_patience is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature_schedule": "cosine"}, "temperature_schedule"),
        ({"hidden_weight": -0.1}, "hidden_weight"),
        ({"attention_weight": -1.0}, "attention_weight"),
        ({"embedding_weight": -1.0}, "embedding_weight"),
        ({"value_relation_weight": -1.0}, "value_relation_weight"),
        ({"cosine_weight": -1.0}, "cosine_weight"),
        ({"attention_loss": "l1"}, "attention_loss"),
        ({"layer_mapping": "random"}, "layer_mapping"),
        ({"general_distillation_steps": -1}, "general_distillation_steps"),
        ({"augmentation": "backtranslate"}, "augmentation"),
        ({"max_steps": 0}, "max_steps"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1e-5}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 0}, "max_length"),
        ({"seed": -1}, "seed"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"learning_rate": 1e-4}, "learning_rate"),
    ],
)
def test_invalid_kd_config_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        KDConfig(**changes)


def test_unknown_literal_error_lists_allowed_values() -> None:
    with pytest.raises(ValueError) as error:
        KDConfig(layer_mapping="random")
    assert "'uniform', 'last' or 'skip'" in str(error.value) and "random" in str(error.value)


@pytest.mark.parametrize(
    "model",
    [
        StudentSpec(**SMALL, layer_selection="explicit", layers=(0, 3), init="random", weight_bits=8),
        StudentSpec(**SMALL),
        KDConfig(),
        KDConfig(alpha=0.9, temperature=4.0, max_steps=100, augmentation="mask", early_stopping_patience=3),
    ],
)
def test_json_round_trip_preserves_value_and_hash(model: StudentSpec | KDConfig) -> None:
    restored = type(model).model_validate_json(model.model_dump_json())
    assert restored == model
    assert restored.content_hash() == model.content_hash()
    assert len(model.content_hash()) == 16 and int(model.content_hash(), 16) >= 0


def test_hash_depends_on_every_field_value() -> None:
    base = StudentSpec(**SMALL)
    assert base.content_hash() == StudentSpec(**SMALL).content_hash()
    variants = [
        StudentSpec(**(SMALL | {"ffn_size": 33})),
        StudentSpec(**SMALL, head_selection="position"),
        StudentSpec(**SMALL, trim_vocab=True),
    ]
    assert len({base.content_hash(), *(variant.content_hash() for variant in variants)}) == 4
    assert KDConfig().content_hash() != KDConfig(seed=1).content_hash()


def test_hash_is_identical_in_another_process() -> None:
    spec = StudentSpec(**SMALL, layer_selection="explicit", layers=(1, 3))
    config = KDConfig(alpha=0.7, temperature=3.5, lr=1e-4)
    script = (
        "from distilsearch.kdlib.students.specs import KDConfig, StudentSpec;"
        f"print(StudentSpec.model_validate_json({spec.model_dump_json()!r}).content_hash());"
        f"print(KDConfig.model_validate_json({config.model_dump_json()!r}).content_hash())"
    )
    environment = os.environ | {"PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
        cwd=REPO_ROOT,
    )
    assert result.stdout.split() == [spec.content_hash(), config.content_hash()]


@pytest.mark.parametrize(
    ("selection", "student", "teacher", "expected"),
    [
        ("uniform", 4, 12, (2, 5, 8, 11)),
        ("uniform", 5, 12, (1, 3, 6, 8, 11)),
        ("first", 3, 12, (0, 1, 2)),
        ("last", 3, 12, (9, 10, 11)),
        ("alternate", 6, 12, (0, 2, 4, 6, 8, 10)),
        ("alternate", 4, 4, (0, 1, 2, 3)),
        ("alternate", 3, 7, (0, 2, 4)),
    ],
)
def test_select_teacher_layers_examples(selection: str, student: int, teacher: int, expected: tuple[int, ...]) -> None:
    assert select_teacher_layers(selection, student, teacher) == expected


def test_every_selection_and_mapping_is_valid_for_every_layer_count() -> None:
    for teacher in range(1, 14):
        for student in range(1, teacher + 1):
            for selection in LAYER_SELECTIONS:
                explicit = tuple(range(teacher - student, teacher)) if selection == "explicit" else None
                kept = select_teacher_layers(selection, student, teacher, explicit)
                assert len(kept) == student and list(kept) == sorted(set(kept))
                assert kept[0] >= 0 and kept[-1] < teacher
            for mapping in LAYER_MAPPINGS:
                pairs = intermediate_layer_map(mapping, student, teacher)
                assert pairs[0] == (0, 0) and pairs[-1] == (student, teacher)
                assert [s for s, _ in pairs] == list(range(student + 1))
                teacher_side = [t for _, t in pairs]
                assert teacher_side == sorted(set(teacher_side)) and teacher_side[-1] <= teacher


@pytest.mark.parametrize(
    ("mapping", "student", "teacher", "expected"),
    [
        ("uniform", 4, 12, (3, 6, 9, 12)),
        ("uniform", 5, 12, (2, 4, 7, 9, 12)),
        ("last", 6, 12, (7, 8, 9, 10, 11, 12)),
        ("skip", 6, 12, (2, 4, 6, 8, 10, 12)),
        ("skip", 5, 12, (2, 4, 6, 8, 12)),
        ("skip", 1, 12, (12,)),
    ],
)
def test_intermediate_layer_map_examples(mapping: str, student: int, teacher: int, expected: tuple[int, ...]) -> None:
    assert intermediate_layer_map(mapping, student, teacher) == ((0, 0), *enumerate(expected, start=1))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: select_teacher_layers("every_third", 2, 4), "layer_selection='every_third'"),
        (lambda: select_teacher_layers("uniform", 5, 4), "num_student_layers=5"),
        (lambda: select_teacher_layers("first", 0, 4), "num_student_layers=0"),
        (lambda: select_teacher_layers("explicit", 2, 4), "layers=None"),
        (lambda: select_teacher_layers("explicit", 2, 4, (0, 4)), "layers=(0, 4)"),
        (lambda: select_teacher_layers("first", 2, 4, (0, 1)), "layers=(0, 1)"),
        (lambda: intermediate_layer_map("middle", 2, 4), "layer_mapping='middle'"),
        (lambda: intermediate_layer_map("skip", 3, 2), "num_student_layers=3"),
    ],
)
def test_layer_map_rejects_bad_input(call: Any, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        call()
