"""Shared fixtures: offline environment, an isolated cache and tiny random BERTs built in-test (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

TINY_CORPUS = [
    "a gripping and beautiful film with a great cast",
    "the plot is dull and the acting is worse",
    "an absolute delight from start to finish",
    "boring predictable and far too long",
    "the best movie of the year",
    "i would not recommend this to anyone",
    "funny warm and wonderfully made",
    "a mess of a script with no heart",
]


@pytest.fixture(autouse=True)
def _isolated_kdsearch_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never touch the user's cache; integration tests opt back in with the real one."""
    if os.environ.get("KDSEARCH_TEST_REAL_HOME") != "1":
        monkeypatch.setenv("KDSEARCH_HOME", str(tmp_path_factory.mktemp("kdsearch_home")))


def build_tiny_tokenizer(directory: Path) -> BertTokenizerFast:
    """Train a tiny uncased WordPiece vocabulary on TINY_CORPUS and save it as a stock BERT tokenizer."""
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(TINY_CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls_id, sep_id = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_bert(directory: Path, num_labels: int = 2, seed: int = 0, **config: int) -> Path:
    """Save a tiny random BertForSequenceClassification (4 layers, hidden 32, 4 heads) plus tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(directory)
    settings = {
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    } | config
    bert_config = BertConfig(vocab_size=len(tokenizer), num_labels=num_labels, **settings)
    torch.manual_seed(seed)
    BertForSequenceClassification(bert_config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny random 2-class BERT classifier and its tokenizer (shared, read-only)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def tiny_teacher(tiny_bert_dir: Path) -> BertForSequenceClassification:
    """A fresh, eval-mode copy of the tiny teacher (eager attention so attentions can be read)."""
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager")
    return model.eval()
