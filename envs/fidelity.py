"""Fidelity levels: named training budgets that replace a candidate's own KD budget during a search.

A cheap, low-fidelity evaluation ranks candidates with a fraction of the training a full one gets. The built-in
levels are ``low`` (``max_steps=150``), ``medium`` (``max_steps=600``), ``high`` (``epochs=3``, no step cap) and
``full`` (the candidate's own budget); :class:`Fidelity` builds custom ones. The level's name is part of the
evaluation store key (:func:`envs.store.evaluation_key`), and :func:`apply_fidelity` returns the candidate that is
really trained, so a stored result always records the budget it was measured with.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kdlib.candidate import Candidate
from kdlib.distiller import budget_steps
from kdlib.specs import KDConfig

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Fidelity:
    """A named budget: ``max_steps`` steps, or ``epochs`` epochs, or (neither) the candidate's own budget."""

    name: str
    max_steps: int | None = None
    epochs: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"fidelity name {self.name!r} must be letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ValueError(f"fidelity {self.name!r}: max_steps={self.max_steps!r} must be a positive int")
        if self.epochs is not None and (
            isinstance(self.epochs, bool)
            or not isinstance(self.epochs, int | float)
            or not math.isfinite(self.epochs)
            or self.epochs <= 0
        ):
            raise ValueError(f"fidelity {self.name!r}: epochs={self.epochs!r} must be a positive, finite number")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError(
                f"fidelity {self.name!r}: give max_steps={self.max_steps} or epochs={self.epochs}, not both"
            )

    @property
    def keeps_budget(self) -> bool:
        """True when the level trains each candidate with its own budget (like ``full``)."""
        return self.max_steps is None and self.epochs is None

    def describe(self) -> str:
        """``name (max_steps=N)``, ``name (epochs=E)`` or ``name (the candidate's own budget)``."""
        if self.max_steps is not None:
            return f"{self.name} (max_steps={self.max_steps})"
        if self.epochs is not None:
            return f"{self.name} (epochs={self.epochs:g})"
        return f"{self.name} (the candidate's own budget)"


FIDELITIES: dict[str, Fidelity] = {
    level.name: level
    for level in (
        Fidelity("low", max_steps=150),
        Fidelity("medium", max_steps=600),
        Fidelity("high", epochs=3.0),
        Fidelity("full"),
    )
}


def get_fidelity(fidelity: str | Fidelity) -> Fidelity:
    """The level named ``fidelity`` (or ``fidelity`` itself when it is a :class:`Fidelity`).

    A custom level may not reuse a built-in name with another budget: the name keys the evaluation store.
    """
    known = ", ".join(level.describe() for level in FIDELITIES.values())
    if isinstance(fidelity, Fidelity):
        builtin = FIDELITIES.get(fidelity.name)
        if builtin is not None and builtin != fidelity:
            raise ValueError(
                f"fidelity {fidelity.describe()} reuses the built-in name of {builtin.describe()}; "
                "give the custom level another name"
            )
        return fidelity
    if isinstance(fidelity, str):
        if fidelity not in FIDELITIES:
            raise ValueError(
                f"unknown fidelity {fidelity!r}; known levels: {known}; "
                "or pass a custom Fidelity(name, max_steps=..., epochs=...)"
            )
        return FIDELITIES[fidelity]
    raise TypeError(f"fidelity must be a level name or a Fidelity, got {type(fidelity).__name__}")


def _budget(kd: KDConfig, train_size: int | None, candidate: Candidate) -> int:
    if kd.max_steps is None and train_size is None:
        raise ValueError(
            f"candidate {candidate.content_hash()} has general_distillation_steps={kd.general_distillation_steps} "
            "and an epoch budget: apply_fidelity needs train_size to rescale its general stage"
        )
    return kd.max_steps if kd.max_steps is not None else budget_steps(kd, train_size)


def apply_fidelity(candidate: Candidate, fidelity: str | Fidelity, *, train_size: int | None = None) -> Candidate:
    """The candidate as trained at ``fidelity``: its KD budget (``max_steps`` / ``epochs``) replaced by the level's.

    A general-distillation stage keeps its share of the budget (at least one step, always leaving one for task
    distillation); rescaling it needs ``train_size`` (training examples) when either budget is in epochs.
    """
    level = get_fidelity(fidelity)
    if level.keeps_budget:
        return candidate
    kd = candidate.kd
    budget = (
        {"max_steps": level.max_steps} if level.max_steps is not None else {"max_steps": None, "epochs": level.epochs}
    )
    new_kd = KDConfig.model_validate(kd.model_dump() | budget)
    if kd.general_distillation_steps:
        old_total = _budget(kd, train_size, candidate)
        new_total = _budget(new_kd, train_size, candidate)
        share = round(kd.general_distillation_steps * new_total / old_total)
        general = min(new_total - 1, max(1, share))
        new_kd = KDConfig.model_validate(new_kd.model_dump() | {"general_distillation_steps": general})
    return Candidate(spec=candidate.spec, kd=new_kd)
