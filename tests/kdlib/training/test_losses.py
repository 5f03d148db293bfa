"""Distillation losses checked against formulas written out independently with numpy loops."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from transformers import AutoTokenizer

from distilsearch.kdlib.training.losses import (
    HiddenProjection,
    attention_loss,
    combine_losses,
    cosine_embedding_loss,
    embedding_loss,
    hard_label_loss,
    hidden_state_loss,
    map_heads,
    shared_head_count,
    soft_target_loss,
    value_relation_loss,
)

MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
"""Three sequences of length 5 with 5, 3 and 2 real tokens."""


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def t64(array: np.ndarray, grad: bool = False) -> Tensor:
    return torch.tensor(array, dtype=torch.float64, requires_grad=grad)


def np_softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def attention_maps(generator: np.random.Generator, batch: int, heads: int, seq: int) -> np.ndarray:
    return np_softmax(generator.normal(size=(batch, heads, seq, seq)))


def masked_attention_maps(generator: np.random.Generator, heads: int, mask: np.ndarray) -> np.ndarray:
    """Attention probabilities shaped like Hugging Face's: padded keys get exactly zero probability."""
    batch, seq = mask.shape
    scores = generator.normal(size=(batch, heads, seq, seq))
    scores[np.broadcast_to(mask[:, None, None, :] == 0, scores.shape)] = -np.inf
    return np_softmax(scores)


def close(actual: Tensor, expected: float | np.ndarray) -> None:
    torch.testing.assert_close(actual.detach(), torch.as_tensor(expected, dtype=actual.dtype))


# soft_target_loss / hard_label_loss


def ref_soft_target(student: np.ndarray, teacher: np.ndarray, temps: list[float]) -> np.ndarray:
    losses = []
    for row, temp in enumerate(temps):
        p_teacher = np_softmax(teacher[row] / temp)
        p_student = np_softmax(student[row] / temp)
        kl = sum(p_teacher[c] * math.log(p_teacher[c] / p_student[c]) for c in range(len(p_teacher)))
        losses.append(temp**2 * kl)
    return np.array(losses)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_target_matches_formula(temperature: float) -> None:
    student, teacher = rng().normal(size=(4, 3)), rng(1).normal(size=(4, 3)) * 3
    expected = ref_soft_target(student, teacher, [temperature] * 4)
    close(soft_target_loss(t64(student), t64(teacher), temperature), expected.mean())
    close(soft_target_loss(t64(student), t64(teacher), temperature, reduction="sum"), expected.sum())
    close(soft_target_loss(t64(student), t64(teacher), temperature, reduction="none"), expected)


@pytest.mark.parametrize("temperature", [2.0, 5.0])
def test_soft_target_scales_by_temperature_squared(temperature: float) -> None:
    student, teacher = t64(rng().normal(size=(4, 3))), t64(rng(1).normal(size=(4, 3)))
    unscaled = soft_target_loss(student / temperature, teacher / temperature, 1.0)
    close(soft_target_loss(student, teacher, temperature), temperature**2 * unscaled.item())


def test_per_example_temperature_matches_loop_over_examples() -> None:
    student, teacher = rng().normal(size=(4, 3)), rng(1).normal(size=(4, 3))
    temps = [0.5, 1.0, 2.0, 7.0]
    per_example = soft_target_loss(t64(student), t64(teacher), t64(np.array(temps)), reduction="none")
    one_by_one = [soft_target_loss(t64(student[i : i + 1]), t64(teacher[i : i + 1]), temps[i]) for i in range(4)]
    close(per_example, torch.stack(one_by_one).detach().numpy())
    close(per_example, ref_soft_target(student, teacher, temps))
    close(
        soft_target_loss(t64(student), t64(teacher), t64(np.array(temps))),
        np.mean(per_example.detach().numpy()),
    )


def test_scalar_tensor_temperature_equals_float() -> None:
    student, teacher = t64(rng().normal(size=(2, 5))), t64(rng(1).normal(size=(2, 5)))
    close(soft_target_loss(student, teacher, torch.tensor(3.0)), soft_target_loss(student, teacher, 3.0).item())


def test_soft_target_zero_for_identical_logits() -> None:
    logits = t64(rng().normal(size=(3, 4)))
    close(soft_target_loss(logits, logits.clone(), 2.0), 0.0)
    close(soft_target_loss(logits, logits.clone(), t64(np.array([1.0, 2.0, 3.0]))), 0.0)


def test_soft_target_gradients_reach_student_and_temperature() -> None:
    student = t64(rng().normal(size=(3, 4)), grad=True)
    temps = t64(np.array([1.0, 2.0, 3.0]), grad=True)
    soft_target_loss(student, t64(rng(1).normal(size=(3, 4))), temps).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert temps.grad is not None and torch.isfinite(temps.grad).all() and temps.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("student", "teacher", "temperature", "reduction", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), 1.0, "mean", "teacher_logits shape"),
        (torch.zeros(3), torch.zeros(3), 1.0, "mean", "student_logits must have 2 dimensions"),
        (
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 3),
            1.0,
            "mean",
            "student_logits must be a float",
        ),
        (torch.zeros(0, 3), torch.zeros(0, 3), 1.0, "mean", "student_logits must not be empty"),
        (torch.zeros(2, 3), torch.zeros(2, 3), 0.0, "mean", "temperature must be finite and > 0"),
        (torch.zeros(2, 3), torch.zeros(2, 3), math.inf, "mean", "temperature must be finite and > 0"),
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -1.0]), "mean", "temperature must be"),
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3), "mean", r"temperature tensor .* shape \(2,\)"),
        (torch.zeros(2, 3), torch.zeros(2, 3), "2", "mean", "temperature must be a positive number"),
        (torch.zeros(2, 3), torch.zeros(2, 3), 1.0, "batchmean", "reduction must be one of"),
    ],
)
def test_soft_target_rejects_bad_input(
    student: Tensor, teacher: Tensor, temperature: object, reduction: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        soft_target_loss(student, teacher, temperature, reduction=reduction)  # type: ignore[arg-type]


def test_hard_label_matches_negative_log_likelihood() -> None:
    logits, labels = rng().normal(size=(4, 3)), np.array([0, 2, 1, 2])
    expected = np.array([-math.log(np_softmax(logits[i])[labels[i]]) for i in range(4)])
    student = t64(logits, grad=True)
    loss = hard_label_loss(student, torch.tensor(labels))
    close(loss, expected.mean())
    close(hard_label_loss(student, torch.tensor(labels), reduction="none"), expected)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.tensor([0.0, 1.0]), "labels must be an integer tensor"),
        (torch.tensor([0, 1, 1]), r"labels must have shape \(2,\)"),
        (torch.tensor([0, 3]), r"labels must lie in \[0, 3\)"),
        (torch.tensor([-1, 0]), r"labels must lie in \[0, 3\)"),
    ],
)
def test_hard_label_rejects_bad_labels(labels: Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hard_label_loss(torch.zeros(2, 3), labels)


# HiddenProjection and the token-level losses


def test_hidden_projection_builds_one_linear_per_layer() -> None:
    projection = HiddenProjection(8, 12, layers=[0, 2, 4])
    assert isinstance(projection.maps, nn.ModuleDict) and projection.layers == (0, 2, 4)
    for layer in (0, 2, 4):
        assert isinstance(projection[layer], nn.Linear)
        assert projection[layer].weight.shape == (12, 8)
    assert projection(torch.zeros(2, 5, 8), 2).shape == (2, 5, 12)
    assert len(list(projection.parameters())) == 6
    with pytest.raises(ValueError, match=r"layer 1 has no projection; mapped layers are \(0, 2, 4\)"):
        projection[1]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 12, [1]), "student_width must be a positive int"),
        ((8, -1, [1]), "teacher_width must be a positive int"),
        ((8, 12, []), "layers must name at least one"),
        ((8, 12, [1, -2]), "layers must hold non-negative ints, got -2"),
        ((8, 12, [1, 1]), "layers must not repeat"),
    ],
)
def test_hidden_projection_rejects_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HiddenProjection(*args)


def ref_projected_mse(student: np.ndarray, teacher: np.ndarray, linear: nn.Linear, mask: np.ndarray) -> float:
    weight, bias = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for s in range(student.shape[1]):
            if mask[b, s]:
                projected = weight @ student[b, s] + bias
                total += float(((projected - teacher[b, s]) ** 2).sum())
                count += teacher.shape[-1]
    return total / count


@pytest.mark.parametrize("loss_fn", [hidden_state_loss, embedding_loss])
@pytest.mark.parametrize("mask", [None, MASK])
def test_projected_mse_matches_formula(loss_fn: Callable[..., Tensor], mask: np.ndarray | None) -> None:
    student, teacher = rng().normal(size=(3, 5, 4)), rng(1).normal(size=(3, 5, 6))
    linear = HiddenProjection(4, 6, layers=[0]).double()[0]
    torch_mask = None if mask is None else torch.tensor(mask)
    expected = ref_projected_mse(student, teacher, linear, np.ones((3, 5)) if mask is None else mask)
    close(loss_fn(t64(student), t64(teacher), linear, torch_mask), expected)


def ref_cosine(student: np.ndarray, teacher: np.ndarray, mask: np.ndarray) -> float:
    values = []
    for b in range(student.shape[0]):
        for s in range(student.shape[1]):
            if mask[b, s]:
                dot = float(student[b, s] @ teacher[b, s])
                values.append(1 - dot / (np.linalg.norm(student[b, s]) * np.linalg.norm(teacher[b, s])))
    return float(np.mean(values))


@pytest.mark.parametrize("mask", [None, MASK])
def test_cosine_embedding_matches_formula(mask: np.ndarray | None) -> None:
    student, teacher = rng().normal(size=(3, 5, 6)), rng(1).normal(size=(3, 5, 6))
    torch_mask = None if mask is None else torch.tensor(mask)
    expected = ref_cosine(student, teacher, np.ones((3, 5)) if mask is None else mask)
    close(cosine_embedding_loss(t64(student), t64(teacher), attention_mask=torch_mask), expected)
    linear = nn.Linear(4, 6).double()
    small = rng(2).normal(size=(3, 5, 4))
    projected = linear(t64(small)).detach().numpy()
    expected = ref_cosine(projected, teacher, np.ones((3, 5)) if mask is None else mask)
    close(cosine_embedding_loss(t64(small), t64(teacher), linear, torch_mask), expected)


@pytest.mark.parametrize("loss_fn", [hidden_state_loss, embedding_loss, cosine_embedding_loss])
def test_token_losses_zero_for_identical_states(loss_fn: Callable[..., Tensor]) -> None:
    states = t64(rng().normal(size=(3, 5, 6)))
    close(loss_fn(states, states.clone()), 0.0)
    close(loss_fn(states, states.clone(), None, torch.tensor(MASK)), 0.0)


def pad_noise(array: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """Copy of ``(batch, seq, ...)`` ``array`` with fresh random values at padded positions."""
    noisy = array.copy()
    noise = rng(seed).normal(size=array.shape) * 10
    noisy[mask == 0] = noise[mask == 0]
    return noisy


@pytest.mark.parametrize("loss_fn", [hidden_state_loss, embedding_loss, cosine_embedding_loss])
def test_token_losses_ignore_padded_positions(loss_fn: Callable[..., Tensor]) -> None:
    student, teacher = rng().normal(size=(3, 5, 4)), rng(1).normal(size=(3, 5, 6))
    linear, mask = nn.Linear(4, 6).double(), torch.tensor(MASK)
    clean = loss_fn(t64(student), t64(teacher), linear, mask)
    noisy = loss_fn(t64(pad_noise(student, MASK, 2)), t64(pad_noise(teacher, MASK, 3)), linear, mask)
    close(noisy, clean.item())
    assert not torch.isclose(loss_fn(t64(pad_noise(student, MASK, 2)), t64(teacher), linear), clean)


@pytest.mark.parametrize("loss_fn", [hidden_state_loss, embedding_loss, cosine_embedding_loss])
def test_token_losses_send_gradients_to_student_and_projection(loss_fn: Callable[..., Tensor]) -> None:
    projection = HiddenProjection(4, 6, layers=[0, 3]).double()
    student = t64(rng().normal(size=(3, 5, 4)), grad=True)
    loss_fn(student, t64(rng(1).normal(size=(3, 5, 6))), projection[3], torch.tensor(MASK)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert student.grad[torch.tensor(MASK) == 0].abs().sum() == 0
    for parameter in projection[3].parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in projection[0].parameters())


def test_projection_learns_to_reduce_hidden_state_loss() -> None:
    torch.manual_seed(0)
    projection = HiddenProjection(4, 6, layers=[1])
    student = torch.randn(3, 5, 4)
    teacher = student @ torch.randn(4, 6)
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.1)
    first = hidden_state_loss(student, teacher, projection[1]).item()
    for _ in range(30):
        optimizer.zero_grad()
        hidden_state_loss(student, teacher, projection[1]).backward()
        optimizer.step()
    assert hidden_state_loss(student, teacher, projection[1]).item() < 0.5 * first


@pytest.mark.parametrize("loss_fn", [hidden_state_loss, embedding_loss, cosine_embedding_loss])
def test_token_losses_reject_bad_shapes(loss_fn: Callable[..., Tensor]) -> None:
    with pytest.raises(ValueError, match=r"without a projection, expected .* shape \(2, 5, 6\)"):
        loss_fn(torch.zeros(2, 5, 4), torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match=r"after projection, expected .* shape \(2, 5, 6\)"):
        loss_fn(torch.zeros(2, 5, 4), torch.zeros(2, 5, 6), nn.Linear(4, 5))
    with pytest.raises(ValueError, match=r"\(batch, seq\) \(2, 4\) !="):
        loss_fn(torch.zeros(2, 4, 6), torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="must have 3 dimensions"):
        loss_fn(torch.zeros(5, 6), torch.zeros(5, 6))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 5\), got \(2, 4\)"):
        loss_fn(torch.zeros(2, 5, 6), torch.zeros(2, 5, 6), None, torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask marks every position as padding"):
        loss_fn(torch.zeros(2, 5, 6), torch.zeros(2, 5, 6), None, torch.zeros(2, 5))


# Attention maps and head mapping


def np_group_heads(attn: np.ndarray, target: int) -> np.ndarray:
    heads = attn.shape[1]
    if heads % target:
        return attn.mean(axis=1, keepdims=True)
    size = heads // target
    return np.stack([attn[:, g * size : (g + 1) * size].mean(axis=1) for g in range(target)], axis=1)


def ref_attention(student: np.ndarray, teacher: np.ndarray, kind: str, mask: np.ndarray) -> float:
    batch, heads, seq, _ = teacher.shape
    values, pair_count = [], 0
    for b in range(batch):
        keys = [k for k in range(seq) if mask[b, k]]
        for h in range(heads):
            for q in keys:
                s, t = student[b, h, q, keys], teacher[b, h, q, keys]
                if kind == "mse":
                    values.append(float(((s - t) ** 2).sum()))
                    pair_count += len(keys)
                elif kind == "kl":
                    values.append(sum(t[i] * math.log(t[i] / s[i]) for i in range(len(keys))))
                else:
                    values.append(1 - float(s @ t) / (np.linalg.norm(s) * np.linalg.norm(t)))
    return sum(values) / pair_count if kind == "mse" else float(np.mean(values))


@pytest.mark.parametrize("kind", ["mse", "kl", "cosine"])
@pytest.mark.parametrize("mask", [None, MASK])
def test_attention_loss_matches_formula(kind: str, mask: np.ndarray | None) -> None:
    student, teacher = attention_maps(rng(), 3, 2, 5), attention_maps(rng(1), 3, 2, 5)
    torch_mask = None if mask is None else torch.tensor(mask)
    expected = ref_attention(student, teacher, kind, np.ones((3, 5)) if mask is None else mask)
    close(attention_loss(t64(student), t64(teacher), kind, torch_mask), expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("student_heads", "teacher_heads", "shared"),
    [(4, 4, 4), (2, 6, 2), (6, 3, 3), (4, 6, 1), (3, 2, 1), (1, 5, 1)],
    ids=["equal", "teacher-multiple", "student-multiple", "non-divisible", "non-divisible-fewer", "one-head"],
)
@pytest.mark.parametrize("kind", ["mse", "kl", "cosine"])
def test_attention_loss_maps_heads(student_heads: int, teacher_heads: int, shared: int, kind: str) -> None:
    student = attention_maps(rng(), 3, student_heads, 5)
    teacher = attention_maps(rng(1), 3, teacher_heads, 5)
    assert shared_head_count(student_heads, teacher_heads) == shared
    expected = ref_attention(np_group_heads(student, shared), np_group_heads(teacher, shared), kind, MASK)
    close(attention_loss(t64(student), t64(teacher), kind, torch.tensor(MASK)), expected)  # type: ignore[arg-type]


def test_map_heads_averages_groups_or_everything() -> None:
    attn = attention_maps(rng(), 2, 6, 4)
    assert map_heads(t64(attn), 6).shape == (2, 6, 4, 4)
    close(map_heads(t64(attn), 6), attn)
    grouped = map_heads(t64(attn), 3)
    close(grouped, np.stack([(attn[:, 2 * g] + attn[:, 2 * g + 1]) / 2 for g in range(3)], axis=1))
    for target in (4, 1, 12):
        close(map_heads(t64(attn), target), attn.mean(axis=1, keepdims=True))
    close(grouped.sum(dim=-1), np.ones((2, 3, 4)))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_target_heads must be a positive int"):
            map_heads(t64(attn), bad)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    student_heads=st.integers(1, 8),
    teacher_heads=st.integers(1, 8),
    kind=st.sampled_from(["mse", "kl", "cosine"]),
    seed=st.integers(0, 1000),
)
def test_attention_loss_accepts_any_head_counts(student_heads: int, teacher_heads: int, kind: str, seed: int) -> None:
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    student = t64(masked_attention_maps(rng(seed), student_heads, mask), grad=True)
    teacher = t64(masked_attention_maps(rng(seed + 1), teacher_heads, mask))
    loss = attention_loss(student, teacher, kind, torch.tensor(mask))  # type: ignore[arg-type]
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > -1e-12
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["mse", "kl", "cosine"])
def test_attention_loss_zero_for_identical_maps(kind: str) -> None:
    attn = t64(attention_maps(rng(), 3, 4, 5))
    close(attention_loss(attn, attn.clone(), kind), 0.0)  # type: ignore[arg-type]
    close(attention_loss(attn, attn.clone(), kind, torch.tensor(MASK)), 0.0)  # type: ignore[arg-type]


def attention_pad_noise(attn: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """Copy of ``attn`` with fresh random values in padded query rows and padded key columns."""
    noisy = attn.copy()
    noise = rng(seed).uniform(size=attn.shape)
    padded = (mask[:, None, :, None] == 0) | (mask[:, None, None, :] == 0)
    padded = np.broadcast_to(padded, attn.shape)
    noisy[padded] = noise[padded]
    return noisy


@pytest.mark.parametrize("kind", ["mse", "kl", "cosine"])
def test_attention_loss_ignores_padded_positions(kind: str) -> None:
    student, teacher = attention_maps(rng(), 3, 2, 5), attention_maps(rng(1), 3, 4, 5)
    mask = torch.tensor(MASK)
    clean = attention_loss(t64(student), t64(teacher), kind, mask)  # type: ignore[arg-type]
    noisy_student, noisy_teacher = (
        attention_pad_noise(student, MASK, 2),
        attention_pad_noise(teacher, MASK, 3),
    )
    close(attention_loss(t64(noisy_student), t64(noisy_teacher), kind, mask), clean.item())  # type: ignore[arg-type]
    assert not torch.isclose(attention_loss(t64(noisy_student), t64(teacher), kind), clean)  # type: ignore[arg-type]


def test_attention_loss_gradient_skips_padded_positions() -> None:
    student = t64(attention_maps(rng(), 3, 2, 5), grad=True)
    attention_loss(student, t64(attention_maps(rng(1), 3, 2, 5)), "kl", torch.tensor(MASK)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    padded = (torch.tensor(MASK)[:, None, :, None] == 0) | (torch.tensor(MASK)[:, None, None, :] == 0)
    assert student.grad[padded.expand_as(student)].abs().sum() == 0


@pytest.mark.parametrize(
    ("student", "teacher", "kind", "mask", "match"),
    [
        (torch.zeros(2, 2, 5, 5), torch.zeros(2, 2, 5, 5), "l1", None, "kind must be one of"),
        (torch.zeros(2, 2, 5, 5), torch.zeros(2, 2, 5, 4), "mse", None, "must agree on batch, query and key"),
        (torch.zeros(3, 2, 5, 5), torch.zeros(2, 2, 5, 5), "mse", None, "must agree on batch, query and key"),
        (torch.zeros(2, 5, 5), torch.zeros(2, 2, 5, 5), "mse", None, "student_attn must have 4 dimensions"),
        (torch.zeros(2, 2, 4, 5), torch.zeros(2, 2, 4, 5), "mse", torch.ones(2, 5), "square attention maps"),
        (
            torch.zeros(2, 2, 5, 5),
            torch.zeros(2, 2, 5, 5),
            "kl",
            torch.ones(2, 4),
            "attention_mask must have",
        ),
    ],
)
def test_attention_loss_rejects_bad_input(
    student: Tensor, teacher: Tensor, kind: str, mask: Tensor | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        attention_loss(student, teacher, kind, mask)  # type: ignore[arg-type]


def test_shared_head_count_rejects_non_positive_heads() -> None:
    with pytest.raises(ValueError, match="teacher_heads must be a positive int, got 0"):
        shared_head_count(4, 0)


def test_masked_losses_stay_finite_in_half_precision() -> None:
    student, teacher = masked_attention_maps(rng(), 2, MASK), masked_attention_maps(rng(1), 4, MASK)
    values_student, values_teacher = rng(2).normal(size=(3, 5, 8)) * 8, rng(3).normal(size=(3, 5, 8)) * 8
    mask = torch.tensor(MASK)
    for loss_fn, args in (
        (attention_loss, (student, teacher, "kl")),
        (value_relation_loss, (values_student, values_teacher, 2)),
    ):
        full = loss_fn(t64(args[0]).float(), t64(args[1]).float(), args[2], mask)
        half = loss_fn(t64(args[0]).half(), t64(args[1]).half(), args[2], mask)
        assert torch.isfinite(half)
        torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=1e-2)


# MiniLM value relation


def ref_value_relation(student: np.ndarray, teacher: np.ndarray, heads: int, mask: np.ndarray) -> float:
    def relation(values: np.ndarray, b: int, r: int, q: int, keys: list[int]) -> np.ndarray:
        width = values.shape[-1] // heads
        split = values[b, :, r * width : (r + 1) * width]
        return np_softmax(np.array([split[q] @ split[k] / math.sqrt(width) for k in keys]))

    kls = []
    for b in range(student.shape[0]):
        keys = [k for k in range(student.shape[1]) if mask[b, k]]
        for r in range(heads):
            for q in keys:
                t, s = relation(teacher, b, r, q, keys), relation(student, b, r, q, keys)
                kls.append(float((t * np.log(t / s)).sum()))
    return float(np.mean(kls))


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("mask", [None, MASK])
def test_value_relation_matches_formula(heads: int, mask: np.ndarray | None) -> None:
    student, teacher = rng().normal(size=(3, 5, 8)), rng(1).normal(size=(3, 5, 12))
    torch_mask = None if mask is None else torch.tensor(mask)
    expected = ref_value_relation(student, teacher, heads, np.ones((3, 5)) if mask is None else mask)
    close(value_relation_loss(t64(student), t64(teacher), heads, torch_mask), expected)


def test_value_relation_zero_for_identical_values() -> None:
    values = t64(rng().normal(size=(3, 5, 8)))
    close(value_relation_loss(values, values.clone(), 2), 0.0)
    close(value_relation_loss(values, values.clone(), 4, torch.tensor(MASK)), 0.0)


def test_value_relation_ignores_padding_and_sends_gradients() -> None:
    student, teacher = rng().normal(size=(3, 5, 8)), rng(1).normal(size=(3, 5, 12))
    mask = torch.tensor(MASK)
    clean = value_relation_loss(t64(student), t64(teacher), 4, mask)
    noisy_student = t64(pad_noise(student, MASK, 2), grad=True)
    noisy = value_relation_loss(noisy_student, t64(pad_noise(teacher, MASK, 3)), 4, mask)
    close(noisy, clean.item())
    noisy.backward()
    assert noisy_student.grad is not None and noisy_student.grad.abs().sum() > 0
    assert noisy_student.grad[mask == 0].abs().sum() == 0


@pytest.mark.parametrize(
    ("student", "teacher", "heads", "match"),
    [
        (torch.zeros(2, 5, 6), torch.zeros(2, 5, 8), 4, "student_values width 6 is not divisible"),
        (torch.zeros(2, 5, 8), torch.zeros(2, 5, 6), 4, "teacher_values width 6 is not divisible"),
        (torch.zeros(2, 5, 8), torch.zeros(2, 5, 8), 0, "num_relation_heads must be a positive int"),
        (torch.zeros(2, 4, 8), torch.zeros(2, 5, 8), 2, r"student_values \(batch, seq\)"),
        (torch.zeros(2, 5, 8), torch.zeros(2, 5), 2, "teacher_values must have 3 dimensions"),
    ],
)
def test_value_relation_rejects_bad_input(student: Tensor, teacher: Tensor, heads: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        value_relation_loss(student, teacher, heads)


# combine_losses


def test_combine_losses_weights_and_detaches() -> None:
    kd = torch.tensor(2.0, requires_grad=True)
    ce = torch.tensor(3.0, requires_grad=True)
    total, values = combine_losses({"kd": kd, "ce": ce}, {"kd": 0.5, "ce": 2.0, "attn": 0.0})
    close(total, 0.5 * 2.0 + 2.0 * 3.0)
    assert set(values) == {"kd", "ce"} and not any(value.requires_grad for value in values.values())
    close(values["kd"], 2.0)
    total.backward()
    assert kd.grad is not None and ce.grad is not None
    close(kd.grad, 0.5)
    close(ce.grad, 2.0)


def test_combine_losses_skips_zero_weights_and_reports_non_finite_terms() -> None:
    terms = {"kd": torch.tensor(1.0), "broken": torch.tensor(float("nan"))}
    total, values = combine_losses(terms, {"kd": 1.0, "broken": 0.0})
    close(total, 1.0)
    assert torch.isnan(values["broken"])
    total, values = combine_losses(terms, {"kd": 1.0, "broken": 1.0})
    assert not torch.isfinite(total)
    assert [key for key, value in values.items() if not torch.isfinite(value)] == ["broken"]


@pytest.mark.parametrize(
    ("terms", "weights", "match"),
    [
        ({"kd": torch.tensor(1.0)}, {"ce": 1.0}, r"terms has keys without a weight: \['kd'\]"),
        ({"kd": torch.tensor(1.0)}, {"kd": 1.0, "ce": 0.5}, r"nonzero weights for missing terms: \['ce'\]"),
        ({"kd": torch.tensor(1.0)}, {"kd": -1.0}, r"weights\['kd'\] must be a finite number >= 0"),
        ({"kd": torch.tensor(1.0)}, {"kd": float("nan")}, r"weights\['kd'\] must be a finite number"),
        ({"kd": torch.tensor(1.0)}, {"kd": "1"}, r"weights\['kd'\] must be a finite number"),
        ({"kd": torch.ones(2)}, {"kd": 1.0}, r"terms\['kd'\] must be a scalar tensor"),
        ({"kd": torch.tensor(1.0)}, {"kd": 0.0}, "no term a nonzero weight"),
    ],
)
def test_combine_losses_rejects_bad_input(terms: dict, weights: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        combine_losses(terms, weights)


# Real Hugging Face outputs


def test_masks_agree_with_hugging_face_padding(tiny_teacher: nn.Module, tiny_bert_dir) -> None:
    """Changing the ids under padding leaves every masked loss between the two runs at zero."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tokenizer(["a great film with a great cast", "dull plot"], padding=True, return_tensors="pt")
    other_ids = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, tokenizer.cls_token_id)
    with torch.no_grad():
        first = tiny_teacher(**batch, output_attentions=True, output_hidden_states=True)
        second = tiny_teacher(
            input_ids=other_ids,
            attention_mask=batch["attention_mask"],
            output_attentions=True,
            output_hidden_states=True,
        )
    mask = batch["attention_mask"]
    for kind in ("mse", "kl", "cosine"):
        assert attention_loss(first.attentions[-1], second.attentions[-1], kind, mask).abs() < 1e-6  # type: ignore[arg-type]
    assert hidden_state_loss(first.hidden_states[-1], second.hidden_states[-1], None, mask) < 1e-10
    assert hidden_state_loss(first.hidden_states[-1], second.hidden_states[-1]) > 1e-4
