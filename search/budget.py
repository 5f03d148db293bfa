"""The search budget: one evaluation ledger per run, shared by every agent.

Budget accounting (the same for every agent). A request is a candidate at a fidelity (None: the evaluator's own
level); the ledger holds one entry per distinct request, keyed by the candidate's
:meth:`~distilsearch.kdlib.students.candidate.Candidate.content_hash` and the fidelity's name, so one candidate at two
rungs is two entries. A run's budget is counted in one of two units:

* ``evaluations``: each new request costs one unit, whether the wrapped evaluator trains it or finds it in its
  evaluation store (a store hit costs no training, but the run still spent one of its looks at the space);
* ``steps``: each new request costs the training steps it runs (:meth:`BudgetedEvaluator.steps`, the evaluator's
  ``cost_steps``): a machine-independent currency that prices a cheap rung below a full training, so agents with
  different fidelities compare under the same budget. Wall seconds are reported beside (each result's
  ``train_seconds``).

Asking again for a request already in the ledger costs nothing and does not reach the wrapped evaluator. A new
request that costs more than what is left raises :class:`BudgetExhausted`. Invalid choice vectors never reach an
evaluator (the environments penalise them), so they cost nothing either; an evaluation that raises is not recorded.

Selection discipline: agents see :meth:`~distilsearch.kdlib.students.candidate.EvalResult.blinded` results only
(returned results,
:meth:`~BudgetedEvaluator.lookup`, :attr:`~BudgetedEvaluator.history`, :attr:`~BudgetedEvaluator.best`); rewards
read validation and OOD-dev data. Full results, test included, go to ``on_result`` and :meth:`~BudgetedEvaluator.
results` for reporting.

Batches: :meth:`BudgetedEvaluator.evaluate_many` charges a batch by the same rule and refuses (evaluating nothing) a
batch that costs more than the budget has left; :meth:`~BudgetedEvaluator.affordable` says how much of a batch fits.
Agents size their batches by :attr:`~BudgetedEvaluator.parallelism`, the number of candidates the wrapped evaluator
runs at once.

With ``history_path``, every new evaluation is appended to a JSON-lines ledger (fsynced) before ``evaluate``
returns, and an existing ledger is loaded on construction: a resumed run starts with the budget it already spent and
answers every recorded request from the ledger, so no completed evaluation is repeated and the total stays within
``budget``. The budget may be raised on resume, never below what the ledger already holds.

Failed evaluations (``status == "failed"``: a NaN loss, an OOM, a timeout, a worker that kept dying) are ledger
entries like any other: a resumed run answers them from the ledger. ``retry_failed=True`` withdraws them when the
ledger is loaded: a ``{"withdrawn": ...}`` line is appended for each, their cost is given back, and a request for one
of them is evaluated (and charged) again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from distilsearch.envs.evaluators import BatchEvaluator, Evaluator, MultiFidelityEvaluator, parallelism_of
from distilsearch.envs.fidelity import Fidelity
from distilsearch.envs.rewards import Reward, WeightedReward
from distilsearch.kdlib.core.atomic import read_appended_lines
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.search import run_layout

HISTORY_FILE = run_layout.LEDGER
IDENTITY = ("task", "teacher_key", "fidelity")
Unit = Literal["evaluations", "steps"]
UNITS: tuple[Unit, ...] = ("evaluations", "steps")
FidelityArg = str | Fidelity | None


class BudgetExhausted(RuntimeError):
    """A new request costs more than what is left of the run's budget."""

    def __init__(self, candidate: Candidate, budget: int, unit: Unit = "evaluations", fidelity: str = "") -> None:
        self.candidate = candidate
        self.budget = budget
        at = f" at fidelity {fidelity}" if fidelity else ""
        super().__init__(
            f"the budget of {budget} {unit} cannot pay for candidate {candidate.content_hash()} "
            f"({candidate.summary()}){at}; it was not evaluated"
        )


@dataclass(frozen=True)
class LedgerEntry:
    """One entry of the ledger: the ``index``-th distinct request of the run (a candidate at ``fidelity``), its
    result, its reward and its ``cost`` in budget units."""

    index: int
    candidate: Candidate
    result: EvalResult
    reward: float
    fidelity: str = ""
    cost: int = 1


def _check_budget(budget: Any, unit: Any) -> int:
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} must be one of {', '.join(UNITS)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget={budget!r} must be an int of at least 1 ({unit})")
    return budget


class BudgetedEvaluator:
    """An :class:`~distilsearch.envs.evaluators.Evaluator` that spends at most ``budget`` ``unit`` s of ``evaluator``.

    Keeps the run's ordered history (:attr:`history`, :meth:`results` for hypervolume traces) and its best entry by
    ``reward`` (default :class:`~distilsearch.envs.rewards.WeightedReward`; ties keep the earlier entry). ``on_result``
    is called once per new distinct request with the full result (not for repeats, nor for entries loaded from
    ``history_path``). Not thread-safe.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        budget: int,
        on_result: Callable[[LedgerEntry], None] | None = None,
        *,
        reward: Reward | None = None,
        history_path: str | Path | None = None,
        unit: Unit = "evaluations",
        retry_failed: bool = False,
    ) -> None:
        if not isinstance(evaluator, Evaluator):
            raise TypeError(f"evaluator={evaluator!r} has no evaluate(candidate) / task / teacher_key / fidelity")
        self.evaluator = evaluator
        self.budget = _check_budget(budget, unit)
        self.unit: Unit = unit
        self.on_result = on_result
        self.reward = reward if reward is not None else WeightedReward()
        self.history_path = Path(history_path) if history_path is not None else None
        self.repeats = 0
        self._history: list[LedgerEntry] = []
        self._by_key: dict[str, LedgerEntry] = {}
        self._best: LedgerEntry | None = None
        self._spent = 0
        if self.history_path is not None:
            self._load(self.history_path)
            if retry_failed:
                self._withdraw_failed(self.history_path)
        if self._spent > self.budget:
            raise ValueError(
                f"budget={budget} is below the {self._spent} {unit} already recorded in "
                f"{self.history_path}; resume with a budget of at least {self._spent}"
            )

    # ---- the Evaluator protocol ---------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        """The wrapped evaluator's task."""
        return self.evaluator.task

    @property
    def teacher_key(self) -> str:
        """The wrapped evaluator's teacher key."""
        return self.evaluator.teacher_key

    @property
    def fidelity(self) -> str:
        """The wrapped evaluator's fidelity."""
        return self.evaluator.fidelity

    def evaluate(self, candidate: Candidate, fidelity: FidelityArg = None) -> EvalResult:
        """The recorded result of ``candidate`` at ``fidelity`` (free), else a new evaluation; blinded."""
        return self.evaluate_many([candidate], fidelity)[0]

    @property
    def parallelism(self) -> int:
        """Candidates the wrapped evaluator runs at the same time (its workers; 1 for a sequential evaluator)."""
        return parallelism_of(self.evaluator)

    def fidelity_name(self, fidelity: FidelityArg = None) -> str:
        """The name of ``fidelity`` (None: the wrapped evaluator's own level)."""
        if fidelity is None:
            return self.evaluator.fidelity
        return fidelity if isinstance(fidelity, str) else fidelity.name

    def steps(self, candidate: Candidate, fidelity: FidelityArg = None) -> int:
        """The training steps an evaluation of ``candidate`` at ``fidelity`` runs (the evaluator's ``cost_steps``)."""
        if not isinstance(self.evaluator, MultiFidelityEvaluator):
            raise ValueError(
                f"the {type(self.evaluator).__name__} cannot price evaluations in training steps (no cost_steps)"
            )
        return int(self.evaluator.cost_steps(candidate, fidelity))

    def cost(self, candidate: Candidate, fidelity: FidelityArg = None) -> int:
        """What a request costs now in budget units: 0 when it is in the ledger, else 1 or its training steps."""
        if self._key(candidate, fidelity) in self._by_key:
            return 0
        return 1 if self.unit == "evaluations" else self.steps(candidate, fidelity)

    def evaluate_many(self, candidates: Sequence[Candidate], fidelity: FidelityArg = None) -> list[EvalResult]:
        """Blinded results of ``candidates`` at ``fidelity`` in input order; the new distinct requests are evaluated
        together, in parallel when the wrapped evaluator is a :class:`~distilsearch.envs.evaluators.BatchEvaluator`.

        Each new distinct request costs :meth:`cost`, exactly as with :meth:`evaluate`; recorded ones and repeats in
        the batch are free. When the batch costs more than :attr:`remaining`, nothing is evaluated and
        :class:`BudgetExhausted` names the first request past the budget. New entries join the ledger in input order:
        from a batch evaluator once the whole batch is back (a crash mid-batch loses no training: its evaluation
        store keeps the finished ones, and the resumed run asks for the same batch), from any other evaluator one by
        one as each finishes.
        """
        return self.evaluate_requests([(candidate, fidelity) for candidate in candidates])

    def evaluate_requests(self, requests: Sequence[tuple[Candidate, FidelityArg]]) -> list[EvalResult]:
        """:meth:`evaluate_many` for requests at mixed fidelities (e.g. jobs on several rungs): one batch, so a pool
        of workers runs them all at once when the wrapped evaluator takes mixed requests
        (``evaluate_requests``, as :class:`~distilsearch.envs.ray_evaluator.RayEvaluator` does); otherwise one batch per
        fidelity, in order of first appearance."""
        affordable = self.affordable_requests(requests)
        if affordable < len(requests):
            candidate, fidelity = requests[affordable]
            raise BudgetExhausted(candidate, self.budget, self.unit, self.fidelity_name(fidelity))
        new: dict[str, tuple[Candidate, FidelityArg, int]] = {}
        for candidate, fidelity in requests:
            key = self._key(candidate, fidelity)
            if key not in self._by_key and key not in new:
                new[key] = (candidate, fidelity, self.cost(candidate, fidelity))
        self.repeats += len(requests) - len(new)
        if new and isinstance(self.evaluator, BatchEvaluator):
            results = self._call_batch([(candidate, fidelity) for candidate, fidelity, _ in new.values()])
            self._add(
                [
                    (candidate, result, self.fidelity_name(fidelity), price)
                    for (candidate, fidelity, price), result in zip(new.values(), results, strict=True)
                ]
            )
        else:
            for candidate, fidelity, price in new.values():
                self._add([(candidate, self._call(candidate, fidelity), self.fidelity_name(fidelity), price)])
        return [self._by_key[self._key(candidate, fidelity)].result.blinded() for candidate, fidelity in requests]

    def _call(self, candidate: Candidate, fidelity: FidelityArg) -> EvalResult:
        if fidelity is None:
            return self.evaluator.evaluate(candidate)
        return self._multi_fidelity().evaluate(candidate, fidelity)

    def _call_batch(self, requests: list[tuple[Candidate, FidelityArg]]) -> list[EvalResult]:
        """Results of a batch evaluator, in request order: one mixed call when it takes one, else one per fidelity."""
        names = {self.fidelity_name(fidelity) for _, fidelity in requests}
        if len(names) > 1 and hasattr(self.evaluator, "evaluate_requests"):
            self._multi_fidelity()
            return self.evaluator.evaluate_requests(requests)
        results: dict[int, EvalResult] = {}
        groups: dict[str, list[int]] = {}
        for position, (_, fidelity) in enumerate(requests):
            groups.setdefault(self.fidelity_name(fidelity), []).append(position)
        for positions in groups.values():
            fidelity = requests[positions[0]][1]
            candidates = [requests[position][0] for position in positions]
            if fidelity is None:
                batch = self.evaluator.evaluate_many(candidates)
            else:
                self._multi_fidelity()
                batch = self.evaluator.evaluate_many(candidates, fidelity)
            results.update(zip(positions, batch, strict=True))
        return [results[position] for position in range(len(requests))]

    def _multi_fidelity(self) -> MultiFidelityEvaluator:
        if not isinstance(self.evaluator, MultiFidelityEvaluator):
            raise ValueError(f"the {type(self.evaluator).__name__} evaluates at its own fidelity only")
        return self.evaluator

    def _add(self, evaluated: list[tuple[Candidate, EvalResult, str, int]]) -> None:
        """Score every new result, then append each to the ledger, record it and report it."""
        start = len(self._history)
        entries = [
            LedgerEntry(start + offset, candidate, result, self._score(result), fidelity, cost)
            for offset, (candidate, result, fidelity, cost) in enumerate(evaluated)
        ]
        for entry in entries:
            if self.history_path is not None:
                self._append(self.history_path, entry)
            self._record(entry)
            if self.on_result is not None:
                self.on_result(entry)

    def affordable(self, candidates: Sequence[Candidate], fidelity: FidelityArg = None) -> int:
        """The length of the longest prefix of ``candidates`` that :meth:`evaluate_many` can pay for at
        ``fidelity``: its new distinct requests cost at most :attr:`remaining`."""
        return self.affordable_requests([(candidate, fidelity) for candidate in candidates])

    def affordable_requests(self, requests: Sequence[tuple[Candidate, FidelityArg]]) -> int:
        """The length of the longest prefix of ``requests`` that :meth:`evaluate_requests` can pay for."""
        seen: set[str] = set()
        left = self.remaining
        for position, (candidate, fidelity) in enumerate(requests):
            key = self._key(candidate, fidelity)
            if key not in self._by_key and key not in seen:
                price = self.cost(candidate, fidelity)
                if price > left:
                    return position
                left -= price
                seen.add(key)
        return len(requests)

    # ---- the ledger ---------------------------------------------------------------------------------------------

    @property
    def spent(self) -> int:
        """Budget units spent so far (this run and the runs it resumes)."""
        return self._spent

    @property
    def remaining(self) -> int:
        """Budget units left."""
        return self.budget - self._spent

    @property
    def history(self) -> tuple[LedgerEntry, ...]:
        """Every distinct request, in the order first evaluated (results blinded)."""
        return tuple(_blinded(entry) for entry in self._history)

    @property
    def best(self) -> LedgerEntry | None:
        """The entry with the highest reward (the earliest on ties), result blinded; None before the first."""
        return None if self._best is None else _blinded(self._best)

    def results(self) -> list[EvalResult]:
        """The full results (test included: for reports such as :func:`distilsearch.search.pareto.hypervolume_trace`) in
        evaluation order."""
        return [entry.result for entry in self._history]

    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every ledger entry with its full result (test included): for reports and for repairing the store, never
        for agents."""
        return tuple(self._history)

    def lookup(self, candidate: Candidate, fidelity: FidelityArg = None) -> LedgerEntry | None:
        """The ledger entry of ``candidate`` at ``fidelity`` (result blinded), or None when never evaluated."""
        entry = self._by_key.get(self._key(candidate, fidelity))
        return None if entry is None else _blinded(entry)

    def _key(self, candidate: Candidate, fidelity: FidelityArg) -> str:
        return f"{candidate.content_hash()}@{self.fidelity_name(fidelity)}"

    def __contains__(self, candidate: object) -> bool:
        """Whether ``candidate`` was evaluated at the evaluator's own level."""
        return isinstance(candidate, Candidate) and self._key(candidate, None) in self._by_key

    def __len__(self) -> int:
        return len(self._history)

    def _score(self, result: EvalResult) -> float:
        value = float(self.reward(result))
        if not math.isfinite(value):
            candidate = result.candidate.content_hash()
            raise ValueError(f"reward {self.reward.name!r} gave {value} for candidate {candidate}")
        return value

    def _record(self, entry: LedgerEntry) -> None:
        self._history.append(entry)
        self._by_key[self._key(entry.candidate, entry.fidelity)] = entry
        self._spent += entry.cost
        if self._best is None or entry.reward > self._best.reward:
            self._best = entry

    def _withdraw_failed(self, path: Path) -> None:
        """Withdraw every failed entry: append a withdrawal line for each, then forget them and their cost."""
        failed = [entry for entry in self._history if entry.result.status == "failed"]
        if not failed:
            return
        lines = [json.dumps({"withdrawn": _withdrawal(entry.candidate, entry.fidelity)}) + "\n" for entry in failed]
        with path.open("a", encoding="utf-8") as out:
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())
        kept = [entry for entry in self._history if entry.result.status != "failed"]
        self._history, self._by_key, self._best, self._spent = [], {}, None, 0
        for index, entry in enumerate(kept):
            self._record(replace(entry, index=index))

    def _identity(self) -> dict[str, str]:
        identity = {name: getattr(self.evaluator, name) for name in IDENTITY}
        return identity | ({"unit": self.unit} if self.unit != "evaluations" else {})

    def _append(self, path: Path, entry: LedgerEntry) -> None:
        lines = []
        if not path.exists() or path.stat().st_size == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            lines.append(json.dumps(self._identity(), sort_keys=True))
        record = {
            "candidate": entry.candidate.model_dump(mode="json"),
            "result": entry.result.model_dump(mode="json"),
            "fidelity": entry.fidelity,
            "cost": entry.cost,
        }
        lines.append(json.dumps(record, sort_keys=True))
        with path.open("a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())

    def _load(self, path: Path) -> None:
        """Read the ledger back (see :func:`read_ledger`); its header must name this evaluator."""
        identity, records = read_ledger(path, default_fidelity=self.evaluator.fidelity)
        if identity is not None and identity != self._identity():
            raise run_layout.ResumeMismatch(path.parent, run_layout.setting_differences(identity, self._identity()))
        for number, (candidate, result, fidelity, cost) in enumerate(records, start=2):
            if self._key(candidate, fidelity) in self._by_key:
                raise ValueError(f"{path}: line {number} repeats candidate {candidate.content_hash()} at {fidelity}")
            self._record(LedgerEntry(len(self._history), candidate, result, self._score(result), fidelity, cost))


LedgerRecord = tuple[Candidate, EvalResult, str, int]


def read_ledger(path: Path, default_fidelity: str | None = None) -> tuple[dict[str, str] | None, list[LedgerRecord]]:
    """The ledger's header (the evaluator's identity; None for an empty file) and its records ``(candidate, result,
    fidelity, cost)`` in order, less the withdrawn ones; a torn last line (a crash mid-append: no final newline) is
    cut off. A record without a fidelity takes ``default_fidelity`` (else the header's). ValueError naming the file
    and line for anything else that does not parse, and for a withdrawal of a request not recorded before it."""
    lines = read_appended_lines(path)
    if not lines:
        return None, []
    try:
        identity = json.loads(lines[0])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line 1 is not the ledger's JSON header: {error}") from None
    if not isinstance(identity, dict):
        raise ValueError(f"{path}: line 1 is not the ledger's JSON header (an object naming the evaluator)")
    fallback = default_fidelity if default_fidelity is not None else str(identity.get("fidelity", ""))
    records: list[LedgerRecord] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
            if "withdrawn" in record:
                withdrawn = record["withdrawn"]
                kept = [r for r in records if _withdrawal(r[0], r[2]) != withdrawn]
                if len(kept) == len(records):
                    raise ValueError(f"it withdraws {withdrawn}, which no earlier line records")
                records = kept
                continue
            candidate = Candidate.model_validate(record["candidate"])
            result = EvalResult.model_validate(record["result"])
            fidelity = str(record.get("fidelity", fallback))
            cost = record.get("cost", 1)
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
                raise ValueError(f"cost={cost!r} is not a non-negative int")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: line {number} is not a ledger entry: {error}") from None
        records.append((candidate, result, fidelity, cost))
    return identity, records


def _withdrawal(candidate: Candidate, fidelity: str) -> dict[str, str]:
    return {"candidate_hash": candidate.content_hash(), "fidelity": fidelity}


def _blinded(entry: LedgerEntry) -> LedgerEntry:
    return replace(entry, result=entry.result.blinded())
