from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from distilsearch.kdlib.students.cutting import trim_vocabulary
from distilsearch.kdlib.students.vocabulary import MappedInputs, vocabulary_map


def test_map_sends_kept_tokens_to_their_new_ids_and_others_to_unk(tiny_teacher, tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    kept_text = "a great film"
    kept = tokenizer(kept_text)["input_ids"]
    student, student_tokenizer = trim_vocabulary(tiny_teacher, tokenizer, kept)
    mapping = vocabulary_map(tokenizer, student_tokenizer)
    assert mapping.shape == (len(tokenizer),)
    assert mapping[kept].tolist() == student_tokenizer(kept_text)["input_ids"]
    dropped = tokenizer.convert_tokens_to_ids("boring")
    assert mapping[dropped] == student_tokenizer.unk_token_id
    batch = tokenizer([kept_text], return_tensors="pt")
    with torch.no_grad():
        expected = tiny_teacher(**batch).logits
        seen_through_teacher_ids = MappedInputs(student, mapping)(**batch).logits
    assert torch.allclose(expected, seen_through_teacher_ids, atol=1e-5)


def test_student_without_unk_is_rejected(tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    student_tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    student_tokenizer.unk_token = None
    with pytest.raises(ValueError, match="unk_token"):
        vocabulary_map(tokenizer, student_tokenizer)
