"""A teacher of another shape than MiniLM's: an 8-layer, hidden-256, 8-head BERT (tiny vocabulary, random weights).

Cutting nothing reproduces its logits; the default space derived from it cuts students that run; a student distilled
from it exports to a stock Hugging Face folder that ``AutoModelForSequenceClassification`` loads, and to ONNX.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import build_tiny_bert
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from distilsearch.envs.space import SearchSpace
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.measure.export import OnnxClassifier, export_onnx, export_student
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.distiller import distill

SHAPE = {"num_hidden_layers": 8, "hidden_size": 256, "num_attention_heads": 8, "intermediate_size": 1024}


@pytest.fixture(scope="module")
def wide_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("bert_8l_h256"), seed=1, **SHAPE)


@pytest.fixture
def wide_teacher(wide_bert_dir: Path) -> BertForSequenceClassification:
    return BertForSequenceClassification.from_pretrained(wide_bert_dir, attn_implementation="eager").eval()


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
def test_cutting_nothing_reproduces_the_teacher(wide_teacher: BertForSequenceClassification, selection: str) -> None:
    inputs = batch(wide_teacher.config.vocab_size)
    spec = StudentSpec.identity(
        wide_teacher.config, head_selection=selection, ffn_selection=selection, hidden_selection=selection
    )
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.ffn_size) == (8, 256, 8, 1024)
    student = cut_student(wide_teacher, spec, inputs if selection == "importance" else None)
    torch.testing.assert_close(logits(student, inputs), logits(wide_teacher, inputs), rtol=0, atol=1e-4)


def test_the_default_space_cuts_students_that_run(wide_teacher: BertForSequenceClassification) -> None:
    space = SearchSpace.default_for(wide_teacher.config)
    assert space.dimensions["num_layers"] == tuple(range(1, 9))
    assert max(space.dimensions["hidden_size"]) == 256 and max(space.dimensions["num_heads"]) == 8
    inputs = batch(wide_teacher.config.vocab_size)
    rng = np.random.default_rng(0)
    for _ in range(4):
        candidate = space.decode(space.sample(rng))
        candidate.spec.validate_against(wide_teacher.config)
        student = cut_student(wide_teacher, candidate.spec, inputs)
        assert logits(student, inputs).shape == (3, 2)
        assert student.config.num_hidden_layers == candidate.spec.num_layers


def test_a_distilled_student_exports_to_hugging_face_and_onnx(
    wide_teacher: BertForSequenceClassification, wide_bert_dir: Path, toy_task: str, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(wide_bert_dir)
    sets: dict[str, datasets.Dataset] = tokenize_task(
        load_task(toy_task, progress=False), tokenizer, 16, progress=False
    )
    spec = StudentSpec(num_layers=3, hidden_size=128, num_heads=4, ffn_size=256)
    student = cut_student(wide_teacher, spec, batch(wide_teacher.config.vocab_size))
    kd = KDConfig(max_steps=4, batch_size=8, lr=1e-3, hidden_weight=1.0, attention_weight=1.0)
    outcome = distill(
        wide_teacher,
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
    folder = export_student(student, tokenizer, tmp_path / "student", {"shape": SHAPE})
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    inputs = batch(wide_teacher.config.vocab_size, rows=2, length=9)
    torch.testing.assert_close(logits(reloaded, inputs), logits(student.eval(), inputs), rtol=0, atol=1e-5)
    onnx_path = export_onnx(folder, tmp_path / "student.onnx")
    from_onnx = OnnxClassifier(onnx_path)(**inputs)
    torch.testing.assert_close(torch.from_numpy(from_onnx), logits(reloaded, inputs), rtol=0, atol=1e-4)
