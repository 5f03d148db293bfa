"""The currency of the search: a Candidate (student spec + KD recipe) and the EvalResult it earns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kdlib.hashing import sha256_json
from kdlib.specs import KDConfig, StudentSpec

Status = Literal["ok", "failed", "invalid"]


class Candidate(BaseModel):
    """A student architecture and the recipe that distils it: frozen, validated, hashable, JSON round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: StudentSpec
    kd: KDConfig = Field(default_factory=KDConfig)

    def content_hash(self) -> str:
        """A stable 16-hex-digit identity of (spec, kd), equal across processes and machines."""
        return sha256_json(self.model_dump(mode="json"))[:16]

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


class EvalResult(BaseModel):
    """What evaluating a Candidate produced: metrics, status and provenance.

    ``status`` is ``ok`` (metrics present), ``failed`` (training diverged or crashed; ``error`` says why) or
    ``invalid`` (the candidate does not fit the teacher; ``error`` names the field). ``peak_memory_bytes`` is the
    peak CUDA memory of a forward at the last latency point, None on CPU (see :mod:`kdlib.footprint`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidate: Candidate
    status: Status
    error: str | None = None
    accuracy: float | None = None
    validation_accuracy: float | None = None
    ood_accuracy: dict[str, float] = Field(default_factory=dict)
    teacher_accuracy: float | None = None
    teacher_ood_accuracy: dict[str, float] = Field(default_factory=dict)
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
    def mean_ood_accuracy(self) -> float | None:
        """Mean accuracy over the OOD sets (None when there are none)."""
        return sum(self.ood_accuracy.values()) / len(self.ood_accuracy) if self.ood_accuracy else None

    @property
    def ood_retention(self) -> float | None:
        """Mean OOD accuracy as a share of the teacher's mean OOD accuracy."""
        if not self.ood_accuracy or not self.teacher_ood_accuracy:
            return None
        teacher = sum(self.teacher_ood_accuracy[name] for name in self.ood_accuracy) / len(self.ood_accuracy)
        return self.mean_ood_accuracy / teacher if teacher else None

    def speedup(self, batch: int, seq_len: int) -> float | None:
        """Measured teacher/student latency ratio at one point (None when not measured)."""
        for point in self.latency:
            if (point.batch, point.seq_len) == (batch, seq_len):
                return point.speedup
        return None
