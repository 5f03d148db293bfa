"""A fixed, reproducible latency protocol for classifier forwards (torch or ONNX Runtime).

Every measurement uses the same inputs (random token ids from a seeded generator, full attention mask, zero
token types), the same thread count, warm-up calls that are discarded, then ``repeats`` timed calls, each
one forward of a whole batch. Torch runs under ``inference_mode`` in eval mode; on CUDA the device is
synchronised before and after each timed call. Results are wall-clock milliseconds per batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from distilsearch.kdlib.measure.export import make_onnx_session
from distilsearch.kdlib.students.families import usable_positions

Point = tuple[int, int]
Backend = Literal["torch", "onnxruntime"]
BACKENDS = ("torch", "onnxruntime")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LatencyProtocol:
    """What to time: (batch, seq_len) points, warm-up and timed repeats, thread count and backend."""

    points: tuple[Point, ...] = ((1, 64), (32, 128))
    warmup: int = 5
    repeats: int = 30
    num_threads: int = 1
    backend: Backend = "torch"
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            points = tuple(tuple(point) for point in self.points)
        except TypeError:
            points = ()
        if not points or any(len(p) != 2 or not all(_is_int(v) and v >= 1 for v in p) for p in points):
            raise ValueError(f"points must be non-empty (batch, seq_len) pairs of positive ints, got {self.points!r}")
        object.__setattr__(self, "points", points)
        if not _is_int(self.warmup) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {self.warmup!r}")
        if not _is_int(self.repeats) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive int, got {self.repeats!r}")
        if not _is_int(self.num_threads) or self.num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {self.num_threads!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of the timed repeats at one point, in milliseconds per batch."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    repeats: int


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """Median, 10th/90th percentiles, interquartile range and mean of timings (linear interpolation)."""
    if len(samples_ms) == 0:
        raise ValueError("samples_ms must hold at least one timing, got none")
    values = np.asarray(samples_ms, dtype=np.float64)
    p10, p25, p50, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
    return LatencyStats(
        median_ms=float(p50),
        p10_ms=float(p10),
        p90_ms=float(p90),
        iqr_ms=float(p75 - p25),
        mean_ms=float(values.mean()),
        repeats=len(values),
    )


def random_inputs(batch: int, seq_len: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic int64 CPU inputs: uniform token ids, all-ones mask, zero token types."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
    }


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, restoring the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _timed(call: Callable[[], object], warmup: int, repeats: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(warmup):
        call()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call()
        sync()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def _resolve_device(device: str | torch.device) -> torch.device:
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def _check_points(protocol: LatencyProtocol, max_positions: int | None) -> None:
    too_long = [p for p in protocol.points if max_positions is not None and p[1] > max_positions]
    if too_long:
        raise ValueError(f"protocol.points has seq_len above the model's {max_positions} positions: {too_long}")


def _measure_torch(
    model: nn.Module, protocol: LatencyProtocol, vocab_size: int, device: torch.device
) -> dict[Point, LatencyStats]:
    parameter = next(model.parameters(), None)
    if parameter is not None and _resolve_device(parameter.device) != device:
        raise ValueError(f"device must match the model's device {parameter.device}, got {device}")
    config = getattr(model, "config", None)
    _check_points(protocol, None if config is None else usable_positions(config))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    results: dict[Point, LatencyStats] = {}
    try:
        with torch_threads(protocol.num_threads), torch.inference_mode():
            for batch, seq_len in protocol.points:
                inputs = {
                    name: tensor.to(device)
                    for name, tensor in random_inputs(batch, seq_len, vocab_size, protocol.seed).items()
                }
                samples = _timed(lambda inputs=inputs: model(**inputs), protocol.warmup, protocol.repeats, sync)
                results[(batch, seq_len)] = latency_stats(samples)
    finally:
        model.train(was_training)
    return results


def _measure_onnxruntime(
    session_or_path: ort.InferenceSession | str | Path, protocol: LatencyProtocol, vocab_size: int
) -> dict[Point, LatencyStats]:
    if isinstance(session_or_path, str | Path):
        session = make_onnx_session(session_or_path, protocol.num_threads)
    else:
        session = session_or_path
    threads = session.get_session_options().intra_op_num_threads
    if threads != protocol.num_threads:
        raise ValueError(f"model_or_session must use intra_op_num_threads={protocol.num_threads}, got {threads}")
    names = [node.name for node in session.get_inputs()]
    results: dict[Point, LatencyStats] = {}
    for batch, seq_len in protocol.points:
        inputs = random_inputs(batch, seq_len, vocab_size, protocol.seed)
        feed = {name: inputs[name].numpy() for name in names}
        samples = _timed(lambda feed=feed: session.run(None, feed), protocol.warmup, protocol.repeats, lambda: None)
        results[(batch, seq_len)] = latency_stats(samples)
    return results


def measure_latency(
    model_or_session: nn.Module | ort.InferenceSession | str | Path,
    protocol: LatencyProtocol,
    vocab_size: int,
    device: str | torch.device = "cpu",
) -> dict[Point, LatencyStats]:
    """Time ``model_or_session`` at every point of ``protocol``; returns ``{(batch, seq_len): stats}``.

    Torch backend: an ``nn.Module`` already on ``device`` called with ``input_ids``, ``attention_mask`` and
    ``token_type_ids`` (a model with a ``config`` must be of a supported family; sequences may be as long as its
    :func:`~distilsearch.kdlib.students.families.usable_positions`); torch's thread count is set to
    ``protocol.num_threads`` and restored afterwards, and the model's train/eval mode is restored too. ONNX Runtime
    backend (CPU only): an ``InferenceSession`` whose ``intra_op_num_threads`` equals ``protocol.num_threads``, or a
    path to an ``.onnx`` file from which such a session is built.
    """
    if not isinstance(protocol, LatencyProtocol):
        raise ValueError(f"protocol must be a LatencyProtocol, got {type(protocol).__name__}")
    if not _is_int(vocab_size) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    resolved = _resolve_device(device)
    if protocol.backend == "torch":
        if not isinstance(model_or_session, nn.Module):
            kind = type(model_or_session).__name__
            raise ValueError(f"model_or_session must be an nn.Module for the torch backend, got {kind}")
        return _measure_torch(model_or_session, protocol, vocab_size, resolved)
    if resolved.type != "cpu":
        raise ValueError(f"device must be cpu for the onnxruntime backend, got {resolved}")
    if not isinstance(model_or_session, ort.InferenceSession | str | Path):
        kind = type(model_or_session).__name__
        raise ValueError(f"model_or_session must be an InferenceSession or .onnx path, got {kind}")
    return _measure_onnxruntime(model_or_session, protocol, vocab_size)
