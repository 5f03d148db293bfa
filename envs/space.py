"""The search space: which StudentSpec / KDConfig fields are searched, their discrete choices and constraints.

A :class:`SearchSpace` is an ordered list of dimensions, each a field of
:class:`~distilsearch.kdlib.students.specs.StudentSpec` or
:class:`~distilsearch.kdlib.students.specs.KDConfig` with a tuple of allowed values, plus fixed fields (constants) and
the shape of the teacher. A point of the space is a *choice vector*: one index per dimension, in dimension order.

Validity rules, all known to :meth:`SearchSpace.validity_mask` and :meth:`SearchSpace.is_valid`:

* every size (``num_layers``, ``hidden_size``, ``num_heads``, ``ffn_size``) is at most the teacher's;
* ``hidden_size`` is divisible by ``num_heads``;
* a general-distillation stage (``general_distillation_steps`` > 0) has an intermediate loss to train (a weight of a
  registered intermediate KD term > 0), as :func:`~distilsearch.kdlib.training.distiller.plan_stages` requires;
* the declared :class:`Constraint` s ("when these dimensions take these values, forbid those values");
* the deployment :class:`~distilsearch.envs.limits.Limits` (``min_speedup``, ``max_params``, ``max_size_mb``), computed
  analytically from the sizes and ``weight_bits`` (see :mod:`distilsearch.envs.limits`); a limit no candidate meets is a
  ``ValueError`` at construction naming the limit and the best value the space reaches.

Dimensions linked by a rule form a *component*; the valid combinations of each component are enumerated once, so
masks are exact: a choice is allowed exactly when some completion of the partial choices is valid, and a sequence of
masked choices never reaches a dead end. ``layer_selection="explicit"`` and ``layers`` cannot be searched or fixed
(they need per-candidate indices).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import TypeAdapter, ValidationError

from distilsearch.envs.limits import INPUTS, Limits, best, describe, measure, meets, show
from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

Value = int | float | str | bool | None
Choices = tuple[int, ...]

SIZE_LIMITS = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "ffn_size": "intermediate_size",
}
UNSEARCHABLE = frozenset({"layers"})
MAX_COMPONENT_ROWS = 1_000_000

HIDDEN_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
FFN_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
# The default space trains at the budgets the README recommends (results/fidelity_rank_staged.jsonl: learning curves
# of 640-step runs): every student initialised at random stayed at the majority-label rate at every checkpoint (no
# general-distillation stage is searched), so ``init`` is fixed to ``teacher``; TinyBERT's separate intermediate
# phase left the first half of each curve flat (one student sat below the majority rate until the prediction stage
# began), so rungs below half the budget ranked nothing: the intermediate losses are searched but trained jointly
# with the prediction loss (``intermediate_share=0``).
DEFAULT_CHOICES: dict[str, tuple[Value, ...]] = {
    "layer_selection": ("uniform", "first", "last", "alternate"),
    "weight_bits": (32, 8, 2),
    "alpha": (0.3, 0.5, 0.7, 0.9),
    "temperature": (1.0, 2.0, 4.0, 8.0),
    "temperature_schedule": ("constant", "linear_decay", "adaptive"),
    "attention_loss": ("mse", "kl", "cosine"),
    "layer_mapping": ("uniform", "last", "skip"),
}


def default_choices() -> dict[str, tuple[Value, ...]]:
    """:data:`DEFAULT_CHOICES` plus the weight of every registered KD term that has ``search_choices`` (see
    :mod:`distilsearch.kdlib.training.kd_terms`), StudentSpec fields first, each model's in declaration order."""
    from distilsearch.kdlib.training.kd_terms import KD_TERMS  # imports torch; the space itself stays light

    terms = {term.weight_field: term.search_choices for term in KD_TERMS.values() if term.search_choices}
    chosen: dict[str, tuple[Value, ...]] = DEFAULT_CHOICES | terms
    return {name: chosen[name] for name in (*StudentSpec.model_fields, *KDConfig.model_fields) if name in chosen}


DEFAULT_FIXED: dict[str, Value] = {
    "max_steps": 2000,
    "lr": KDConfig.model_fields["lr"].default,
    "batch_size": KDConfig.model_fields["batch_size"].default,
    "max_length": KDConfig.model_fields["max_length"].default,
    "intermediate_share": 0.0,
}
TEACHER_FEATURE_CAPS = {
    "num_hidden_layers": 64,
    "hidden_size": 8192,
    "num_attention_heads": 128,
    "intermediate_size": 32768,
}
TEACHER_DEFAULTS = {"vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2, "num_labels": 2}
"""BERT's own defaults, for teacher shapes written before these fields were recorded."""


def _field_adapters() -> dict[str, tuple[str, TypeAdapter[Any]]]:
    adapters: dict[str, tuple[str, TypeAdapter[Any]]] = {}
    for owner, model in (("spec", StudentSpec), ("kd", KDConfig)):
        for name, info in model.model_fields.items():
            annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            adapters[name] = (owner, TypeAdapter(annotation))
    return adapters


FIELDS = _field_adapters()


def _canonical(name: str, value: Any, where: str) -> Value:
    """Validate ``value`` for field ``name`` (type, range, allowed literals) and return pydantic's canonical form."""
    if name not in FIELDS or name in UNSEARCHABLE:
        known = sorted(set(FIELDS) - UNSEARCHABLE)
        raise ValueError(f"{where}: {name!r} is not a searchable StudentSpec/KDConfig field; known fields: {known}")
    if name == "layer_selection" and value == "explicit":
        raise ValueError(f"{where}: layer_selection='explicit' needs per-candidate layer indices and cannot be used")
    try:
        return FIELDS[name][1].validate_python(value)
    except ValidationError as error:
        raise ValueError(f"{where}: {value!r} is not a valid {name}: {error.errors()[0]['msg']}") from None


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b


def _show(values: Mapping[str, Value]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in values.items())


def _listed(values: Any) -> tuple[Value, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"constraint values must be a list, got {values!r}")
    return tuple(values)


@dataclass(frozen=True)
class TeacherShape:
    """The sizes of the teacher a space is cut from (attribute names as in the ``transformers`` configs).

    The last four (defaults: :data:`TEACHER_DEFAULTS`) only enter the analytic limits of :mod:`envs.limits`.
    """

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = TEACHER_DEFAULTS["vocab_size"]
    max_position_embeddings: int = TEACHER_DEFAULTS["max_position_embeddings"]
    type_vocab_size: int = TEACHER_DEFAULTS["type_vocab_size"]
    num_labels: int = TEACHER_DEFAULTS["num_labels"]

    def __post_init__(self) -> None:
        for name in (*TEACHER_FEATURE_CAPS, *TEACHER_DEFAULTS):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"teacher {name}={value!r} must be a positive int")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"teacher hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )

    @classmethod
    def from_config(cls, config: Any) -> TeacherShape:
        """Read the sizes of a teacher's config (BERT, RoBERTa, ELECTRA, ... or anything with the same attributes;
        missing extras: defaults)."""
        extras = {name: getattr(config, name, default) for name, default in TEACHER_DEFAULTS.items()}
        return cls(**{name: getattr(config, name) for name in TEACHER_FEATURE_CAPS}, **extras)

    def features(self) -> np.ndarray:
        """``log2(size) / log2(cap)`` per size, clipped to [0, 1].

        Caps: 64 layers, hidden 8192, 128 heads, FFN 32768.
        """
        values = [math.log2(getattr(self, name)) / math.log2(cap) for name, cap in TEACHER_FEATURE_CAPS.items()]
        return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class Constraint:
    """When every ``when`` dimension takes one of its listed values, each ``forbid`` dimension may not take its listed
    values. ``reason`` is reported with every violation."""

    when: Mapping[str, tuple[Value, ...]]
    forbid: Mapping[str, tuple[Value, ...]]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (as in YAML)."""
        return {
            "when": {name: list(values) for name, values in self.when.items()},
            "forbid": {name: list(values) for name, values in self.forbid.items()},
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraint:
        """Build from the plain-data form; unknown keys are errors."""
        unknown = set(data) - {"when", "forbid", "reason"}
        if unknown:
            raise ValueError(f"constraint {dict(data)!r} has unknown keys {sorted(unknown)}")
        return cls(
            when={name: _listed(values) for name, values in dict(data.get("when") or {}).items()},
            forbid={name: _listed(values) for name, values in dict(data.get("forbid") or {}).items()},
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class Validity:
    """Outcome of :meth:`SearchSpace.is_valid`; truthy when valid, else ``reason`` says why not."""

    valid: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.valid


@dataclass(frozen=True)
class _Limit:
    """A size may not exceed the teacher's."""

    dims: tuple[int, ...]
    name: str
    teacher_field: str
    limit: int

    def check(self, values: Mapping[str, Value]) -> str | None:
        value = values[self.name]
        if value > self.limit:
            return f"{self.name}={value} exceeds the teacher's {self.teacher_field}={self.limit}"
        return None


@dataclass(frozen=True)
class _Divisible:
    """``hidden_size`` must be divisible by ``num_heads`` (either may be fixed)."""

    dims: tuple[int, ...]
    fixed: Mapping[str, Value]

    def check(self, values: Mapping[str, Value]) -> str | None:
        hidden = values.get("hidden_size", self.fixed.get("hidden_size"))
        heads = values.get("num_heads", self.fixed.get("num_heads"))
        return f"hidden_size={hidden} is not divisible by num_heads={heads}" if hidden % heads else None


@dataclass(frozen=True)
class _GeneralStage:
    """A general-distillation stage needs an intermediate loss (any of them may be fixed or default)."""

    dims: tuple[int, ...]
    fixed: Mapping[str, Value]
    weights: tuple[str, ...]

    def check(self, values: Mapping[str, Value]) -> str | None:
        def value(name: str) -> Value:
            return values.get(name, self.fixed.get(name, KDConfig.model_fields[name].default))

        steps = value("general_distillation_steps")
        if steps and not any(value(name) for name in self.weights):
            return f"general_distillation_steps={steps} needs an intermediate loss: one of {self.weights} > 0"
        return None


@dataclass(frozen=True)
class _Forbid:
    """One ``forbid`` entry of a :class:`Constraint`."""

    dims: tuple[int, ...]
    target: str
    banned: tuple[Value, ...]
    when: Mapping[str, tuple[Value, ...]]
    reason: str

    def check(self, values: Mapping[str, Value]) -> str | None:
        if values[self.target] not in self.banned:
            return None
        if any(values[name] not in allowed for name, allowed in self.when.items()):
            return None
        context = f" when {_show({name: values[name] for name in self.when})}" if self.when else ""
        return f"{self.target}={values[self.target]!r} is forbidden{context}: {self.reason}"


@dataclass(frozen=True)
class _Budget:
    """A deployment limit (``min_speedup``, ``max_params`` or ``max_size_mb``) on a student's analytic value."""

    dims: tuple[int, ...]
    limit: str
    bound: float
    teacher: TeacherShape
    fixed: Mapping[str, Value]

    def value(self, values: Mapping[str, Value]) -> float:
        """The analytic value of the student ``values`` (and the fixed fields) describe."""
        inputs = {name: values.get(name, self.fixed.get(name)) for name in INPUTS[self.limit]}
        return measure(self.limit, self.teacher, inputs)

    def check(self, values: Mapping[str, Value]) -> str | None:
        value = self.value(values)
        if meets(self.limit, value, self.bound):
            return None
        return f"{describe(self.limit, value)} breaks {show(self.limit, self.bound)}"


_Rule = _Limit | _Divisible | _GeneralStage | _Forbid | _Budget


@dataclass
class _Component:
    dims: tuple[int, ...]
    rows: np.ndarray = field(repr=False)


class SearchSpace:
    """Ordered dimensions (field name -> choices), fixed fields and constraints over one teacher's shape."""

    def __init__(
        self,
        teacher: TeacherShape,
        dimensions: Mapping[str, Sequence[Any]],
        fixed: Mapping[str, Any] | None = None,
        constraints: Sequence[Constraint] = (),
        limits: Limits | Mapping[str, Any] | None = None,
    ) -> None:
        if not dimensions:
            raise ValueError("a search space needs at least one dimension")
        self.teacher = teacher
        self.dimensions: dict[str, tuple[Value, ...]] = {}
        for name, raw in dimensions.items():
            if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or not raw:
                raise ValueError(f"dimension {name!r}: choices must be a non-empty list, got {raw!r}")
            choices = tuple(_canonical(name, value, f"dimension {name!r}") for value in raw)
            for a, b in itertools.combinations(choices, 2):
                if _same(a, b):
                    raise ValueError(f"dimension {name!r}: choice {a!r} is listed twice")
            self.dimensions[name] = choices
        self.fixed: dict[str, Value] = {}
        for name, value in (fixed or {}).items():
            if name in self.dimensions:
                raise ValueError(f"{name!r} is both a dimension and a fixed field")
            self.fixed[name] = _canonical(name, value, f"fixed field {name!r}")
        missing = [name for name in SIZE_LIMITS if name not in self.dimensions and name not in self.fixed]
        if missing:
            raise ValueError(f"sizes {missing} must be dimensions or fixed fields")
        self.constraints = tuple(constraints)
        self.limits = limits if isinstance(limits, Limits) else Limits.from_dict(limits)
        self.names: tuple[str, ...] = tuple(self.dimensions)
        self.sizes: tuple[int, ...] = tuple(len(choices) for choices in self.dimensions.values())
        self.offsets: tuple[int, ...] = tuple(int(x) for x in np.cumsum((0, *self.sizes))[:-1])
        self._index = {name: i for i, name in enumerate(self.names)}
        self._owner = {name: FIELDS[name][0] for name in (*self.names, *self.fixed)}
        self._rules = self._build_rules()
        self._unary = self._unary_masks()
        self._components = self._build_components()

    # ---- construction -------------------------------------------------------------------------------------------

    def _build_rules(self) -> list[_Rule]:
        rules: list[_Rule] = []
        for name, teacher_field in SIZE_LIMITS.items():
            limit = getattr(self.teacher, teacher_field)
            if name in self.fixed:
                reason = _Limit((), name, teacher_field, limit).check(self.fixed)
                if reason is not None:
                    raise ValueError(f"fixed field {reason}")
            else:
                rules.append(_Limit((self._index[name],), name, teacher_field, limit))
        divisible = _Divisible(
            tuple(self._index[name] for name in ("hidden_size", "num_heads") if name in self._index), dict(self.fixed)
        )
        if divisible.dims:
            rules.append(divisible)
        elif divisible.check(self.fixed) is not None:
            raise ValueError(f"fixed fields: {divisible.check(self.fixed)}")
        general = self._general_stage_rule()
        if general is not None:
            rules.append(general)
        canonical = []
        for constraint in self.constraints:
            constraint_rules, constraint = self._constraint_rules(constraint)
            rules.extend(constraint_rules)
            canonical.append(constraint)
        self.constraints = tuple(canonical)
        return rules + self._budget_rules()

    def _general_stage_rule(self) -> _GeneralStage | None:
        """The rule linking a searched general stage to the intermediate weights (checked now when all are fixed)."""
        if "general_distillation_steps" not in self._index and not self.fixed.get("general_distillation_steps"):
            return None
        from distilsearch.kdlib.training.kd_terms import KD_TERMS  # imports torch; only a general stage needs it

        weights = tuple(str(term.weight_field) for term in KD_TERMS.values() if term.phase == "intermediate")
        names = ("general_distillation_steps", *weights)
        rule = _GeneralStage(
            tuple(self._index[name] for name in names if name in self._index), dict(self.fixed), weights
        )
        if rule.dims:
            return rule
        if rule.check({}) is not None:
            raise ValueError(f"fixed fields: {rule.check({})}")
        return None

    def _budget_rules(self) -> list[_Rule]:
        """One rule per limit, over the size dimensions it reads; a limit on fixed sizes alone is checked now."""
        fixed = {"weight_bits": StudentSpec.model_fields["weight_bits"].default} | self.fixed
        rules: list[_Rule] = []
        for name, bound in self.limits.to_dict().items():
            dims = tuple(self._index[field] for field in INPUTS[name] if field in self._index)
            rule = _Budget(dims, name, bound, self.teacher, fixed)
            if dims:
                rules.append(rule)
            elif rule.check({}) is not None:
                raise ValueError(
                    f"no candidate meets {show(name, bound)}: the fixed sizes give {describe(name, rule.value({}))}"
                )
        return rules

    def _constraint_rules(self, constraint: Constraint) -> tuple[list[_Rule], Constraint]:
        if not constraint.forbid:
            raise ValueError(f"constraint {constraint.to_dict()!r} forbids nothing")
        sets: dict[str, dict[str, tuple[Value, ...]]] = {"when": {}, "forbid": {}}
        for part, mapping in (("when", constraint.when), ("forbid", constraint.forbid)):
            for name, values in mapping.items():
                if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                    raise ValueError(f"constraint {part}: {name} must list one or more values, got {values!r}")
                if name not in self.dimensions:
                    raise ValueError(f"constraint {part} names {name!r}, which is not a dimension of this space")
                canonical = []
                for value in values:
                    value = _canonical(name, value, f"constraint {part}")
                    found = [choice for choice in self.dimensions[name] if _same(choice, value)]
                    if not found:
                        raise ValueError(
                            f"constraint {part}: {name}={value!r} is not one of the choices {self.dimensions[name]}"
                        )
                    canonical.append(found[0])
                sets[part][name] = tuple(canonical)
        overlap = set(sets["when"]) & set(sets["forbid"])
        if overlap:
            raise ValueError(f"constraint names {sorted(overlap)} in both 'when' and 'forbid'")
        when = sets["when"]
        rules = [
            _Forbid(tuple(self._index[name] for name in (*when, target)), target, banned, when, constraint.reason)
            for target, banned in sets["forbid"].items()
        ]
        return rules, Constraint(when=when, forbid=sets["forbid"], reason=constraint.reason)

    def _unary_masks(self) -> list[np.ndarray]:
        masks = [np.ones(size, dtype=bool) for size in self.sizes]
        for rule in self._rules:
            if len(rule.dims) == 1 and not isinstance(rule, _Budget):
                (d,) = rule.dims
                for c, value in enumerate(self.dimensions[self.names[d]]):
                    if rule.check({self.names[d]: value}) is not None:
                        masks[d][c] = False
        for d, mask in enumerate(masks):
            if not mask.any():
                raise ValueError(f"dimension {self.names[d]!r}: no choice in {self.dimensions[self.names[d]]} is valid")
        return masks

    def _build_components(self) -> list[_Component]:
        parent = list(range(len(self.names)))

        def root(d: int) -> int:
            while parent[d] != d:
                d = parent[d]
            return d

        linking = [rule for rule in self._rules if len(rule.dims) > 1 or isinstance(rule, _Budget)]
        for rule in linking:
            for d in rule.dims[1:]:
                parent[root(d)] = root(rule.dims[0])
        groups: dict[int, list[int]] = {}
        for d in sorted({d for rule in linking for d in rule.dims}):
            groups.setdefault(root(d), []).append(d)
        return [self._enumerate(tuple(dims), linking) for dims in groups.values()]

    def _enumerate(self, dims: tuple[int, ...], linking: list[_Rule]) -> _Component:
        """Depth-first enumeration of the valid index combinations of linked dimensions (limits applied last)."""
        position = {d: k for k, d in enumerate(dims)}
        due: list[list[_Rule]] = [[] for _ in dims]
        budgets = [rule for rule in linking if isinstance(rule, _Budget) and rule.dims[0] in position]
        for rule in linking:
            if rule.dims[0] in position and not isinstance(rule, _Budget):
                due[max(position[d] for d in rule.dims)].append(rule)
        options = [np.flatnonzero(self._unary[d]).tolist() for d in dims]
        rows: list[tuple[int, ...]] = []
        values: dict[str, Value] = {}

        def visit(k: int, prefix: tuple[int, ...]) -> None:
            if len(rows) > MAX_COMPONENT_ROWS:
                names = [self.names[d] for d in dims]
                raise ValueError(f"constraints link {names} into more than {MAX_COMPONENT_ROWS} combinations")
            if k == len(dims):
                rows.append(prefix)
                return
            name = self.names[dims[k]]
            for c in options[k]:
                values[name] = self.dimensions[name][c]
                if all(rule.check(values) is None for rule in due[k]):
                    visit(k + 1, (*prefix, c))
            values.pop(name, None)

        visit(0, ())
        if not rows:
            raise ValueError(f"no valid combination of {[self.names[d] for d in dims]}: the space is empty")
        return _Component(dims, self._within_limits(dims, np.asarray(rows, dtype=np.int32), budgets))

    def _within_limits(self, dims: tuple[int, ...], rows: np.ndarray, budgets: list[_Budget]) -> np.ndarray:
        """The rows that meet every limit; ValueError naming the limits and the best values when none does."""
        keep = np.ones(len(rows), dtype=bool)
        reached = []
        for rule in budgets:
            values = self._measured(rule, dims, rows)
            meeting = meets(rule.limit, values, rule.bound)
            reached.append(best(rule.limit, values))
            if not meeting.any():
                raise ValueError(f"no candidate meets {show(rule.limit, rule.bound)}: {reached[-1]}")
            keep &= meeting
        if not keep.any():
            names = " and ".join(show(rule.limit, rule.bound) for rule in budgets)
            raise ValueError(f"no candidate meets {names} together; alone, {'; '.join(reached)}")
        return rows[keep]

    def _measured(self, rule: _Budget, dims: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        """The rule's analytic value for every row (computed once per distinct combination of its dimensions)."""
        columns = [dims.index(d) for d in rule.dims]
        names = [self.names[d] for d in rule.dims]
        keys, inverse = np.unique(rows[:, columns], axis=0, return_inverse=True)
        per_key = [rule.value({n: self.dimensions[n][int(c)] for n, c in zip(names, key, strict=True)}) for key in keys]
        return np.asarray(per_key, dtype=np.float64)[inverse.reshape(-1)]

    # ---- the default space ---------------------------------------------------------------------------------------

    @classmethod
    def default_for(
        cls,
        teacher_config: Any,
        fixed: Mapping[str, Any] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
    ) -> SearchSpace:
        """The default space for a teacher (its config, of any supported family, or a :class:`TeacherShape`).

        * ``num_layers``: 1 .. the teacher's layer count;
        * ``hidden_size``: 1/4, 1/2, 3/4 and all of the teacher's, each rounded to the nearest multiple of
          ``lcm(64, teacher heads)`` when a quarter of the teacher's width is at least that, else of the teacher's
          head count (so every head-count choice divides every hidden choice);
        * ``num_heads``: the divisors of the teacher's head count;
        * ``ffn_size``: 1/4, 1/2, 3/4 and all of the teacher's, rounded to multiples of 64 when a quarter is >= 64;
        * the KD and student choices of :func:`default_choices` (:data:`DEFAULT_CHOICES` and the registered KD terms'
          weights); fixed fields :data:`DEFAULT_FIXED` (or ``fixed``);
        * the deployment ``limits`` (:class:`~distilsearch.envs.limits.Limits` or its mapping form), none by default.
        """
        teacher = teacher_config
        if not isinstance(teacher, TeacherShape):
            teacher = TeacherShape.from_config(teacher_config)
        heads = teacher.num_attention_heads
        unit = math.lcm(64, heads)
        if teacher.hidden_size / 4 < unit:
            unit = heads
        ffn_unit = 64 if teacher.intermediate_size / 4 >= 64 else 1
        dimensions: dict[str, tuple[Value, ...]] = {
            "num_layers": tuple(range(1, teacher.num_hidden_layers + 1)),
            "hidden_size": _fractions(teacher.hidden_size, HIDDEN_FRACTIONS, unit),
            "num_heads": tuple(d for d in range(1, heads + 1) if heads % d == 0),
            "ffn_size": _fractions(teacher.intermediate_size, FFN_FRACTIONS, ffn_unit),
            **default_choices(),
        }
        return cls(teacher, dimensions, DEFAULT_FIXED if fixed is None else fixed, limits=limits)

    def with_limits(self, limits: Limits | Mapping[str, Any]) -> SearchSpace:
        """This space with ``limits`` added: each limit they set replaces this space's own."""
        return SearchSpace(self.teacher, self.dimensions, self.fixed, self.constraints, self.limits.merged(limits))

    # ---- plain data, YAML and hash ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: ``teacher``, ``dimensions`` (ordered), ``fixed``, ``constraints`` and ``limits``."""
        return {
            "teacher": asdict(self.teacher),
            "dimensions": {name: list(choices) for name, choices in self.dimensions.items()},
            "fixed": dict(self.fixed),
            "constraints": [constraint.to_dict() for constraint in self.constraints],
            "limits": self.limits.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from :meth:`to_dict`'s form; unknown keys are errors."""
        unknown = set(data) - {"teacher", "dimensions", "fixed", "constraints", "limits"}
        if unknown:
            raise ValueError(f"search space has unknown keys {sorted(unknown)}")
        if "teacher" not in data or "dimensions" not in data:
            raise ValueError("search space needs 'teacher' and 'dimensions'")
        return cls(
            TeacherShape(**data["teacher"]),
            data["dimensions"],
            data.get("fixed") or {},
            [Constraint.from_dict(item) for item in data.get("constraints") or []],
            Limits.from_dict(data.get("limits")),
        )

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The YAML text of :meth:`to_dict` (dimension order kept); also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Load a space written by :meth:`to_yaml` (or by hand in the same form)."""
        try:
            with Path(path).open(encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping with 'teacher' and 'dimensions', got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: {error}") from None

    def _identity(self) -> dict[str, Any]:
        """:meth:`to_dict` with the dimensions as an ordered list of pairs (JSON hashing sorts mapping keys)."""
        return self.to_dict() | {"dimensions": [[name, list(choices)] for name, choices in self.dimensions.items()]}

    def space_hash(self) -> str:
        """16 hex digits identifying the space's content (order of dimensions included)."""
        return sha256_json(self._identity())[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self.space_hash())

    def __repr__(self) -> str:
        return f"SearchSpace({self.space_hash()}: {dict(zip(self.names, self.sizes, strict=True))})"

    # ---- validity -----------------------------------------------------------------------------------------------

    def num_valid(self) -> int:
        """How many valid choice vectors the space holds."""
        linked = {d for component in self._components for d in component.dims}
        free = math.prod(int(self._unary[d].sum()) for d in range(len(self.names)) if d not in linked)
        return free * math.prod(len(component.rows) for component in self._components)

    def _check_range(self, choices: Sequence[Any], partial: bool) -> list[int | None]:
        if len(choices) > len(self.names) or (not partial and len(choices) != len(self.names)):
            raise ValueError(f"expected {len(self.names)} choices ({', '.join(self.names)}), got {len(choices)}")
        out: list[int | None] = []
        for name, size, choice in zip(self.names, self.sizes, choices, strict=False):
            if choice is None and partial:
                out.append(None)
                continue
            if isinstance(choice, bool) or not isinstance(choice, int | np.integer) or not 0 <= choice < size:
                raise ValueError(f"choice {choice!r} for {name} is not an index in 0..{size - 1}")
            out.append(int(choice))
        return out + [None] * (len(self.names) - len(out))

    def validity_mask(self, partial: Sequence[int | None] | Mapping[str, int]) -> list[np.ndarray]:
        """One boolean mask per dimension: ``mask[d][c]`` is True when choosing ``c`` for dimension ``d`` keeps a
        valid completion of ``partial`` possible (the choices of the other decided dimensions are kept).

        ``partial`` is a sequence of indices in dimension order (``None`` or a shorter sequence: undecided) or a
        mapping from dimension name to index.
        """
        if isinstance(partial, Mapping):
            unknown = set(partial) - set(self.names)
            if unknown:
                raise ValueError(f"unknown dimensions {sorted(unknown)}; dimensions are {self.names}")
            partial = [partial.get(name) for name in self.names]
        assigned = self._check_range(list(partial), partial=True)
        masks = [mask.copy() for mask in self._unary]
        for component in self._components:
            rows = component.rows
            for j, d in enumerate(component.dims):
                keep = np.ones(len(rows), dtype=bool)
                for k, other in enumerate(component.dims):
                    if k != j and assigned[other] is not None:
                        keep &= rows[:, k] == assigned[other]
                mask = np.zeros(self.sizes[d], dtype=bool)
                mask[rows[keep, j]] = True
                masks[d] = mask
        return masks

    def explain(self, partial: Sequence[int | None]) -> str | None:
        """Why partial choices (in dimension order, ``None`` = undecided) cannot be completed; None when they can.

        Names the broken rule when all its dimensions are decided, else the dimension left without a valid choice.
        """
        assigned = self._check_range(list(partial), partial=True)
        values = {name: self.dimensions[name][c] for name, c in zip(self.names, assigned, strict=True) if c is not None}
        for rule in sorted(self._rules, key=lambda rule: len(rule.dims)):
            if all(assigned[d] is not None for d in rule.dims):
                reason = rule.check(values)
                if reason is not None:
                    return reason
        masks = self.validity_mask(assigned)
        for d, c in enumerate(assigned):
            if (c is None and not masks[d].any()) or (c is not None and not masks[d][c]):
                return f"no valid choice of {self.names[d]} remains given {_show(values)}"
        return None

    def is_valid(self, choices: Sequence[int]) -> Validity:
        """Whether a full choice vector is valid; when not, ``reason`` names the values and the rule broken."""
        try:
            indices = self._check_range(list(choices), partial=False)
        except ValueError as error:
            return Validity(False, str(error))
        values = {name: self.dimensions[name][c] for name, c in zip(self.names, indices, strict=True)}
        for rule in sorted(self._rules, key=lambda rule: len(rule.dims)):
            reason = rule.check(values)
            if reason is not None:
                return Validity(False, reason)
        return Validity(True)

    # ---- encode / decode ----------------------------------------------------------------------------------------

    def values(self, choices: Sequence[int]) -> dict[str, Value]:
        """The field values a choice vector selects (dimensions only, in order)."""
        indices = self._check_range(list(choices), partial=False)
        return {name: self.dimensions[name][c] for name, c in zip(self.names, indices, strict=True)}

    def decode(self, choices: Sequence[int]) -> Candidate:
        """The Candidate of a valid choice vector (fixed fields applied); ``ValueError`` with the reason otherwise."""
        validity = self.is_valid(choices)
        if not validity:
            raise ValueError(f"choices {tuple(choices)} are invalid: {validity.reason}")
        fields = {**self.fixed, **self.values(choices)}
        spec = {name: value for name, value in fields.items() if self._owner[name] == "spec"}
        kd = {name: value for name, value in fields.items() if self._owner[name] == "kd"}
        return Candidate(spec=StudentSpec(**spec), kd=KDConfig(**kd))

    def encode(self, candidate: Candidate) -> Choices:
        """The choice vector of a Candidate; ``ValueError`` naming the field when the candidate is not in the space."""
        indices = []
        for name in self.names:
            value = getattr(candidate.spec if self._owner[name] == "spec" else candidate.kd, name)
            found = [c for c, choice in enumerate(self.dimensions[name]) if _same(choice, value)]
            if not found:
                raise ValueError(f"candidate has {name}={value!r}, not one of the choices {self.dimensions[name]}")
            indices.append(found[0])
        decoded = self.decode(indices)
        if decoded != candidate:
            ours = {**decoded.spec.model_dump(), **decoded.kd.model_dump()}
            theirs = {**candidate.spec.model_dump(), **candidate.kd.model_dump()}
            diff = {name: theirs[name] for name in ours if not _same(ours[name], theirs[name])}
            raise ValueError(f"candidate differs from this space's fixed/default fields: {_show(diff)}")
        return tuple(indices)

    def to_onehot(self, choices: Sequence[int]) -> np.ndarray:
        """Concatenated one-hot blocks (one per dimension), float32 of length ``sum(sizes)``."""
        indices = self._check_range(list(choices), partial=False)
        vector = np.zeros(sum(self.sizes), dtype=np.float32)
        vector[[offset + c for offset, c in zip(self.offsets, indices, strict=True)]] = 1.0
        return vector

    def from_onehot(self, vector: Sequence[float] | np.ndarray) -> Choices:
        """Choice vector of a flat vector: the index of each block's largest entry (first one on ties)."""
        array = np.asarray(vector, dtype=np.float64)
        if array.shape != (sum(self.sizes),):
            raise ValueError(f"expected a flat vector of length {sum(self.sizes)}, got shape {array.shape}")
        return tuple(
            int(np.argmax(array[offset : offset + size])) for offset, size in zip(self.offsets, self.sizes, strict=True)
        )

    # ---- sampling -----------------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> Choices:
        """A uniformly chosen valid index per dimension, in order, each among the masked-valid choices."""
        chosen: list[int] = []
        for d in range(len(self.names)):
            chosen.append(int(rng.choice(np.flatnonzero(self.validity_mask(chosen)[d]))))
        return tuple(chosen)

    def enumerate_valid(self) -> Iterator[Choices]:
        """Every valid choice vector (use on small spaces: there are :meth:`num_valid` of them)."""
        linked = {d: component for component in self._components for d in component.dims}
        free = [d for d in range(len(self.names)) if d not in linked]
        parts: list[list[tuple[tuple[int, ...], tuple[int, ...]]]] = [
            [((d,), (int(c),)) for c in np.flatnonzero(self._unary[d])] for d in free
        ]
        for component in self._components:
            parts.append([(component.dims, tuple(int(c) for c in row)) for row in component.rows])
        for combination in itertools.product(*parts):
            vector = [0] * len(self.names)
            for dims, row in combination:
                for d, c in zip(dims, row, strict=True):
                    vector[d] = c
            yield tuple(vector)


def _fractions(total: int, fractions: Sequence[float], unit: int) -> tuple[int, ...]:
    sizes = {min(total, max(unit, math.floor(total * fraction / unit + 0.5) * unit)) for fraction in fractions}
    return tuple(sorted(sizes))
