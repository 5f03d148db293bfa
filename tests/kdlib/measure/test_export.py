"""Student export: atomic Hugging Face folder with provenance, and ONNX that matches torch."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from conftest import build_tiny_bert
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)

from distilsearch.kdlib.measure.export import (
    PROVENANCE_FILE,
    OnnxClassifier,
    export_onnx,
    export_student,
    load_provenance,
    runtime_versions,
)
from distilsearch.kdlib.students.quantization import apply_weight_quantization, quantize_int8_dynamic

PROVENANCE = {"task": "tiny", "architecture": {"layers": 4, "hidden": 32}, "seed": 0}


def _batch(vocab_size: int, batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with ragged padding and a second segment, as a tokenizer would produce for pairs."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)
    for row in range(batch):
        length = seq_len - (row * 3) % seq_len
        attention_mask[row, length:] = 0
        token_type_ids[row, length // 2 : length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def _logits(model: BertForSequenceClassification, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def test_export_student_round_trip(tiny_teacher: BertForSequenceClassification, tiny_bert_dir: Path, tmp_path: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    out = export_student(tiny_teacher, tokenizer, tmp_path / "student", PROVENANCE)
    assert out == tmp_path / "student"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["student"]
    batch = _batch(tiny_teacher.config.vocab_size, 4, 12)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager").eval()
    assert torch.equal(_logits(reloaded, batch), _logits(tiny_teacher, batch))
    text = "a great film with a dull plot"
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == tokenizer(text)["input_ids"]
    record = load_provenance(out)
    assert record["provenance"] == PROVENANCE
    assert record["environment"] == json.loads(json.dumps(runtime_versions()))
    assert {"python", "torch", "transformers", "platform", "cpu_count", "cuda_device"} <= set(record["environment"])


def test_export_student_refuses_to_clobber_a_different_export(
    tiny_teacher: BertForSequenceClassification, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    out = tmp_path / "student"
    export_student(tiny_teacher, tokenizer, out, PROVENANCE)
    export_student(tiny_teacher, tokenizer, out, PROVENANCE)
    changed = PROVENANCE | {"seed": 1}
    with pytest.raises(FileExistsError, match="overwrite"):
        export_student(tiny_teacher, tokenizer, out, changed)
    assert load_provenance(out)["provenance"] == PROVENANCE
    export_student(tiny_teacher, tokenizer, out, changed, overwrite=True)
    assert load_provenance(out)["provenance"] == changed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["student"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="out_dir"):
        export_student(tiny_teacher, tokenizer, tmp_path / "other", PROVENANCE)
    assert [path.name for path in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_export_student_leaves_nothing_after_a_failure(
    tiny_teacher: BertForSequenceClassification,
    tiny_bert_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_student(tiny_teacher, tokenizer, tmp_path / "student", PROVENANCE)
    assert list(tmp_path.iterdir()) == []


def test_export_student_rejects_bad_input(
    tiny_teacher: BertForSequenceClassification, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with pytest.raises(ValueError, match="provenance"):
        export_student(tiny_teacher, tokenizer, tmp_path / "a", {"when": object()})
    with pytest.raises(ValueError, match="tokenizer"):
        export_student(tiny_teacher, None, tmp_path / "a", PROVENANCE)  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        export_student(tiny_teacher, tokenizer, tmp_path / "file", PROVENANCE)
    with pytest.raises(ValueError, match=r"torch\.ao"):
        export_student(quantize_int8_dynamic(tiny_teacher), tokenizer, tmp_path / "a", PROVENANCE)
    with pytest.raises(ValueError, match="materialize_quantized"):
        export_student(apply_weight_quantization(tiny_teacher, 2), tokenizer, tmp_path / "a", PROVENANCE)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
    with pytest.raises(FileNotFoundError, match=PROVENANCE_FILE):
        load_provenance(tmp_path)


@pytest.fixture(scope="module")
def two_layer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 2-layer tiny classifier (ONNX export time grows with depth; the shared one has 4)."""
    return build_tiny_bert(tmp_path_factory.mktemp("two_layer"), num_hidden_layers=2)


@pytest.fixture(scope="module")
def tiny_onnx(two_layer_dir: Path) -> Path:
    """The 2-layer classifier exported to ONNX once for this module, from its saved folder."""
    return export_onnx(two_layer_dir, two_layer_dir.parent / "tiny.onnx")


@pytest.fixture
def two_layer(two_layer_dir: Path) -> BertForSequenceClassification:
    return AutoModelForSequenceClassification.from_pretrained(two_layer_dir, attn_implementation="eager").eval()


def test_onnx_graph_has_dynamic_batch_and_sequence(tiny_onnx: Path) -> None:
    graph = onnx.load(tiny_onnx).graph
    assert [node.name for node in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [node.name for node in graph.output] == ["logits"]
    for node in graph.input:
        assert node.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(dim.dim_param and not dim.dim_value for dim in node.type.tensor_type.shape.dim)


@pytest.mark.parametrize(("batch", "seq_len"), [(1, 5), (3, 17)])
def test_onnxruntime_matches_torch(tiny_onnx: Path, two_layer: BertForSequenceClassification, batch, seq_len):
    inputs = _batch(two_layer.config.vocab_size, batch, seq_len, seed=seq_len)
    logits = OnnxClassifier(tiny_onnx)(**inputs)
    assert logits.shape == (batch, two_layer.config.num_labels)
    torch.testing.assert_close(torch.from_numpy(logits), _logits(two_layer, inputs), rtol=0, atol=1e-4)


def test_onnx_classifier_defaults_token_types(tiny_onnx: Path, two_layer: BertForSequenceClassification) -> None:
    inputs = _batch(two_layer.config.vocab_size, 2, 9)
    inputs["token_type_ids"].zero_()
    classifier = OnnxClassifier(tiny_onnx)
    without = classifier(input_ids=inputs["input_ids"].numpy(), attention_mask=inputs["attention_mask"].numpy())
    assert (without == classifier(**inputs)).all()
    with pytest.raises(ValueError, match="input_ids"):
        classifier(attention_mask=inputs["attention_mask"])


def test_export_onnx_rejects_bad_arguments(tiny_teacher: BertForSequenceClassification, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_teacher, tmp_path / "a.onnx", opset=11)
    with pytest.raises(ValueError, match="out_path"):
        export_onnx(tiny_teacher, tmp_path / "a.bin")
    with pytest.raises(ValueError, match="materialize_quantized"):
        export_onnx(apply_weight_quantization(tiny_teacher, 8), tmp_path / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_from_a_model_in_training_mode(tmp_path: Path) -> None:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).train()
    path = export_onnx(model, tmp_path / "nested" / "one_layer.onnx")
    assert model.training
    inputs = _batch(config.vocab_size, 2, 11)
    expected = _logits(model.eval(), inputs)
    torch.testing.assert_close(torch.from_numpy(OnnxClassifier(path)(**inputs)), expected, rtol=0, atol=1e-4)
