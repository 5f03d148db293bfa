"""Distillation temperature schedules: one temperature per example, ready for ``soft_target_loss``.

* ``constant``: every example uses ``T`` (the configured temperature) at every step.
* ``linear_decay``: ``T`` moves linearly to 1 over the stage, ``T_k = T + (1 - T) * k / (K - 1)`` at step
  ``k`` of ``K``; the last step uses exactly 1 (sharp targets once the student has absorbed the soft ones).
* ``adaptive`` (per example, from the teacher's confidence): a confident teacher puts almost all its mass on
  one class at ``T``, so its "dark knowledge" (how it ranks the wrong classes) is invisible; an unsure
  teacher already exposes it and more softening would wash it out toward uniform. With ``p = softmax(t)``
  (teacher logits at temperature 1, ``C`` classes) the confidence is ``u = 1 - H(p) / log C`` in ``[0, 1]``
  (0: uniform, 1: one-hot), and ``T_i = T * 4 ** (u_i - 0.5)``, clipped to ``[min(1, T), 2 T]``. A teacher of
  middling confidence (``u = 0.5``) gets exactly ``T``; a certain one gets ``2 T``; a uniform one ``T / 2``,
  but never below 1 when ``T >= 1`` (below 1 would sharpen rather than soften). The temperature is a pure
  function of the teacher's logits, so it is identical for cached and recomputed logits.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

TemperatureSchedule = Literal["constant", "linear_decay", "adaptive"]
SCHEDULES: tuple[str, ...] = get_args(TemperatureSchedule)


def temperatures(schedule: str, temperature: float, teacher_logits: Tensor, *, step: int, total_steps: int) -> Tensor:
    """Per-example temperatures ``(batch,)`` (float32, on the logits' device) for step ``step`` of ``total_steps``.

    ``teacher_logits`` is ``(batch, classes)``; only ``adaptive`` reads its values, the others its shape.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    is_number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not (is_number and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not isinstance(teacher_logits, Tensor) or teacher_logits.dim() != 2 or teacher_logits.shape[1] < 2:
        shape = tuple(teacher_logits.shape) if isinstance(teacher_logits, Tensor) else type(teacher_logits).__name__
        raise ValueError(f"teacher_logits must be a (batch, classes >= 2) tensor, got {shape}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < total_steps:
        raise ValueError(f"step must be an int in 0..{total_steps - 1}, got {step!r}")
    batch = teacher_logits.shape[0]
    device = teacher_logits.device
    if schedule == "constant":
        return torch.full((batch,), float(temperature), device=device)
    if schedule == "linear_decay":
        progress = step / (total_steps - 1) if total_steps > 1 else 1.0
        return torch.full((batch,), temperature + (1.0 - temperature) * progress, device=device)
    return adaptive_temperatures(teacher_logits, temperature)


def adaptive_temperatures(teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T * 4 ** (u - 0.5)`` per example, ``u = 1 - H(softmax(teacher_logits)) / log C``, in ``[min(1, T), 2 T]``."""
    log_p = F.log_softmax(teacher_logits.detach().float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    confidence = (1.0 - entropy / math.log(teacher_logits.shape[-1])).clamp(0.0, 1.0)
    scaled = temperature * torch.pow(4.0, confidence - 0.5)
    return scaled.clamp(min(1.0, temperature), 2.0 * temperature)
