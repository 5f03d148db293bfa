"""Fidelity levels: named training budgets that replace a candidate's own KD budget during a search.

A cheap, low-fidelity evaluation ranks candidates with a fraction of the training a full one gets. Two kinds:

* *compressed* levels replace the candidate's budget (``max_steps`` or ``epochs``): the whole schedule (warm-up,
  linear decay) is squeezed into the smaller budget. The built-in levels are ``low`` (``max_steps=150``), ``medium``
  (``max_steps=600``), ``high`` (``epochs=3``, no step cap) and ``full`` (the candidate's own budget);
* *rungs* (``stop_after=r``, built by :func:`rung`) train the first ``r`` steps of the candidate's own schedule: the
  point ``r`` of its learning curve. A higher rung retrains from scratch and reproduces the lower rung's steps
  exactly (the runs are seeded), so rungs of one candidate are points of one curve; multi-fidelity agents
  (successive halving, Hyperband, MO-ASHA) climb them.

The level's name is part of the evaluation store key (:func:`envs.store.evaluation_key`), and :func:`apply_fidelity`
returns the candidate that is really trained, so a stored result always records the budget it was measured with.
:func:`fidelity_steps` is the training steps an evaluation at a level costs: the machine-independent currency of
step budgets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig
from distilsearch.kdlib.training.distiller import budget_steps

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Fidelity:
    """A named budget: ``max_steps`` steps, or ``epochs`` epochs, or (neither) the candidate's own budget, of which
    only the first ``stop_after`` steps are trained when it is set (a rung)."""

    name: str
    max_steps: int | None = None
    epochs: float | None = None
    stop_after: int | None = None

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
        if self.stop_after is not None:
            if isinstance(self.stop_after, bool) or not isinstance(self.stop_after, int) or self.stop_after < 1:
                raise ValueError(f"fidelity {self.name!r}: stop_after={self.stop_after!r} must be a positive int")
            if not self.keeps_budget:
                raise ValueError(
                    f"fidelity {self.name!r}: stop_after truncates the candidate's own budget; "
                    "give it without max_steps / epochs"
                )

    @property
    def keeps_budget(self) -> bool:
        """True when the level trains each candidate with its own budget (like ``full``)."""
        return self.max_steps is None and self.epochs is None

    def describe(self) -> str:
        """``name (max_steps=N)``, ``name (epochs=E)``, ``name (first N steps of ...)`` or ``name (the candidate's own
        budget)``."""
        if self.stop_after is not None:
            return f"{self.name} (the first {self.stop_after} steps of the candidate's own schedule)"
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


RUNG_PREFIX = "rung-"


def rung(steps: int) -> Fidelity:
    """The level that trains the first ``steps`` steps of each candidate's own schedule, named ``rung-<steps>``."""
    return Fidelity(f"{RUNG_PREFIX}{steps}", stop_after=steps)


def rung_ladder(min_steps: int, max_steps: int, eta: float) -> list[int]:
    """Rung step counts ``min_steps * eta**k`` (rounded) below ``max_steps``, then ``max_steps``: increasing."""
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1:
        raise ValueError(f"min_steps={min_steps!r} must be a positive int")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < min_steps:
        raise ValueError(f"max_steps={max_steps!r} must be an int of at least min_steps={min_steps}")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta) or eta <= 1:
        raise ValueError(f"eta={eta!r} must be a finite number above 1")
    ladder: list[int] = []
    k = 0
    while (steps := round(min_steps * eta**k)) < max_steps:
        if not ladder or steps > ladder[-1]:
            ladder.append(steps)
        k += 1
    return [*ladder, max_steps]


def get_fidelity(fidelity: str | Fidelity) -> Fidelity:
    """The level named ``fidelity`` (or ``fidelity`` itself when it is a :class:`Fidelity`); ``rung-<N>`` names
    :func:`rung` levels.

    A custom level may not reuse a built-in name with another budget: the name keys the evaluation store.
    """
    known = ", ".join(level.describe() for level in FIDELITIES.values())
    if isinstance(fidelity, Fidelity):
        builtin = FIDELITIES.get(fidelity.name)
        if fidelity.name.startswith(RUNG_PREFIX) and fidelity != _named_rung(fidelity.name):
            raise ValueError(f"fidelity {fidelity.describe()}: names {RUNG_PREFIX}<N> are reserved for rung(N)")
        if builtin is not None and builtin != fidelity:
            raise ValueError(
                f"fidelity {fidelity.describe()} reuses the built-in name of {builtin.describe()}; "
                "give the custom level another name"
            )
        return fidelity
    if isinstance(fidelity, str):
        named = _named_rung(fidelity)
        if named is not None:
            return named
        if fidelity not in FIDELITIES:
            raise ValueError(
                f"unknown fidelity {fidelity!r}; known levels: {known}; "
                "or pass a custom Fidelity(name, max_steps=..., epochs=...)"
            )
        return FIDELITIES[fidelity]
    raise TypeError(f"fidelity must be a level name or a Fidelity, got {type(fidelity).__name__}")


def _named_rung(name: str) -> Fidelity | None:
    steps = name.removeprefix(RUNG_PREFIX)
    if name.startswith(RUNG_PREFIX) and steps.isdigit() and not steps.startswith("0"):
        return rung(int(steps))
    return None


def fidelity_steps(candidate: Candidate, fidelity: str | Fidelity, *, train_size: int) -> int:
    """The training steps an evaluation of ``candidate`` at ``fidelity`` runs (all stages; early stopping aside)."""
    level = get_fidelity(fidelity)
    planned = budget_steps(apply_fidelity(candidate, level, train_size=train_size).kd, train_size)
    return planned if level.stop_after is None else min(level.stop_after, planned)


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
