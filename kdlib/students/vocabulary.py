"""Students with a trimmed vocabulary, seen through the teacher's token ids."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase


def vocabulary_map(teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """A LongTensor indexed by teacher token id giving the student's id of the same token (``[UNK]`` if dropped)."""
    unknown = student_tokenizer.unk_token_id
    if unknown is None:
        raise ValueError("student_tokenizer has no unk_token: every teacher token needs a student id")
    mapping = torch.full((len(teacher_tokenizer),), unknown, dtype=torch.long)
    teacher_vocab = teacher_tokenizer.get_vocab()
    for token, student_id in student_tokenizer.get_vocab().items():
        if token in teacher_vocab:
            mapping[teacher_vocab[token]] = student_id
    return mapping


class MappedInputs(nn.Module):
    """The student seen through teacher token ids: ``input_ids`` are translated by ``input_id_map`` first."""

    def __init__(self, student: nn.Module, input_id_map: Tensor) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("input_id_map", input_id_map, persistent=False)

    def forward(self, input_ids: Tensor, **kwargs: Tensor) -> object:
        return self.student(input_ids=self.input_id_map[input_ids], **kwargs)
