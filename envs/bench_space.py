"""KD-Bench's space: a sub-space of the default one small enough to evaluate every candidate live.

The bench crosses the architecture cuts with the KD knob the evidence says matters most, and the deployment width:

* ``num_layers`` 1, 2, 3, 4, 6 (layers kept uniformly from the teacher's 6), ``hidden_size`` 96, 192, 288, 384 (1/4 to
  all of the teacher's), ``ffn_size`` 384 and 1536 (1/4 and all): 40 architectures;
* ``alpha`` 0.0 (labels only), 0.5 and 0.9: the weight of Hinton's logit loss. ``results/kd_evidence.md`` shows the
  choice between labels and the teacher changes OOD accuracy by 2.4 points at equal in-distribution accuracy, while
  the learning curves of ``results/fidelity_rank.md`` show the other knobs (temperature, schedules, TinyBERT's
  intermediate losses) moving validation accuracy by at most about 2 points; the intermediate losses also need the
  teacher run online (about twice the training cost), so they are fixed off;
* ``weight_bits`` 32 and 8 (FastFormers' post-training int8, scored and timed with its real kernels): an int8 row is
  measured from the same trained weights as its fp32 twin, as deployment does.

Fixed: 12 heads (the teacher's), ``layer_selection="uniform"``, temperature 2, one epoch (about 320 steps of batch 32
over rt-polarity's training split: every student leaves the majority rate), lr 2e-4, max length 64, seed 0. That is
5 x 4 x 2 x 3 x 2 = 240 candidates from 120 trainings; the learning curve of each (checkpoints 25, 50, 100, 200 and
the last step) is the fidelity axis, replayed as ``rung-<step>`` levels.
"""

from __future__ import annotations

from typing import Any

from distilsearch.envs.space import SearchSpace, TeacherShape, Value

BENCH_TASK = "rt-polarity"
BENCH_DIMENSIONS: dict[str, tuple[Value, ...]] = {
    "num_layers": (1, 2, 3, 4, 6),
    "hidden_size": (96, 192, 288, 384),
    "ffn_size": (384, 1536),
    "weight_bits": (32, 8),
    "alpha": (0.0, 0.5, 0.9),
}
BENCH_FIXED: dict[str, Value] = {
    "num_heads": 12,
    "layer_selection": "uniform",
    "temperature": 2.0,
    "epochs": 1.0,
    "lr": 2e-4,
    "batch_size": 32,
    "max_length": 64,
    "intermediate_share": 0.0,
    "seed": 0,
}
BENCH_TEACHER = TeacherShape(
    num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536, vocab_size=30522
)
"""The embedded teacher's shape (all-MiniLM-L6-v2 fine-tuned on rt-polarity)."""


def bench_space(teacher: TeacherShape | Any = BENCH_TEACHER) -> SearchSpace:
    """KD-Bench's space over ``teacher`` (a :class:`TeacherShape` or a ``transformers`` config; default: the embedded
    teacher's shape). Every size must fit the teacher, or the space's construction names the one that does not."""
    shape = teacher if isinstance(teacher, TeacherShape) else TeacherShape.from_config(teacher)
    return SearchSpace(shape, BENCH_DIMENSIONS, BENCH_FIXED)
