"""Shared pieces of the live and Ray evaluator tests: the toy task, a tiny teacher recipe and tiny candidates.

Ray workers are other processes: they import this module (the tests put ``tests/`` on their ``PYTHONPATH``) and call
:func:`register_toy_task` or :func:`register_toy_task_with_faults` as their setup hook.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import toy_sentiment_frames

from distilsearch.kdlib.data.tasks import TaskDefinition, register_task
from distilsearch.kdlib.measure.latency import LatencyProtocol
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.finetune import FineTuneRecipe

TOY_TASK = "toy-sentiment"
TOY_RECIPE = FineTuneRecipe(epochs=2, batch_size=16, max_length=16, learning_rate=3e-3)
FAST_LATENCY = LatencyProtocol(points=((1, 16),), warmup=1, repeats=3, num_threads=1)
TINY_KD = KDConfig(max_steps=200, batch_size=16, max_length=16, lr=1e-3)
CRASH_SEED = 666
HANG_SEED = 777
KILL_ONCE_SEED = 888
MARKERS_ENV = "KDSEARCH_TEST_MARKERS"


def register_toy_task() -> str:
    """Register the toy sentiment task of ``conftest`` in this process; return its name."""
    register_task(TaskDefinition(TOY_TASK, "toy", ("text",), ("negative", "positive"), toy_sentiment_frames))
    return TOY_TASK


def toy_candidate(num_layers: int = 2, hidden_size: int = 32, ffn_size: int = 32, **kd: object) -> Candidate:
    """A small student of the tiny teacher (4 heads) with TINY_KD updated by ``kd``."""
    spec = StudentSpec(num_layers=num_layers, hidden_size=hidden_size, num_heads=4, ffn_size=ffn_size)
    return Candidate(spec=spec, kd=TINY_KD.model_copy(update=kd))


def register_toy_task_with_faults() -> str:
    """Register the toy task and make this worker die on ``seed=CRASH_SEED``, hang on ``seed=HANG_SEED`` and SIGKILL
    itself mid-evaluation on the first ``seed=KILL_ONCE_SEED`` of each candidate (a marker file per candidate in the
    folder named by ``$KDSEARCH_TEST_MARKERS`` remembers the kill across worker processes)."""
    original = StudentEvaluator.evaluate

    def faulty(self: StudentEvaluator, candidate: Candidate, out_dir=None, **options: object) -> EvalResult:
        if candidate.kd.seed == CRASH_SEED:
            os._exit(3)
        if candidate.kd.seed == HANG_SEED:
            time.sleep(3600)
        if candidate.kd.seed == KILL_ONCE_SEED:
            marker = Path(os.environ[MARKERS_ENV]) / candidate.content_hash()
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, candidate, out_dir, **options)

    StudentEvaluator.evaluate = faulty
    return register_toy_task()
