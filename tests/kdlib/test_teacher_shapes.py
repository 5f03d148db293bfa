"""Teachers of other shapes and families than MiniLM: an 8-layer, hidden-256, 8-head BERT, and a tiny RoBERTa and
ELECTRA (4 layers, hidden 64; tiny vocabularies, random weights).

For each: cutting nothing reproduces its logits; importance scores have the teacher's shapes; the default space derived
from it cuts students that run; a student distilled from it exports to a stock Hugging Face folder that
``AutoModelForSequenceClassification`` loads, and to ONNX; the latency harness times a cut student up to the teacher's
usable sequence length (RoBERTa: two positions fewer than its table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import build_tiny_bert, build_tiny_electra, build_tiny_roberta
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.measure.export import OnnxClassifier, export_onnx, export_student
from distilsearch.kdlib.measure.latency import LatencyProtocol, measure_latency
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.families import usable_positions
from distilsearch.kdlib.students.importance import compute_importance
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.distiller import distill

TINY = {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}


@dataclass(frozen=True)
class Case:
    """One teacher: how it is built, its sizes, the student distilled from it and its usable sequence length."""

    build: Callable[..., Path]
    shape: dict[str, int]
    student: StudentSpec
    positions: int


CASES = {
    "bert-8l-h256": Case(
        build_tiny_bert,
        {"num_hidden_layers": 8, "hidden_size": 256, "num_attention_heads": 8, "intermediate_size": 1024},
        StudentSpec(num_layers=3, hidden_size=128, num_heads=4, ffn_size=256),
        128,
    ),
    "roberta": Case(build_tiny_roberta, TINY, StudentSpec(num_layers=2, hidden_size=32, num_heads=2, ffn_size=64), 128),
    "electra": Case(build_tiny_electra, TINY, StudentSpec(num_layers=2, hidden_size=32, num_heads=2, ffn_size=64), 128),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture(scope="module")
def teacher_dir(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return case.build(tmp_path_factory.mktemp("teacher"), seed=1, **case.shape)


@pytest.fixture
def teacher(teacher_dir: Path) -> PreTrainedModel:
    return AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()


def batch(vocab_size: int, rows: int = 3, length: int = 11) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows * length)
    input_ids = torch.randint(5, vocab_size, (rows, length), generator=generator)
    attention_mask = torch.ones(rows, length, dtype=torch.long)
    attention_mask[0, length - 3 :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("selection", ["importance", "position"])
def test_cutting_nothing_reproduces_the_teacher(teacher: PreTrainedModel, case: Case, selection: str) -> None:
    inputs = batch(teacher.config.vocab_size)
    spec = StudentSpec.identity(
        teacher.config, head_selection=selection, ffn_selection=selection, hidden_selection=selection
    )
    shape = case.shape
    sizes = (shape["num_hidden_layers"], shape["hidden_size"], shape["num_attention_heads"], shape["intermediate_size"])
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.ffn_size) == sizes
    student = cut_student(teacher, spec, inputs if selection == "importance" else None)
    assert type(student) is type(teacher)
    torch.testing.assert_close(logits(student, inputs), logits(teacher, inputs), rtol=0, atol=1e-4)


def test_importance_has_the_teacher_s_shapes(teacher: PreTrainedModel, case: Case) -> None:
    layers, hidden = case.shape["num_hidden_layers"], case.shape["hidden_size"]
    importance = compute_importance(teacher, batch(teacher.config.vocab_size))
    assert importance.heads.shape == (layers, case.shape["num_attention_heads"])
    assert importance.query_dims.shape == importance.value_dims.shape == (layers, hidden)
    assert importance.ffn.shape == (layers, case.shape["intermediate_size"]) and importance.hidden.shape == (hidden,)
    for scores in (importance.heads, importance.ffn, importance.hidden):
        assert bool(torch.isfinite(scores).all()) and float(scores.sum()) > 0


def test_the_default_space_cuts_students_that_run(teacher: PreTrainedModel, case: Case) -> None:
    space = SearchSpace.default_for(teacher.config)
    assert space.dimensions["num_layers"] == tuple(range(1, case.shape["num_hidden_layers"] + 1))
    assert max(space.dimensions["hidden_size"]) == case.shape["hidden_size"]
    assert max(space.dimensions["num_heads"]) == case.shape["num_attention_heads"]
    inputs = batch(teacher.config.vocab_size)
    rng = np.random.default_rng(0)
    for _ in range(4):
        candidate = space.decode(space.sample(rng))
        candidate.spec.validate_against(teacher.config)
        student = cut_student(teacher, candidate.spec, inputs)
        assert logits(student, inputs).shape == (3, 2)
        assert student.config.num_hidden_layers == candidate.spec.num_layers


def test_a_distilled_student_exports_to_hugging_face_and_onnx(
    teacher: PreTrainedModel, teacher_dir: Path, case: Case, toy_task: str, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    sets: dict[str, datasets.Dataset] = tokenize_task(
        load_task(toy_task, progress=False), tokenizer, 16, progress=False
    )
    student = cut_student(teacher, case.student, batch(teacher.config.vocab_size))
    kd = KDConfig(max_steps=4, batch_size=8, lr=1e-3, hidden_weight=1.0, attention_weight=1.0)
    outcome = distill(
        teacher,
        student,
        sets["train"],
        sets["validation"],
        kd,
        teacher_logits=None,
        pad_id=tokenizer.pad_token_id,
        device=torch.device("cpu"),
        progress=False,
    )
    assert outcome.status == "ok" and outcome.stage_steps == {"intermediate": 2, "prediction": 2}
    folder = export_student(student, tokenizer, tmp_path / "student", {"shape": case.shape})
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert type(reloaded) is type(teacher)
    inputs = batch(teacher.config.vocab_size, rows=2, length=9)
    torch.testing.assert_close(logits(reloaded, inputs), logits(student.eval(), inputs), rtol=0, atol=1e-5)
    onnx_path = export_onnx(folder, tmp_path / "student.onnx")
    from_onnx = OnnxClassifier(onnx_path)(**inputs)
    torch.testing.assert_close(torch.from_numpy(from_onnx), logits(reloaded, inputs), rtol=0, atol=1e-4)


def test_the_latency_harness_times_a_cut_student_up_to_its_usable_length(teacher: PreTrainedModel, case: Case) -> None:
    student = cut_student(teacher, case.student, batch(teacher.config.vocab_size))
    assert usable_positions(student.config) == case.positions
    protocol = LatencyProtocol(points=((1, 8), (1, case.positions)), warmup=1, repeats=2)
    results = measure_latency(student, protocol, student.config.vocab_size)
    assert set(results) == {(1, 8), (1, case.positions)}
    assert all(stats.repeats == 2 and stats.median_ms > 0 for stats in results.values())
    too_long = LatencyProtocol(points=((1, case.positions + 1),), warmup=0, repeats=1)
    with pytest.raises(ValueError, match=f"above the model's {case.positions} positions"):
        measure_latency(student, too_long, student.config.vocab_size)
