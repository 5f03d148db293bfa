"""Cutting students out of the tiny teacher: exactness, weight mapping, importance and vocabulary trimming."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import TINY_CORPUS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn import functional
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from distilsearch.kdlib.students.cutting import NEW, cut_student, importance_needed, plan_cut, trim_vocabulary
from distilsearch.kdlib.students.importance import Importance, compute_importance
from distilsearch.kdlib.students.specs import StudentSpec

Batch = dict[str, Tensor]


@pytest.fixture(scope="module")
def teacher(tiny_bert_dir: Path) -> BertForSequenceClassification:
    """One eval-mode teacher shared by the module (no test may modify it)."""
    return BertForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def batch(tiny_bert_dir: Path) -> Batch:
    """The tiny corpus with alternating labels, as a calibration batch."""
    encoded = AutoTokenizer.from_pretrained(tiny_bert_dir)(TINY_CORPUS, padding=True, return_tensors="pt")
    return dict(encoded) | {"labels": torch.arange(len(TINY_CORPUS)) % 2}


@pytest.fixture(scope="module")
def importance(teacher: BertForSequenceClassification, batch: Batch) -> Importance:
    """The teacher's importance scores on the calibration batch."""
    return compute_importance(teacher, batch)


def inputs(batch: Batch) -> Batch:
    return {key: value for key, value in batch.items() if key != "labels"}


def logits(model: nn.Module, batch: Batch) -> Tensor:
    with torch.no_grad():
        return model(**inputs(batch)).logits


def spec_for(teacher: BertForSequenceClassification, **changes: object) -> StudentSpec:
    return StudentSpec.identity(teacher.config, **changes)


@contextmanager
def masked_context(model: BertForSequenceClassification, keep: Callable[[int], Tensor]) -> Iterator[None]:
    """Multiply each layer's attention context (the output projection's input) by ``keep(layer)``."""

    def hook(mask: Tensor, _module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (args[0] * mask,)

    handles = [
        layer.attention.output.dense.register_forward_pre_hook(partial(hook, keep(index)))
        for index, layer in enumerate(model.bert.encoder.layer)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- identity and layer selection -------------------------------------------------------------------


@pytest.mark.parametrize("layer_selection", ["uniform", "first", "last", "alternate", "explicit"])
@pytest.mark.parametrize("selection", ["importance", "position"])
def test_identity_cut_reproduces_teacher_logits(
    teacher: BertForSequenceClassification, batch: Batch, layer_selection: str, selection: str
) -> None:
    spec = spec_for(
        teacher,
        layer_selection=layer_selection,
        layers=(0, 1, 2, 3) if layer_selection == "explicit" else None,
        head_selection=selection,
        ffn_selection=selection,
        hidden_selection=selection,
    )
    assert importance_needed(spec, teacher.config) == ()
    student = cut_student(teacher, spec, batch if selection == "importance" else None)
    assert type(student) is BertForSequenceClassification and not student.training
    assert torch.allclose(logits(student, batch), logits(teacher, batch), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("layer_selection", "layers", "expected"),
    [
        ("uniform", None, (1, 3)),
        ("first", None, (0, 1)),
        ("last", None, (2, 3)),
        ("alternate", None, (0, 2)),
        ("explicit", (0, 3), (0, 3)),
    ],
)
def test_layer_selection_copies_the_chosen_teacher_layers(
    teacher: BertForSequenceClassification,
    layer_selection: str,
    layers: tuple[int, ...] | None,
    expected: tuple[int, int],
) -> None:
    student = cut_student(teacher, spec_for(teacher, num_layers=2, layer_selection=layer_selection, layers=layers))
    assert student.config.num_hidden_layers == 2
    for student_layer, teacher_layer in zip(student.bert.encoder.layer, expected, strict=True):
        source = teacher.bert.encoder.layer[teacher_layer].state_dict()
        for name, value in student_layer.state_dict().items():
            assert torch.equal(value, source[name]), name


def test_first_layers_student_equals_truncated_teacher(teacher: BertForSequenceClassification, batch: Batch) -> None:
    student = cut_student(teacher, spec_for(teacher, num_layers=2, layer_selection="first"))
    with torch.no_grad():
        hidden = teacher(**inputs(batch), output_hidden_states=True).hidden_states[2]
        expected = teacher.classifier(teacher.bert.pooler(hidden))
    assert torch.allclose(logits(student, batch), expected, atol=1e-5, rtol=0)


# --- heads ---------------------------------------------------------------------------------------------


def test_same_head_size_copies_whole_heads_chosen_by_importance(
    teacher: BertForSequenceClassification, batch: Batch, importance: Importance
) -> None:
    spec = spec_for(teacher, hidden_size=16, num_heads=2, hidden_selection="position")
    student = cut_student(teacher, spec, batch)
    plan = plan_cut(teacher.config, spec, importance)
    for index, cut in enumerate(plan.layers):
        best = torch.argsort(importance.heads[cut.teacher_layer], descending=True)[:2].sort().values.tolist()
        assert cut.heads == tuple(best)
        rows = [head * 8 + dim for head in cut.heads for dim in range(8)]
        assert cut.query_rows == cut.value_rows == tuple(rows)
        source, target = teacher.bert.encoder.layer[cut.teacher_layer], student.bert.encoder.layer[index]
        for name in ("query", "key", "value"):
            expected = getattr(source.attention.self, name).weight[rows][:, :16]
            assert torch.equal(getattr(target.attention.self, name).weight, expected), name
        assert torch.equal(target.attention.output.dense.weight, source.attention.output.dense.weight[:16][:, rows])


def test_narrower_heads_keep_the_most_important_dims_and_rescale_queries(
    teacher: BertForSequenceClassification, batch: Batch, importance: Importance
) -> None:
    spec = spec_for(teacher, hidden_size=16, num_heads=4, hidden_selection="position")
    student = cut_student(teacher, spec, batch)
    plan = plan_cut(teacher.config, spec, importance)
    assert plan.query_scale == pytest.approx(math.sqrt(4 / 8))
    for index, cut in enumerate(plan.layers):
        assert cut.heads == (0, 1, 2, 3)
        for head in range(4):
            span = slice(head * 8, head * 8 + 8)
            for rows, scores in (
                (cut.query_rows, importance.query_dims),
                (cut.value_rows, importance.value_dims),
            ):
                best = torch.argsort(scores[cut.teacher_layer, span], descending=True)[:4].sort().values + head * 8
                assert rows[head * 4 : head * 4 + 4] == tuple(best.tolist())
        source, target = teacher.bert.encoder.layer[cut.teacher_layer], student.bert.encoder.layer[index]
        query, value = list(cut.query_rows), list(cut.value_rows)
        scale = plan.query_scale
        assert torch.allclose(
            target.attention.self.query.weight, source.attention.self.query.weight[query][:, :16] * scale
        )
        assert torch.allclose(target.attention.self.query.bias, source.attention.self.query.bias[query] * scale)
        assert torch.equal(target.attention.self.key.weight, source.attention.self.key.weight[query][:, :16])
        assert torch.equal(target.attention.self.value.weight, source.attention.self.value.weight[value][:, :16])
        assert torch.equal(target.attention.output.dense.weight, source.attention.output.dense.weight[:16][:, value])


def test_wider_heads_pad_with_new_rows_and_compute_the_kept_teacher_heads_exactly(
    teacher: BertForSequenceClassification, batch: Batch
) -> None:
    spec = spec_for(teacher, num_heads=2, head_selection="position")
    student = cut_student(teacher, spec)
    plan = plan_cut(teacher.config, spec)
    new = [NEW] * 8
    assert plan.layers[0].query_rows == (*range(0, 8), *new, *range(8, 16), *new)
    fresh = torch.tensor([row == NEW for row in plan.layers[0].query_rows])
    for source, target in zip(teacher.bert.encoder.layer, student.bert.encoder.layer, strict=True):
        attention = target.attention
        assert torch.count_nonzero(attention.self.key.weight[fresh]) == 0
        assert torch.count_nonzero(attention.self.key.bias[fresh]) == 0
        assert torch.count_nonzero(attention.output.dense.weight[:, fresh]) == 0
        assert torch.all(attention.self.query.weight[fresh] != 0)
        assert torch.all(attention.self.value.weight[fresh] != 0)
        expected = source.attention.self.query.weight[:16] * math.sqrt(2)
        assert torch.allclose(attention.self.query.weight[~fresh], expected)
    first_two_heads = torch.cat([torch.ones(16), torch.zeros(16)])
    with masked_context(teacher, lambda _layer: first_two_heads):
        expected_logits = logits(teacher, batch)
    assert torch.allclose(logits(student, batch), expected_logits, atol=1e-5, rtol=0)


def test_head_pruning_by_importance_equals_masking_the_other_heads(
    teacher: BertForSequenceClassification, batch: Batch, importance: Importance
) -> None:
    spec = spec_for(teacher, num_heads=1)
    plan = plan_cut(teacher.config, spec, importance)
    kept = [cut.heads for cut in plan.layers]

    def keep(layer: int) -> Tensor:
        return torch.tensor([float(dim // 8 in kept[layer]) for dim in range(32)])

    with masked_context(teacher, keep):
        expected = logits(teacher, batch)
    assert torch.allclose(logits(cut_student(teacher, spec, batch), batch), expected, atol=1e-5, rtol=0)


# --- FFN and hidden ------------------------------------------------------------------------------------


def test_ffn_cut_equals_teacher_with_the_other_neurons_silenced(
    teacher: BertForSequenceClassification, batch: Batch, importance: Importance
) -> None:
    spec = spec_for(teacher, ffn_size=16)
    plan = plan_cut(teacher.config, spec, importance)
    masked = copy.deepcopy(teacher)
    for cut, layer in zip(plan.layers, masked.bert.encoder.layer, strict=True):
        best = torch.argsort(importance.ffn[cut.teacher_layer], descending=True)[:16].sort().values
        assert cut.ffn == tuple(best.tolist())
        dropped = torch.ones(64, dtype=torch.bool)
        dropped[list(cut.ffn)] = False
        with torch.no_grad():
            layer.output.dense.weight[:, dropped] = 0.0
    assert torch.allclose(logits(cut_student(teacher, spec, batch), batch), logits(masked, batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hidden_selection", ["importance", "position"])
def test_hidden_cut_selects_the_same_dims_everywhere(
    teacher: BertForSequenceClassification, batch: Batch, importance: Importance, hidden_selection: str
) -> None:
    spec = spec_for(teacher, hidden_size=20, hidden_selection=hidden_selection, head_selection="position")
    student = cut_student(teacher, spec, batch)
    dims = list(plan_cut(teacher.config, spec, importance).hidden)
    if hidden_selection == "importance":
        assert dims == sorted(torch.argsort(importance.hidden, descending=True)[:20].tolist())
    else:
        assert dims == list(range(20))
    source, target = teacher.state_dict(), student.state_dict()
    assert torch.equal(
        target["bert.embeddings.word_embeddings.weight"],
        source["bert.embeddings.word_embeddings.weight"][:, dims],
    )
    for name in ("bert.embeddings.LayerNorm", "bert.encoder.layer.2.attention.output.LayerNorm"):
        assert torch.equal(target[f"{name}.weight"], source[f"{name}.weight"][dims])
    layer = "bert.encoder.layer.1."
    assert torch.equal(
        target[layer + "intermediate.dense.weight"], source[layer + "intermediate.dense.weight"][:, dims]
    )
    assert torch.equal(target[layer + "output.dense.weight"], source[layer + "output.dense.weight"][dims])
    assert torch.equal(target[layer + "output.dense.bias"], source[layer + "output.dense.bias"][dims])
    assert torch.equal(target["bert.pooler.dense.weight"], source["bert.pooler.dense.weight"][dims][:, dims])
    assert torch.equal(target["classifier.weight"], source["classifier.weight"][:, dims])
    assert torch.equal(target["classifier.bias"], source["classifier.bias"])
    assert logits(student, batch).isfinite().all()


# --- init, saving, errors ---------------------------------------------------------------------------------


def test_random_init_has_the_spec_shape_and_no_teacher_weights(
    teacher: BertForSequenceClassification, batch: Batch
) -> None:
    spec = StudentSpec(num_layers=2, hidden_size=16, num_heads=2, ffn_size=24, init="random")
    student = cut_student(teacher, spec)
    config = student.config
    sizes = (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    )
    assert sizes == (2, 16, 2, 24) and config.num_labels == teacher.config.num_labels
    teacher_embeddings = teacher.bert.embeddings.word_embeddings.weight[:, :16]
    assert not torch.allclose(student.bert.embeddings.word_embeddings.weight, teacher_embeddings)
    assert logits(student, batch).shape == (len(TINY_CORPUS), 2)


def test_student_saves_and_loads_with_auto_classes(
    teacher: BertForSequenceClassification, batch: Batch, tmp_path: Path
) -> None:
    student = cut_student(teacher, spec_for(teacher, num_layers=2, hidden_size=16, num_heads=2, ffn_size=40), batch)
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is BertForSequenceClassification and loaded.config.hidden_size == 16
    assert torch.allclose(logits(loaded, batch), logits(student, batch), atol=1e-5, rtol=0)


def test_student_follows_teacher_dtype_and_mode(teacher: BertForSequenceClassification, batch: Batch) -> None:
    double = copy.deepcopy(teacher).double().train()
    student = cut_student(double, spec_for(double, num_heads=2, ffn_size=32), batch)
    assert student.training and double.training
    assert all(parameter.dtype == torch.float64 for parameter in student.parameters())


def test_importance_cut_without_calibration_batch_is_rejected(teacher: BertForSequenceClassification) -> None:
    spec = spec_for(teacher, num_heads=2, ffn_size=32)
    assert importance_needed(spec, teacher.config) == ("head_selection", "ffn_selection")
    with pytest.raises(ValueError, match=r"calibration_batch=None.*head_selection, ffn_selection"):
        cut_student(teacher, spec)
    with pytest.raises(ValueError, match="importance=None"):
        plan_cut(teacher.config, spec)


def test_cut_rejects_spec_larger_than_teacher(teacher: BertForSequenceClassification) -> None:
    with pytest.raises(ValueError, match="num_layers=5"):
        cut_student(teacher, spec_for(teacher, num_layers=5))


# --- importance ------------------------------------------------------------------------------------------


def _per_example_loss(model: BertForSequenceClassification, batch: Batch) -> Tensor:
    with torch.no_grad():
        return functional.cross_entropy(model(**inputs(batch)).logits, batch["labels"], reduction="none")


def _taylor(model: BertForSequenceClassification, batch: Batch, scale: Callable[[nn.Module, float], None]) -> float:
    """``sum_b |dL_b/dg|`` by central differences, where ``scale(model, g)`` applies the gate ``g``."""
    epsilon, losses = 1e-4, []
    for gate in (1 + epsilon, 1 - epsilon):
        gated = copy.deepcopy(model)
        with torch.no_grad():
            scale(gated, gate)
        losses.append(_per_example_loss(gated, batch))
    return float(((losses[0] - losses[1]) / (2 * epsilon)).abs().sum())


def _scale_rows(linear: nn.Linear, rows: slice | int, gate: float) -> None:
    linear.weight[rows] *= gate
    linear.bias[rows] *= gate


def test_importance_matches_finite_differences(teacher: BertForSequenceClassification, batch: Batch) -> None:
    model = copy.deepcopy(teacher).double()
    scores = compute_importance(model, batch)

    def layer(gated: nn.Module, index: int) -> nn.Module:
        return gated.bert.encoder.layer[index]

    def hidden(gated: nn.Module, gate: float) -> None:
        norms = [gated.bert.embeddings.LayerNorm]
        norms += [
            m for block in gated.bert.encoder.layer for m in (block.attention.output.LayerNorm, block.output.LayerNorm)
        ]
        for norm in norms:
            norm.weight[5] *= gate
            norm.bias[5] *= gate

    def ffn(gated: nn.Module, gate: float) -> None:
        layer(gated, 2).output.dense.weight[:, 7] *= gate

    checks = {
        "head": (
            scores.heads[1, 2],
            lambda g, s: _scale_rows(layer(g, 1).attention.self.value, slice(16, 24), s),
        ),
        "value dim": (
            scores.value_dims[0, 3],
            lambda g, s: _scale_rows(layer(g, 0).attention.self.value, 3, s),
        ),
        "query dim": (
            scores.query_dims[3, 30],
            lambda g, s: _scale_rows(layer(g, 3).attention.self.query, 30, s),
        ),
        "ffn neuron": (scores.ffn[2, 7], ffn),
        "hidden dim": (scores.hidden[5], hidden),
    }
    for name, (score, scale) in checks.items():
        assert float(score) == pytest.approx(_taylor(model, batch, scale), rel=1e-4, abs=1e-12), name


def test_importance_shapes_labels_fallback_and_no_side_effects(
    teacher: BertForSequenceClassification, batch: Batch, importance: Importance
) -> None:
    assert importance.heads.shape == (4, 4)
    assert importance.query_dims.shape == importance.value_dims.shape == (4, 32)
    assert importance.ffn.shape == (4, 64) and importance.hidden.shape == (32,)
    assert all(float(score.min()) >= 0 for score in vars(importance).values())
    before = {name: value.clone() for name, value in teacher.state_dict().items()}
    predicted = logits(teacher, batch).argmax(-1)
    teacher.train()
    try:
        unlabeled = compute_importance(teacher, inputs(batch))
        assert teacher.training
    finally:
        teacher.eval()
    with torch.no_grad():
        relabeled = compute_importance(teacher, inputs(batch) | {"labels": predicted})
    for name in ("heads", "query_dims", "value_dims", "ffn", "hidden"):
        assert torch.allclose(getattr(unlabeled, name), getattr(relabeled, name)), name
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert all(torch.equal(value, before[name]) for name, value in teacher.state_dict().items())
    assert not teacher._forward_hooks and not teacher.bert.encoder.layer[0].intermediate._forward_hooks


def test_importance_rejects_a_batch_without_input_ids(teacher: BertForSequenceClassification, batch: Batch) -> None:
    with pytest.raises(ValueError, match=r"calibration_batch\['input_ids'\]"):
        compute_importance(teacher, {"attention_mask": batch["attention_mask"]})


# --- fuzz -------------------------------------------------------------------------------------------------


@st.composite
def valid_specs(draw: st.DrawFn) -> StudentSpec:
    num_layers = draw(st.integers(1, 4))
    num_heads = draw(st.integers(1, 4))
    head_size = draw(st.integers(1, 32 // num_heads))
    layer_selection = draw(st.sampled_from(["uniform", "first", "last", "alternate", "explicit"]))
    layers = None
    if layer_selection == "explicit":
        layers = tuple(sorted(draw(st.sets(st.integers(0, 3), min_size=num_layers, max_size=num_layers))))
    selection = st.sampled_from(["importance", "position"])
    return StudentSpec(
        num_layers=num_layers,
        hidden_size=num_heads * head_size,
        num_heads=num_heads,
        ffn_size=draw(st.integers(1, 64)),
        layer_selection=layer_selection,
        layers=layers,
        head_selection=draw(selection),
        ffn_selection=draw(selection),
        hidden_selection=draw(selection),
        init=draw(st.sampled_from(["teacher", "random"])),
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=valid_specs())
def test_any_valid_spec_cuts_and_runs(teacher: BertForSequenceClassification, batch: Batch, spec: StudentSpec) -> None:
    student = cut_student(teacher, spec, batch)
    config = student.config
    assert (config.num_hidden_layers, config.hidden_size) == (spec.num_layers, spec.hidden_size)
    assert (config.num_attention_heads, config.intermediate_size) == (spec.num_heads, spec.ffn_size)
    output = logits(student, batch)
    assert output.shape == (len(TINY_CORPUS), 2) and output.isfinite().all()


# --- vocabulary trimming ------------------------------------------------------------------------------------


def test_trimmed_vocabulary_round_trips_with_identical_logits(
    teacher: BertForSequenceClassification, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    kept_texts = TINY_CORPUS[:3]
    used = {token for ids in tokenizer(kept_texts)["input_ids"] for token in ids}
    model, trimmed_tokenizer = trim_vocabulary(teacher, tokenizer, used)
    special_ids = set(tokenizer.all_special_ids)
    assert len(trimmed_tokenizer) == len(used | special_ids) < len(tokenizer)
    assert model.config.vocab_size == len(trimmed_tokenizer) == model.get_input_embeddings().num_embeddings
    assert teacher.config.vocab_size == len(tokenizer)

    model.save_pretrained(tmp_path)
    trimmed_tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.config.pad_token_id == loaded_tokenizer.pad_token_id

    before = tokenizer(kept_texts, padding=True, return_tensors="pt")
    after = loaded_tokenizer(kept_texts, padding=True, return_tensors="pt")
    assert tokenizer.batch_decode(before["input_ids"]) == loaded_tokenizer.batch_decode(after["input_ids"])
    assert torch.allclose(logits(loaded, dict(after)), logits(teacher, dict(before)), atol=1e-5, rtol=0)
    assert set(loaded_tokenizer.all_special_tokens) == set(tokenizer.all_special_tokens)
    assert loaded_tokenizer("boring")["input_ids"][1:-1] == [loaded_tokenizer.unk_token_id]


def test_trim_vocabulary_rejects_unknown_token_ids(teacher: BertForSequenceClassification, tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with pytest.raises(ValueError, match=r"token_ids contains \[9999\]"):
        trim_vocabulary(teacher, tokenizer, [5, 9999])
