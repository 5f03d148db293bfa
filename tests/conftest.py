"""Shared fixtures: offline environment, an isolated cache and tiny random BERTs built in-test (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

torch.set_num_threads(1)  # tiny models gain nothing from more threads, and a busy 2-core machine makes them slower

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


USER_DISTILSEARCH_HOME = os.environ.get("DISTILSEARCH_HOME")


@pytest.fixture(autouse=True)
def _isolated_distilsearch_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unit tests get an empty private cache; tests marked ``integration`` use the user's real one (real assets)."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("DISTILSEARCH_HOME", str(tmp_path_factory.mktemp("distilsearch_home")))
    elif USER_DISTILSEARCH_HOME is None:
        monkeypatch.delenv("DISTILSEARCH_HOME", raising=False)
    else:
        monkeypatch.setenv("DISTILSEARCH_HOME", USER_DISTILSEARCH_HOME)


def build_tiny_tokenizer(directory: Path) -> BertTokenizerFast:
    """Train a tiny uncased WordPiece vocabulary on TINY_CORPUS and save it as a stock BERT tokenizer."""
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(TINY_CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls_id, sep_id = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


TINY_SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
"""The sizes of the tiny test models (4 layers, hidden 32, 4 heads, FFN 64, 128 positions)."""


def build_tiny_bert(directory: Path, num_labels: int = 2, seed: int = 0, **config: int) -> Path:
    """Save a tiny random BertForSequenceClassification (4 layers, hidden 32, 4 heads) plus tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(directory)
    settings = TINY_SIZES | config
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


POSITIVE = ("a great film", "an absolute delight", "funny warm and wonderfully made", "the best movie of the year")
NEGATIVE = ("the plot is dull", "boring predictable and far too long", "a mess of a script", "no heart at all")


def toy_sentiment_frames(ood_limit: int | None, progress: bool):
    """Small split frames (grouped by a fake 'movie') and one OOD set, for a registered toy task."""
    import pandas as pd

    from distilsearch.kdlib.data.splits import split_by_group, stable_sample

    rows = [
        (f"{text} number {i}", label, f"movie {i % 20}")
        for i in range(120)
        for text, label in [(POSITIVE[i % 4], 1), (NEGATIVE[i % 4], 0)]
    ]
    frame = pd.DataFrame(rows, columns=["text", "label", "movie"])
    ood = pd.DataFrame({"text": [f"{t} indeed" for t in POSITIVE + NEGATIVE], "label": [1] * 4 + [0] * 4})
    return split_by_group(frame, "movie"), {"echo": stable_sample(ood, ood_limit, ("text",))}, {"split": "toy"}


@pytest.fixture
def toy_task() -> str:
    """Register the 'toy-sentiment' task (tiny, in memory) and return its name."""
    from distilsearch.kdlib.data.tasks import TASKS, TaskDefinition, register_task

    definition = TaskDefinition("toy-sentiment", "toy", ("text",), ("negative", "positive"), toy_sentiment_frames)
    register_task(definition)
    yield definition.name
    TASKS.pop(definition.name, None)


@pytest.fixture(scope="module")
def toy_teacher_and_task(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path):
    """The tiny teacher fine-tuned once per module (in a private cache) on the registered toy task, and the task."""
    from ray_helpers import TOY_RECIPE, register_toy_task

    from distilsearch.kdlib.data.tasks import TASKS, load_task
    from distilsearch.kdlib.training.teacher import get_teacher

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILSEARCH_HOME", str(tmp_path_factory.mktemp("teacher_home")))
        name = register_toy_task()
        teacher = get_teacher(name, TOY_RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
        task = load_task(name, progress=False)
    yield teacher, task
    TASKS.pop(name, None)


@pytest.fixture(scope="module")
def toy_table_evaluator(tmp_path_factory: pytest.TempPathFactory):
    """A TableEvaluator over the toy benchmark table (TOY TEST DATA, see tests/toy_table.py)."""
    from toy_table import write_toy_table

    from distilsearch.envs.evaluators import TableEvaluator

    return TableEvaluator(write_toy_table(tmp_path_factory.mktemp("toy") / "toy.csv"))


def build_tiny_roberta(directory: Path, num_labels: int = 2, seed: int = 0, **config: int) -> Path:
    """Save a tiny random RobertaForSequenceClassification (4 layers, hidden 32, 4 heads) plus a byte-level BPE
    tokenizer trained on TINY_CORPUS (positions start at pad_token_id + 1 = 2, one token type)."""
    from tokenizers import decoders
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TINY_CORPUS, trainer)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe)
    tokenizer.save_pretrained(directory)
    settings = {
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 130,
    } | config
    roberta_config = RobertaConfig(
        vocab_size=len(tokenizer),
        num_labels=num_labels,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        **settings,
    )
    torch.manual_seed(seed)
    RobertaForSequenceClassification(roberta_config).save_pretrained(directory)
    return directory


def build_tiny_electra(directory: Path, num_labels: int = 2, seed: int = 0, **config: int) -> Path:
    """Save a tiny random ElectraForSequenceClassification (4 layers, hidden 32, 4 heads, ``embedding_size`` equal to
    the hidden size unless given) plus the tiny WordPiece tokenizer."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(directory)
    settings = TINY_SIZES | config
    settings.setdefault("embedding_size", settings["hidden_size"])
    electra_config = ElectraConfig(vocab_size=len(tokenizer), num_labels=num_labels, **settings)
    torch.manual_seed(seed)
    ElectraForSequenceClassification(electra_config).save_pretrained(directory)
    return directory
