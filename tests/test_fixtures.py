from pathlib import Path

import torch
from transformers import AutoTokenizer


def test_tiny_tokenizer_knows_corpus_words(tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ids = tokenizer("a great film")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_tiny_teacher_forward(tiny_teacher, tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tokenizer(["a great film", "dull plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = tiny_teacher(**batch, output_attentions=True, output_hidden_states=True)
    assert out.logits.shape == (2, 2)
    assert len(out.attentions) == 4 and len(out.hidden_states) == 5
