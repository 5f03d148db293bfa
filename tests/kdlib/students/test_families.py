"""Model families: which model types kdlib supports, where each keeps its parts, and the errors for the others."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from distilsearch.kdlib.measure.flops import bert_flops, theoretical_speedup
from distilsearch.kdlib.measure.footprint import bert_parameter_count, count_parameters
from distilsearch.kdlib.students.cutting import cut_student
from distilsearch.kdlib.students.families import (
    SUPPORTED_MODEL_TYPES,
    ClassifierHead,
    UnsupportedModelError,
    classifier_head,
    embeddings,
    encoder_layers,
    family_of,
    sequence_logits,
    usable_positions,
)
from distilsearch.kdlib.students.importance import compute_importance
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.distiller import distill

SIZES = {"vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
MODELS = {
    "bert": (BertConfig(**SIZES), BertForSequenceClassification),
    "roberta": (RobertaConfig(**SIZES, pad_token_id=1, type_vocab_size=1), RobertaForSequenceClassification),
    "xlm-roberta": (XLMRobertaConfig(**SIZES, pad_token_id=1, type_vocab_size=1), XLMRobertaForSequenceClassification),
    "electra": (ElectraConfig(**SIZES, embedding_size=16), ElectraForSequenceClassification),
}
HEADS = {
    "bert": ClassifierHead("bert.pooler.dense", "classifier"),
    "roberta": ClassifierHead("classifier.dense", "classifier.out_proj"),
    "xlm-roberta": ClassifierHead("classifier.dense", "classifier.out_proj"),
    "electra": ClassifierHead("classifier.dense", "classifier.out_proj"),
}


def test_the_supported_types() -> None:
    assert SUPPORTED_MODEL_TYPES == ("bert", "roberta", "xlm-roberta", "electra")


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_every_supported_family_exposes_bert_s_parts(model_type: str) -> None:
    config, model_class = MODELS[model_type]
    assert family_of(config).model_type == model_type
    torch.manual_seed(0)
    model = model_class(config).eval()
    layers = encoder_layers(model)
    assert len(layers) == 2 and layers[0].attention.self.query.in_features == 16
    assert {"word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"} <= {
        name for name, _ in embeddings(model).named_children()
    }
    head = classifier_head(model)
    assert head == HEADS[model_type]
    state = model.state_dict()
    assert state[f"{head.dense}.weight"].shape == (16, 16) and state[f"{head.output}.weight"].shape == (2, 16)
    assert bert_parameter_count(config) == count_parameters(model).total
    inputs = {"input_ids": torch.tensor([[0, 5, 7, 9, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        output = model.base_model(**inputs).last_hidden_state
        torch.testing.assert_close(sequence_logits(model, output), model(**inputs).logits, rtol=0, atol=0)


def test_roberta_positions_start_after_the_padding_id() -> None:
    config = RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert usable_positions(config) == 512
    assert usable_positions(XLMRobertaConfig(max_position_embeddings=130, pad_token_id=1)) == 128
    assert usable_positions(BertConfig(max_position_embeddings=512)) == 512
    assert usable_positions(ElectraConfig(max_position_embeddings=512, embedding_size=256, hidden_size=256)) == 512
    with pytest.raises(ValueError, match="seq_len must be an int in \\[1, 512\\]"):
        bert_flops(config, 1, 513)


def test_distilbert_is_refused_with_the_reason_and_the_supported_list() -> None:
    with pytest.raises(UnsupportedModelError) as error:
        family_of(DistilBertConfig())
    message = str(error.value)
    assert "'distilbert' is not supported" in message
    assert "transformer.layer.N.attention.q_lin" in message and "no token types" in message
    assert "supported: bert, roberta, xlm-roberta, electra" in message
    assert isinstance(error.value, ValueError)


def test_electra_with_an_embedding_projection_is_refused() -> None:
    small = ElectraConfig(embedding_size=128, hidden_size=256, num_attention_heads=4, intermediate_size=1024)
    with pytest.raises(UnsupportedModelError, match="embedding_size=128 != hidden_size=256") as error:
        family_of(small)
    assert "embeddings_project" in str(error.value) and "embedding_size == hidden_size" in str(error.value)


def test_other_types_and_non_configs_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="model_type 'gpt2' is not supported; supported: bert, roberta"):
        family_of(GPT2Config())
    with pytest.raises(UnsupportedModelError, match="got dict"):
        family_of({"hidden_size": 8})  # type: ignore[arg-type]
    with pytest.raises(UnsupportedModelError, match="student_config: model_type 'distilbert' is not supported"):
        theoretical_speedup(BertConfig(), DistilBertConfig(), 1, 8)


def test_cutting_importance_and_distillation_refuse_a_distilbert_teacher() -> None:
    config = DistilBertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    teacher = DistilBertForSequenceClassification(config).eval()
    inputs = {"input_ids": torch.tensor([[0, 5, 7, 2]])}
    with pytest.raises(UnsupportedModelError, match="model_type 'distilbert' is not supported"):
        cut_student(teacher, StudentSpec(num_layers=1, hidden_size=16, num_heads=2, ffn_size=32))
    with pytest.raises(UnsupportedModelError, match="model_type 'distilbert' is not supported"):
        compute_importance(teacher, inputs)
    rows = datasets.Dataset.from_dict({"input_ids": [[0, 5, 2]], "label": [0]})
    with pytest.raises(UnsupportedModelError, match="teacher: model_type 'distilbert' is not supported"):
        distill(
            teacher,
            teacher,
            rows,
            rows,
            KDConfig(max_steps=1),
            teacher_logits=None,
            pad_id=0,
            device=torch.device("cpu"),
        )
