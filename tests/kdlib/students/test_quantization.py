"""int8 dynamic quantization and TernaryBERT-style low-bit weight quantization with latent weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from distilsearch.kdlib.students.quantization import (
    QuantEmbedding,
    QuantLinear,
    apply_weight_quantization,
    materialize_quantized,
    quantize_int8_dynamic,
    quantize_weight,
    quantized_size_bytes,
)


def _batch(vocab_size: int, batch: int = 16, seq_len: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, vocab_size, (batch, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::2, seq_len // 2 :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _encoder_linears(model: BertForSequenceClassification) -> list[nn.Module]:
    return [module for module in model.bert.encoder.modules() if isinstance(module, nn.Linear)]


def test_int8_dynamic_agrees_with_fp32_and_leaves_input_alone(
    tiny_teacher: BertForSequenceClassification,
) -> None:
    batch = _batch(tiny_teacher.config.vocab_size, batch=64)
    quantized = quantize_int8_dynamic(tiny_teacher)
    reference, approximate = _logits(tiny_teacher, batch), _logits(quantized, batch)
    agreement = (reference.argmax(-1) == approximate.argmax(-1)).float().mean().item()
    assert agreement >= 0.9
    assert (reference - approximate).abs().max().item() < 0.1 * reference.abs().max().item() + 1e-3
    assert isinstance(quantized.bert.encoder.layer[0].attention.self.query, DynamicQuantizedLinear)
    assert isinstance(quantized.classifier, DynamicQuantizedLinear)
    assert type(tiny_teacher.bert.encoder.layer[0].attention.self.query) is nn.Linear


def test_int8_dynamic_rejects_non_module() -> None:
    with pytest.raises(ValueError, match="model"):
        quantize_int8_dynamic("bert")  # type: ignore[arg-type]


def test_ternary_by_hand_per_matrix_and_per_row() -> None:
    weight = torch.tensor([[1.0, -0.1, 0.5, -2.0], [0.2, 0.2, 0.2, -0.2]])
    # Per matrix: mean|w| = 4.4 / 8 = 0.55, threshold 0.385 keeps 1.0, 0.5, -2.0, alpha = 3.5 / 3.
    alpha = 3.5 / 3
    expected_matrix = torch.tensor([[alpha, 0.0, alpha, -alpha], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(quantize_weight(weight, 2, "matrix"), expected_matrix)
    # Per row: row 0 (mean 0.9, threshold 0.63) keeps 1.0 and -2.0, alpha 1.5; row 1 keeps all, alpha 0.2.
    expected_row = torch.tensor([[1.5, 0.0, 0.0, -1.5], [0.2, 0.2, 0.2, -0.2]])
    torch.testing.assert_close(quantize_weight(weight, 2, "row"), expected_row)


def test_eight_bit_by_hand() -> None:
    weight = torch.tensor([[1.27, -0.5, 0.0, 0.0101], [0.0, 0.0, 0.0, 0.0]])
    # Per matrix: scale = 1.27 / 127 = 0.01; the all-zero row stays zero.
    expected = torch.tensor([[1.27, -0.5, 0.0, 0.01], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(quantize_weight(weight, 8, "matrix"), expected)
    torch.testing.assert_close(quantize_weight(weight, 8, "row"), expected)


@pytest.mark.parametrize(
    ("bits", "granularity", "weight", "message"),
    [
        (4, "matrix", torch.ones(2, 2), "bits"),
        (2, "column", torch.ones(2, 2), "granularity"),
        (2, "matrix", torch.ones(2, 2, 2), "weight"),
    ],
)
def test_quantize_weight_rejects_bad_arguments(bits: int, granularity: str, weight: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quantize_weight(weight, bits, granularity)  # type: ignore[arg-type]


def test_apply_wraps_encoder_linears_only_and_keeps_parameters(
    tiny_teacher: BertForSequenceClassification,
) -> None:
    query = tiny_teacher.bert.encoder.layer[0].attention.self.query
    latent = query.weight
    keys = set(tiny_teacher.state_dict())
    apply_weight_quantization(tiny_teacher, 2, quantize_embeddings=True)
    assert all(isinstance(module, QuantLinear) for module in _encoder_linears(tiny_teacher))
    assert isinstance(tiny_teacher.bert.embeddings.word_embeddings, QuantEmbedding)
    assert type(tiny_teacher.bert.embeddings.position_embeddings) is nn.Embedding
    assert type(tiny_teacher.bert.pooler.dense) is nn.Linear
    assert type(tiny_teacher.classifier) is nn.Linear
    assert tiny_teacher.bert.encoder.layer[0].attention.self.query.weight is latent
    assert set(tiny_teacher.state_dict()) == keys
    with pytest.raises(ValueError, match="already"):
        apply_weight_quantization(tiny_teacher, 2)


def test_forward_uses_quantized_weights_and_gradients_reach_latent(
    tiny_teacher: BertForSequenceClassification,
) -> None:
    batch = _batch(tiny_teacher.config.vocab_size)
    labels = torch.arange(16) % 2
    optimizer = torch.optim.SGD(tiny_teacher.parameters(), lr=0.1)
    aware = apply_weight_quantization(tiny_teacher, 2, granularity="row", quantize_embeddings=True)
    baked = materialize_quantized(copy.deepcopy(aware))
    aware.train(), baked.train()
    torch.manual_seed(0)
    loss_aware = aware(**batch, labels=labels).loss
    torch.manual_seed(0)
    loss_baked = baked(**batch, labels=labels).loss
    torch.testing.assert_close(loss_aware, loss_baked)
    loss_aware.backward()
    loss_baked.backward()
    aware_query = aware.bert.encoder.layer[0].attention.self.query
    baked_query = baked.bert.encoder.layer[0].attention.self.query
    # Straight-through: the latent weight gets exactly the gradient of the quantized weight it stands for.
    torch.testing.assert_close(aware_query.weight.grad, baked_query.weight.grad)
    assert aware_query.weight.grad.abs().sum() > 0
    assert aware.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    before = aware_query.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(aware_query.weight, before)


@pytest.mark.parametrize("bits", [2, 8])
def test_materialize_gives_stock_model_with_same_outputs(
    tiny_teacher: BertForSequenceClassification, tmp_path: Path, bits: int
) -> None:
    batch = _batch(tiny_teacher.config.vocab_size)
    apply_weight_quantization(tiny_teacher, bits, quantize_embeddings=True)
    aware_logits = _logits(tiny_teacher, batch)
    materialize_quantized(tiny_teacher)
    assert not any(isinstance(m, QuantLinear | QuantEmbedding) for m in tiny_teacher.modules())
    torch.testing.assert_close(_logits(tiny_teacher, batch), aware_logits, rtol=0, atol=0)
    distinct = {module.weight.unique().numel() for module in _encoder_linears(tiny_teacher)}
    assert max(distinct) <= (3 if bits == 2 else 255)
    tiny_teacher.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(_logits(reloaded, batch), aware_logits, rtol=0, atol=0)


def test_quantized_size_bytes_by_hand(tiny_teacher: BertForSequenceClassification) -> None:
    vocab = tiny_teacher.config.vocab_size
    # Tiny BERT: 4 layers, hidden 32, intermediate 64, 128 positions, 2 token types, 2 labels.
    # Per layer, quantized: Q, K, V, O (32x32) + up (64x32) + down (32x64) = 8192 weights.
    # Per layer, fp32: biases 4*32 + 64 + 32 = 224 and two LayerNorms 2*(32+32) = 128, i.e. 352 floats.
    # Outside the encoder, fp32: position 128*32, token type 2*32, embedding LayerNorm 64,
    # pooler 32*32 + 32, classifier 32*2 + 2.
    fp32_elsewhere = 4 * (4 * 352 + 128 * 32 + 2 * 32 + 64 + 32 * 32 + 32 + 32 * 2 + 2)
    ternary_per_matrix = 4 * (8192 * 2 // 8 + 6 * 4)
    assert quantized_size_bytes(tiny_teacher, 2) == ternary_per_matrix + fp32_elsewhere + 4 * vocab * 32
    # Per row: one fp32 scale per output row, 3*32 + 32 + 64 + 32 = 224 rows per layer.
    ternary_per_row = 4 * (8192 * 2 // 8 + 224 * 4)
    assert quantized_size_bytes(tiny_teacher, 2, granularity="row") == (
        ternary_per_row + fp32_elsewhere + 4 * vocab * 32
    )
    # Ternary word embeddings: 2 bits per entry, packed, plus one scale per row (token).
    ternary_embeddings = -(-vocab * 32 * 2 // 8) + 4 * vocab
    assert quantized_size_bytes(tiny_teacher, 2, quantize_embeddings=True) == (
        ternary_per_matrix + fp32_elsewhere + ternary_embeddings
    )
    eight_bit = 4 * (8192 + 6 * 4)
    assert quantized_size_bytes(tiny_teacher, 8) == eight_bit + fp32_elsewhere + 4 * vocab * 32
    stock_size = quantized_size_bytes(tiny_teacher, 2)
    apply_weight_quantization(tiny_teacher, 2)
    assert quantized_size_bytes(tiny_teacher, 2) == stock_size
    materialize_quantized(tiny_teacher)
    assert quantized_size_bytes(tiny_teacher, 2) == stock_size


def test_low_bit_rejects_bad_arguments(tiny_teacher: BertForSequenceClassification) -> None:
    with pytest.raises(ValueError, match="bits"):
        apply_weight_quantization(tiny_teacher, 4)
    with pytest.raises(ValueError, match="granularity"):
        quantized_size_bytes(tiny_teacher, 2, granularity="tensor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        apply_weight_quantization(nn.Sequential(nn.Linear(2, 2)), 2)
