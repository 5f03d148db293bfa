"""The currency of the search: a Candidate (student spec + KD recipe) and the EvalResult it earns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

Status = Literal["ok", "failed", "invalid"]


class Candidate(BaseModel):
    """A student architecture and the recipe that distils it: frozen, validated, hashable, JSON round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: StudentSpec
    kd: KDConfig = Field(default_factory=KDConfig)

    def content_hash(self) -> str:
        """A stable 16-hex-digit identity of (spec, kd), equal across processes and machines."""
        return sha256_json({"spec": self.spec.hashed_fields(), "kd": self.kd.hashed_fields()})[:16]

    def summary(self) -> str:
        """A one-line description, e.g. ``L4 H384 A12 F1536 a0.5 T2`` (plus ``w8`` / ``w2`` and ``trim``)."""
        spec, kd = self.spec, self.kd
        sizes = f"L{spec.num_layers} H{spec.hidden_size} A{spec.num_heads} F{spec.ffn_size}"
        text = f"{sizes} a{kd.alpha:g} T{kd.temperature:g}"
        if spec.weight_bits != 32:
            text += f" w{spec.weight_bits}"
        return text + (" trim" if spec.trim_vocab else "")


class LatencyPoint(BaseModel):
    """Measured latency of one (batch, sequence length) point, in milliseconds per batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: int
    seq_len: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    teacher_median_ms: float
    speedup: float
    theoretical_speedup: float


class CurvePoint(BaseModel):
    """One checkpoint of a learning curve: accuracy on the selection sets after ``step`` training steps.

    ``train_seconds`` is the training wall time up to the checkpoint, evaluation time excluded.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: int
    validation_accuracy: float
    ood_dev_accuracy: dict[str, float] = Field(default_factory=dict)
    train_seconds: float


TEST_FIELDS = ("accuracy", "ood_accuracy", "teacher_accuracy", "teacher_ood_accuracy", "majority_test_accuracy")


class EvalResult(BaseModel):
    """What evaluating a Candidate produced: metrics, status and provenance.

    ``status`` is ``ok`` (metrics present), ``failed`` (training diverged or crashed; ``error`` says why) or
    ``invalid`` (the candidate does not fit the teacher; ``error`` names the field). ``peak_memory_bytes`` is the
    peak CUDA memory of a forward at the last latency point, None on CPU (see :mod:`kdlib.measure.footprint`).

    Selection and reporting are kept apart. ``validation_accuracy`` and ``ood_dev_accuracy`` (the dev half of each
    OOD set) are what a search may select on; ``accuracy`` (test) and ``ood_accuracy`` (the test half of each OOD
    set) are for reporting only, and :meth:`blinded` removes them before a result reaches an agent.
    ``learning_curve`` holds the selection accuracies at the distillation's checkpoints; ``train_steps`` the steps
    trained and ``curve_seconds`` the time spent evaluating the checkpoints. ``majority_validation_accuracy`` and
    ``majority_test_accuracy`` are the accuracies of always answering the training set's most frequent label: a
    student at or below them has learnt nothing useful.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidate: Candidate
    status: Status
    error: str | None = None
    accuracy: float | None = None
    validation_accuracy: float | None = None
    ood_accuracy: dict[str, float] = Field(default_factory=dict)
    ood_dev_accuracy: dict[str, float] = Field(default_factory=dict)
    teacher_accuracy: float | None = None
    teacher_validation_accuracy: float | None = None
    teacher_ood_accuracy: dict[str, float] = Field(default_factory=dict)
    teacher_ood_dev_accuracy: dict[str, float] = Field(default_factory=dict)
    majority_validation_accuracy: float | None = None
    majority_test_accuracy: float | None = None
    learning_curve: list[CurvePoint] = Field(default_factory=list)
    train_steps: int | None = None
    curve_seconds: float | None = None
    latency: list[LatencyPoint] = Field(default_factory=list)
    flops: float | None = None
    params_total: int | None = None
    params_non_embedding: int | None = None
    size_bytes: int | None = None
    peak_memory_bytes: int | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    student_path: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @property
    def retention(self) -> float | None:
        """Student test accuracy as a share of the teacher's."""
        if self.accuracy is None or not self.teacher_accuracy:
            return None
        return self.accuracy / self.teacher_accuracy

    @property
    def validation_retention(self) -> float | None:
        """Student validation accuracy as a share of the teacher's (what a search selects on)."""
        if self.validation_accuracy is None or not self.teacher_validation_accuracy:
            return None
        return self.validation_accuracy / self.teacher_validation_accuracy

    @property
    def mean_ood_accuracy(self) -> float | None:
        """Mean accuracy over the OOD test halves (None when there are none)."""
        return _mean(self.ood_accuracy)

    @property
    def mean_ood_dev_accuracy(self) -> float | None:
        """Mean accuracy over the OOD dev halves (None when there are none)."""
        return _mean(self.ood_dev_accuracy)

    @property
    def ood_retention(self) -> float | None:
        """Mean OOD test accuracy as a share of the teacher's on the same sets."""
        return _retention(self.ood_accuracy, self.teacher_ood_accuracy)

    @property
    def ood_dev_retention(self) -> float | None:
        """Mean OOD dev accuracy as a share of the teacher's on the same sets (what a search selects on)."""
        return _retention(self.ood_dev_accuracy, self.teacher_ood_dev_accuracy)

    def blinded(self) -> EvalResult:
        """This result without its test-derived fields (:data:`TEST_FIELDS`): what an agent may see."""
        fields = type(self).model_fields
        return self.model_copy(
            update={name: fields[name].get_default(call_default_factory=True) for name in TEST_FIELDS}
        )

    def speedup(self, batch: int, seq_len: int) -> float | None:
        """Measured teacher/student latency ratio at one point (None when not measured)."""
        for point in self.latency:
            if (point.batch, point.seq_len) == (batch, seq_len):
                return point.speedup
        return None


def _mean(values: dict[str, float]) -> float | None:
    return sum(values.values()) / len(values) if values else None


def _retention(student: dict[str, float], teacher: dict[str, float]) -> float | None:
    if not student or not teacher or any(name not in teacher for name in student):
        return None
    reference = sum(teacher[name] for name in student) / len(student)
    return sum(student.values()) / len(student) / reference if reference else None
