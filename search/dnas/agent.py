"""The ``dnas`` agent: a differentiable-NAS baseline that spends the budget like every other agent.

It searches one architecture per (beta, seed) with :func:`~distilsearch.search.dnas.tune.run_dnas_tune` (seeds ``seed ..
seed + num_seeds - 1``), then evaluates the derived students of the trials that completed, in (beta, seed) order,
through ``budgeted.evaluate_many`` (in parallel on a Ray evaluator) -- each distinct candidate costs its price in
the run's budget unit (one evaluation, or its training steps), repeats free -- until the budget is spent. Trials
stopped by ASHA or failed are recorded, not evaluated. The run ends there, even with budget left. With a Ray
evaluator, its local Ray must have room for the trials beside the evaluation workers
(:func:`~distilsearch.search.dnas.tune.check_room` refuses one that has none rather than wait forever).

From the space: the searched depths, head counts and FFN widths are the space's ``num_layers`` / ``num_heads`` /
``ffn_size`` values (a fixed field is a single choice) that the teacher allows; ``layer_selection``,
``head_selection`` and ``ffn_selection`` are the space's fixed values, else ``first`` / ``importance`` when the
space offers them, else its first choice (StudentSpec's defaults when the space leaves them out). The KD recipe is
:func:`nearest_candidate`'s for the teacher-sized spec: fixed KD fields as fixed, searched ones at the choice
nearest KDConfig's default; the search's ``alpha``, ``temperature``, ``batch_size`` and ``max_length`` are that
recipe's, and FLOPs are counted at the first latency point of a wrapped LiveEvaluator (that of its results'
``flops``).

A derived spec the space cannot represent (e.g. the space fixes a smaller ``hidden_size``, which DNAS never
changes) is mapped to the nearest valid choice vector; ``dnas.json`` in the run folder records every trial, its
derived spec, the candidate evaluated and each field the mapping changed.

Resume: the sweep's trials finished before are read back from their JSON records and not rerun (only missing,
unfinished or failed trials run, with a new Tuner; no Tune state is restored, so nothing in the run folder is
unpickled: see :mod:`search.dnas.tune`), and the ledger answers every candidate already evaluated, so a resumed run
repeats no work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilsearch.envs.space import SearchSpace, Value
from distilsearch.kdlib.core.atomic import write_json_atomic
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search import run_layout
from distilsearch.search.agents.base import Agent, check_int
from distilsearch.search.budget import BudgetedEvaluator
from distilsearch.search.dnas.train import DNASConfig
from distilsearch.search.dnas.tune import ASHA_METRICS, TrialOutcome, check_grid, run_dnas_tune

STATE_FILE = run_layout.AGENT_STATES["dnas"]
SEARCH_FIELDS = (
    "steps",
    "weight_lr",
    "arch_lr",
    "tau_start",
    "tau_end",
    "alternating",
    "hard",
    "report_every",
    "validation_rows",
)
PREFERRED = {"layer_selection": "first", "head_selection": "importance", "ffn_selection": "importance"}


def _distance(choice: Value, target: Any) -> float:
    """0 for equal values, ``|log(a / b)|`` for positive numbers, ``|a - b|`` for other numbers, else infinity."""
    if type(choice) is type(target) and choice == target:
        return 0.0
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (choice, target))
    if not numbers:
        return math.inf
    if choice > 0 and target > 0:
        return abs(math.log(choice / target))
    return abs(choice - target)


def nearest_candidate(space: SearchSpace, spec: StudentSpec, kd: KDConfig | None = None) -> tuple[Candidate, dict]:
    """The valid candidate of ``space`` nearest ``spec`` (and ``kd``, default KDConfig()), and what differs.

    Dimensions are decided in order, each at the allowed choice (:meth:`SearchSpace.validity_mask`) nearest its
    target value (see :func:`_distance`; ties to the lower index), so the result is always valid. The second value
    maps each StudentSpec field the candidate changed to ``{"derived": ..., "evaluated": ...}``.
    """
    targets = spec.model_dump() | (kd or KDConfig()).model_dump()
    chosen: list[int] = []
    for index, name in enumerate(space.names):
        allowed = np.flatnonzero(space.validity_mask(chosen)[index])
        choices = space.dimensions[name]
        chosen.append(int(min(allowed, key=lambda c: (_distance(choices[c], targets[name]), c))))
    candidate = space.decode(chosen)
    changes = {
        name: {"derived": getattr(spec, name), "evaluated": getattr(candidate.spec, name)}
        for name in StudentSpec.model_fields
        if getattr(spec, name) != getattr(candidate.spec, name)
    }
    return candidate, changes


def _sizes(space: SearchSpace, name: str, allowed: Callable[[int], bool]) -> tuple[int, ...]:
    values = space.dimensions.get(name, (space.fixed.get(name),))
    kept = tuple(sorted(value for value in values if allowed(value)))
    if not kept:
        raise ValueError(f"the space's {name} values {values} leave the DNAS agent no choice this teacher allows")
    return kept


def _setting(space: SearchSpace, name: str) -> Value:
    if name in space.fixed:
        return space.fixed[name]
    if name in space.dimensions:
        choices = space.dimensions[name]
        return PREFERRED[name] if PREFERRED[name] in choices else choices[0]
    return StudentSpec.model_fields[name].default


def dnas_config_for(space: SearchSpace, settings: Mapping[str, Any]) -> DNASConfig:
    """The search settings of a DNAS run over ``space`` (see the module docstring); ``settings``: other fields."""
    teacher = space.teacher
    spec = StudentSpec(
        num_layers=teacher.num_hidden_layers,
        hidden_size=teacher.hidden_size,
        num_heads=teacher.num_attention_heads,
        ffn_size=teacher.intermediate_size,
    )
    kd = nearest_candidate(space, spec)[0].kd
    return DNASConfig(
        depths=_sizes(space, "num_layers", lambda n: n <= teacher.num_hidden_layers),
        heads=_sizes(space, "num_heads", lambda k: k <= teacher.num_attention_heads and teacher.hidden_size % k == 0),
        ffn_sizes=_sizes(space, "ffn_size", lambda f: f <= teacher.intermediate_size),
        layer_selection=_setting(space, "layer_selection"),
        head_selection=_setting(space, "head_selection"),
        ffn_selection=_setting(space, "ffn_selection"),
        alpha=kd.alpha,
        temperature=kd.temperature,
        batch_size=kd.batch_size,
        max_length=kd.max_length,
        **settings,
    )


def evaluate_outcomes(
    budgeted: BudgetedEvaluator, space: SearchSpace, outcomes: Sequence[TrialOutcome]
) -> list[dict[str, Any]]:
    """Evaluate the derived students of completed trials (mapped by :func:`nearest_candidate`), in order, until the
    budget is spent, all in one batch (in parallel on a Ray evaluator); a candidate already in the ledger is answered
    free. One record per trial: the trial (:meth:`TrialOutcome.to_dict`), ``candidate``, ``changes``, ``evaluated``
    and ``result_status`` / ``reward`` or a ``note`` saying why it was not evaluated.
    """
    records: list[dict[str, Any]] = []
    chosen: list[Candidate | None] = []
    new: set[str] = set()
    left = budgeted.remaining
    for outcome in outcomes:
        record = outcome.to_dict() | {"candidate": None, "changes": {}, "evaluated": False}
        candidate = None
        if outcome.status != "completed" or outcome.spec is None:
            record["note"] = f"not evaluated: the trial {outcome.status}"
        else:
            mapped, changes = nearest_candidate(space, outcome.spec)
            record |= {"candidate": mapped.model_dump(mode="json"), "changes": changes}
            key = mapped.content_hash()
            if mapped in budgeted or key in new:
                candidate = mapped
            elif budgeted.cost(mapped) > left:
                record["note"] = "not evaluated: the budget is spent"
            else:
                left -= budgeted.cost(mapped)
                new.add(key)
                candidate = mapped
        records.append(record)
        chosen.append(candidate)
    budgeted.evaluate_many([candidate for candidate in chosen if candidate is not None])
    for record, candidate in zip(records, chosen, strict=True):
        if candidate is not None:
            entry = budgeted.lookup(candidate)
            record |= {"evaluated": True, "result_status": entry.result.status, "reward": entry.reward}
    return records


class DNASAgent(Agent):
    """AdaBERT-style differentiable NAS over a beta sweep on Ray Tune (see the module docstring).

    Search options (recorded in ``agent.json``): ``betas``, ``num_seeds``, ``asha``, ``asha_metric`` and the
    :class:`~distilsearch.search.dnas.train.DNASConfig` fields of :data:`SEARCH_FIELDS`. Execution settings (not
    recorded): ``teacher`` (default: the teacher of a wrapped :class:`~distilsearch.envs.live.LiveEvaluator`; its key
    must match the evaluator's), ``device``, the Ray resources, ``setup`` and ``runtime_env`` (see
    :func:`~distilsearch.search.dnas.tune.run_dnas_tune`).
    """

    name = "dnas"

    def __init__(
        self,
        betas: Sequence[float] = (0.0, 0.5, 2.0),
        num_seeds: int = 1,
        *,
        asha: bool = False,
        asha_metric: str = "relative_loss",
        teacher: Teacher | None = None,
        device: str = "cpu",
        num_cpus_per_trial: int = 1,
        num_gpus_per_trial: float = 0,
        max_concurrent: int = 2,
        num_cpus: int | None = None,
        setup: Callable[[], object] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        **search: Any,
    ) -> None:
        unknown = sorted(set(search) - set(SEARCH_FIELDS))
        if unknown:
            raise ValueError(f"unknown DNAS options {unknown}; search options are {SEARCH_FIELDS}")
        if asha_metric not in ASHA_METRICS:
            raise ValueError(f"asha_metric={asha_metric!r} must be one of {sorted(ASHA_METRICS)}")
        self.search_settings = DNASConfig(**search).model_dump(include=set(SEARCH_FIELDS))
        self.betas = check_grid(betas, (0,))[0]
        self.num_seeds = check_int("num_seeds", num_seeds)
        self.asha = bool(asha)
        self.asha_metric = asha_metric
        self.teacher = teacher
        self.device = device
        self.resources = {
            "num_cpus_per_trial": num_cpus_per_trial,
            "num_gpus_per_trial": num_gpus_per_trial,
            "max_concurrent": max_concurrent,
            "num_cpus": num_cpus,
        }
        self.setup = setup
        self.runtime_env = runtime_env

    def options(self) -> dict[str, Any]:
        return {
            "betas": list(self.betas),
            "num_seeds": self.num_seeds,
            "asha": self.asha,
            "asha_metric": self.asha_metric,
            **self.search_settings,
        }

    def _teacher_for(self, budgeted: BudgetedEvaluator) -> Teacher:
        teacher = self.teacher
        if teacher is None:
            teacher = getattr(getattr(budgeted.evaluator, "student_evaluator", None), "teacher", None)
        if teacher is None:
            kind = type(budgeted.evaluator).__name__
            raise ValueError(f"the dnas agent needs the teacher: {kind} exposes none; pass teacher= to DNASAgent")
        if teacher.key != budgeted.teacher_key:
            raise ValueError(
                f"teacher key {teacher.key[:16]} differs from the evaluator's {budgeted.teacher_key[:16]}: the "
                "search and the evaluations must use the same teacher"
            )
        return teacher

    def search(self, budgeted: BudgetedEvaluator, space: SearchSpace, run_dir: Path, seed: int) -> None:
        teacher = self._teacher_for(budgeted)
        settings = dict(self.search_settings)
        protocol = getattr(getattr(budgeted.evaluator, "student_evaluator", None), "latency_protocol", None)
        if protocol is not None:
            settings["flops_point"] = protocol.points[0]
        config = dnas_config_for(space, settings)
        outcomes = run_dnas_tune(
            teacher,
            self.betas,
            tuple(range(seed, seed + self.num_seeds)),
            config,
            run_dir,
            asha=self.asha,
            asha_metric=self.asha_metric,
            device=self.device,
            setup=self.setup,
            runtime_env=self.runtime_env,
            **self.resources,
        )
        records = evaluate_outcomes(budgeted, space, outcomes)
        write_json_atomic(run_dir / STATE_FILE, {"config": config.model_dump(mode="json"), "trials": records})
