"""Analytical FLOPs, the latency protocol and model footprint (no timing values are asserted)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from distilsearch.kdlib.measure.export import make_onnx_session
from distilsearch.kdlib.measure.flops import bert_flops, theoretical_speedup
from distilsearch.kdlib.measure.footprint import count_parameters, peak_forward_memory_bytes, size_on_disk
from distilsearch.kdlib.measure.latency import (
    LatencyProtocol,
    LatencyStats,
    latency_stats,
    measure_latency,
    torch_threads,
)
from distilsearch.kdlib.students.quantization import quantize_int8_dynamic

BERT_BASE = BertConfig(num_labels=2)
TINY_PROTOCOL = LatencyProtocol(points=((1, 8), (2, 16)), warmup=1, repeats=3, num_threads=1)


def test_bert_base_flops_by_hand() -> None:
    batch, seq, hidden = 1, 128, 768
    # With I = 4H a layer costs 24*B*S*H^2 (projections + FFN) + 4*B*S^2*H (scores and context).
    per_layer = 24 * batch * seq * hidden**2 + 4 * batch * seq**2 * hidden
    assert per_layer == 1_862_270_976
    head = 2 * batch * hidden * hidden + 2 * batch * hidden * 2
    flops = bert_flops(BERT_BASE, batch, seq)
    assert flops.encoder == 12 * per_layer
    assert flops.total == 12 * per_layer + head == 22_348_434_432
    assert flops.attention_scores == flops.attention_context == 12 * 2 * seq * seq * hidden
    assert bert_flops(BERT_BASE, batch, seq, with_head=False).total == 12 * per_layer


def test_flops_scale_with_batch_and_quadratically_in_attention() -> None:
    one, four = bert_flops(BERT_BASE, 1, 64), bert_flops(BERT_BASE, 4, 64)
    assert four.total == 4 * one.total
    assert bert_flops(BERT_BASE, 1, 128).attention_scores == 4 * one.attention_scores
    assert bert_flops(BERT_BASE, 1, 128).feed_forward == 2 * one.feed_forward


def test_flops_accept_a_model(tiny_teacher: BertForSequenceClassification) -> None:
    assert bert_flops(tiny_teacher, 2, 16) == bert_flops(tiny_teacher.config, 2, 16)


def test_theoretical_speedup() -> None:
    student = BertConfig(num_hidden_layers=6, num_labels=2)
    assert theoretical_speedup(BERT_BASE, BERT_BASE, 1, 128) == 1.0
    expected = bert_flops(BERT_BASE, 8, 128).total / bert_flops(student, 8, 128).total
    assert theoretical_speedup(BERT_BASE, student, 8, 128) == expected
    assert 1.9 < expected < 2.0


@pytest.mark.parametrize(("batch", "seq_len", "message"), [(0, 8, "batch"), (1, 513, "seq_len"), (True, 8, "batch")])
def test_flops_reject_bad_shapes(batch: int, seq_len: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bert_flops(BERT_BASE, batch, seq_len)


def test_flops_reject_non_bert() -> None:
    with pytest.raises(ValueError, match="student_config"):
        theoretical_speedup(BERT_BASE, {"hidden_size": 8}, 1, 8)  # type: ignore[arg-type]


def test_latency_stats_by_hand() -> None:
    stats = latency_stats([float(value) for value in range(1, 11)])
    assert stats == LatencyStats(median_ms=5.5, p10_ms=1.9, p90_ms=9.1, iqr_ms=4.5, mean_ms=5.5, repeats=10)
    with pytest.raises(ValueError, match="samples_ms"):
        latency_stats([])


def _check_structure(results: dict[tuple[int, int], LatencyStats], protocol: LatencyProtocol) -> None:
    assert list(results) == list(protocol.points)
    for stats in results.values():
        assert stats.repeats == protocol.repeats
        assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
        assert stats.iqr_ms >= 0


def test_torch_latency_structure_and_restores_state(tiny_teacher: BertForSequenceClassification) -> None:
    tiny_teacher.train()
    with torch_threads(2):
        results = measure_latency(tiny_teacher, TINY_PROTOCOL, tiny_teacher.config.vocab_size)
        assert torch.get_num_threads() == 2
    _check_structure(results, TINY_PROTOCOL)
    assert tiny_teacher.training


def test_int8_model_latency(tiny_teacher: BertForSequenceClassification) -> None:
    quantized = quantize_int8_dynamic(tiny_teacher)
    _check_structure(measure_latency(quantized, TINY_PROTOCOL, tiny_teacher.config.vocab_size), TINY_PROTOCOL)


class _Recorder(nn.Module):
    """Records the conditions and inputs of each call instead of computing anything."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool, bool, torch.Tensor]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> None:
        assert attention_mask.eq(1).all() and token_type_ids.eq(0).all()
        self.calls.append((torch.get_num_threads(), torch.is_inference_mode_enabled(), self.training, input_ids))


def test_torch_latency_protocol_conditions() -> None:
    recorder = _Recorder()
    protocol = LatencyProtocol(points=((3, 5),), warmup=2, repeats=4, num_threads=1, seed=7)
    measure_latency(recorder, protocol, vocab_size=11)
    assert len(recorder.calls) == 6
    assert {call[:3] for call in recorder.calls} == {(1, True, False)}
    first = recorder.calls[0][3]
    assert first.shape == (3, 5) and first.dtype == torch.long and first.min() >= 0 and first.max() < 11
    assert all(torch.equal(call[3], first) for call in recorder.calls)
    again = _Recorder()
    measure_latency(again, protocol, vocab_size=11)
    assert torch.equal(again.calls[0][3], first)


def test_thread_count_restored_after_failure() -> None:
    class Broken(nn.Module):
        def forward(self, **inputs: torch.Tensor) -> None:
            raise RuntimeError("boom")

    with torch_threads(2):
        with pytest.raises(RuntimeError, match="boom"):
            measure_latency(Broken(), TINY_PROTOCOL, vocab_size=10)
        assert torch.get_num_threads() == 2


def _summing_onnx(path: Path) -> Path:
    """A tiny ONNX classifier stand-in: logits = sum of token ids (exercises the runtime path only)."""
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids_float", "axes"], ["logits"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "summing", inputs, [output], initializer=[axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_onnxruntime_latency_from_path_and_session(tmp_path: Path) -> None:
    path = _summing_onnx(tmp_path / "summing.onnx")
    protocol = LatencyProtocol(points=((1, 8), (4, 32)), warmup=1, repeats=3, num_threads=1, backend="onnxruntime")
    _check_structure(measure_latency(path, protocol, vocab_size=100), protocol)
    _check_structure(measure_latency(make_onnx_session(path, 1), protocol, vocab_size=100), protocol)
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        measure_latency(make_onnx_session(path, 2), protocol, vocab_size=100)
    with pytest.raises(ValueError, match="device"):
        measure_latency(path, protocol, vocab_size=100, device="cuda:0")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("points", ()),
        ("points", ((1, 0),)),
        ("points", ((1, 8, 2),)),
        ("points", (1, 64)),
        ("warmup", -1),
        ("repeats", 0),
        ("num_threads", 0),
        ("backend", "tensorrt"),
        ("seed", 1.5),
    ],
)
def test_protocol_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LatencyProtocol(**{field: value})  # type: ignore[arg-type]


def test_protocol_defaults_and_list_points() -> None:
    assert LatencyProtocol().points == ((1, 64), (32, 128))
    assert LatencyProtocol(points=[[2, 16]]).points == ((2, 16),)  # type: ignore[arg-type]


def test_measure_latency_rejects_bad_arguments(tiny_teacher: BertForSequenceClassification) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        measure_latency(tiny_teacher, TINY_PROTOCOL, vocab_size=0)
    with pytest.raises(ValueError, match="device"):
        measure_latency(tiny_teacher, TINY_PROTOCOL, vocab_size=10, device="meta")
    with pytest.raises(ValueError, match=r"protocol\.points"):
        measure_latency(tiny_teacher, LatencyProtocol(points=((1, 129),)), vocab_size=10)
    with pytest.raises(ValueError, match="model_or_session"):
        measure_latency("model.onnx", TINY_PROTOCOL, vocab_size=10)


def test_parameter_counts_by_hand(tiny_teacher: BertForSequenceClassification) -> None:
    vocab = tiny_teacher.config.vocab_size
    counts = count_parameters(tiny_teacher)
    assert counts.embedding == vocab * 32 + 128 * 32 + 2 * 32
    # Per layer: Q, K, V, O (32*32 + 32 each) + FFN (32*64 + 64, 64*32 + 32) + two LayerNorms (2 * 64).
    per_layer = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 64
    # Plus the embedding LayerNorm, the pooler and the classifier.
    assert counts.non_embedding == 4 * per_layer + 64 + (32 * 32 + 32) + (32 * 2 + 2)
    assert counts.total == sum(parameter.numel() for parameter in tiny_teacher.parameters())


def test_shared_parameters_counted_once() -> None:
    embedding = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    counts = count_parameters(nn.ModuleDict({"embedding": embedding, "head": head}))
    assert counts.total == counts.embedding == 40 and counts.non_embedding == 0


def test_size_on_disk(tiny_bert_dir: Path, tmp_path: Path) -> None:
    assert size_on_disk(tiny_bert_dir) == (tiny_bert_dir / "model.safetensors").stat().st_size
    with pytest.raises(FileNotFoundError, match="model_dir"):
        size_on_disk(tmp_path)
    with pytest.raises(FileNotFoundError, match="model_dir"):
        size_on_disk(tmp_path / "missing")


def test_peak_memory_is_none_on_cpu(tiny_teacher: BertForSequenceClassification) -> None:
    assert peak_forward_memory_bytes(tiny_teacher, 2, 16, tiny_teacher.config.vocab_size) is None
    with pytest.raises(ValueError, match="seq_len"):
        peak_forward_memory_bytes(tiny_teacher, 2, 0, 10)
