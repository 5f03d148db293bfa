"""The search budget: one evaluation ledger per run, shared by every agent.

Budget accounting (the same for every agent): a run's budget is the number of *distinct* candidates (by
:meth:`~kdlib.candidate.Candidate.content_hash`) whose evaluation the run has completed. The first request for a
candidate costs one unit, whether the wrapped evaluator trains it or finds it in its evaluation store (a store hit
costs no training, but the run still spent one of its looks at the space). Asking again for a candidate already in
the run's ledger costs nothing and does not reach the wrapped evaluator. Asking for a new candidate once ``budget``
distinct ones are recorded raises :class:`BudgetExhausted`. Invalid choice vectors never reach an evaluator (the
environments penalise them), so they cost nothing either; an evaluation that raises is not recorded.

Batches: :meth:`BudgetedEvaluator.evaluate_many` charges a batch by the same rule and refuses (evaluating nothing) a
batch with more new candidates than the budget has left; :meth:`~BudgetedEvaluator.affordable` says how much of a
batch fits. Agents size their batches by :attr:`~BudgetedEvaluator.parallelism`, the number of candidates the
wrapped evaluator runs at once.

With ``history_path``, every new evaluation is appended to a JSON-lines ledger (fsynced) before ``evaluate``
returns, and an existing ledger is loaded on construction: a resumed run starts with the budget it already spent and
answers every recorded candidate from the ledger, so no completed evaluation is repeated and the total stays
``budget``. The budget may be raised on resume, never below what the ledger already holds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.evaluators import BatchEvaluator, Evaluator, parallelism_of
from envs.rewards import Reward, WeightedReward
from kdlib.candidate import Candidate, EvalResult

HISTORY_FILE = "evaluations.jsonl"
IDENTITY = ("task", "teacher_key", "fidelity")


class BudgetExhausted(RuntimeError):
    """A new distinct candidate was asked for after the run's budget was spent."""

    def __init__(self, candidate: Candidate, budget: int) -> None:
        self.candidate = candidate
        self.budget = budget
        super().__init__(
            f"the budget of {budget} distinct evaluations is spent; candidate {candidate.content_hash()} "
            f"({candidate.summary()}) was not evaluated"
        )


@dataclass(frozen=True)
class Evaluation:
    """One entry of the ledger: the ``index``-th distinct candidate of the run, its result and its reward."""

    index: int
    candidate: Candidate
    result: EvalResult
    reward: float


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget={budget!r} must be an int of at least 1 (distinct evaluations)")
    return budget


class BudgetedEvaluator:
    """An :class:`~envs.evaluators.Evaluator` that spends at most ``budget`` distinct evaluations of ``evaluator``.

    Keeps the run's ordered history (:attr:`history`, :meth:`results` for hypervolume traces) and its best entry by
    ``reward`` (default :class:`~envs.rewards.WeightedReward`; ties keep the earlier entry). ``on_result`` is called
    once per new distinct evaluation (not for repeats, nor for entries loaded from ``history_path``). Not thread-safe.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        budget: int,
        on_result: Callable[[Evaluation], None] | None = None,
        *,
        reward: Reward | None = None,
        history_path: str | Path | None = None,
    ) -> None:
        if not isinstance(evaluator, Evaluator):
            raise TypeError(f"evaluator={evaluator!r} has no evaluate(candidate) / task / teacher_key / fidelity")
        self.evaluator = evaluator
        self.budget = _check_budget(budget)
        self.on_result = on_result
        self.reward = reward if reward is not None else WeightedReward()
        self.history_path = Path(history_path) if history_path is not None else None
        self.repeats = 0
        self._history: list[Evaluation] = []
        self._by_hash: dict[str, Evaluation] = {}
        self._best: Evaluation | None = None
        if self.history_path is not None:
            self._load(self.history_path)
        if len(self._history) > self.budget:
            raise ValueError(
                f"budget={budget} is below the {len(self._history)} evaluations already recorded in "
                f"{self.history_path}; resume with a budget of at least {len(self._history)}"
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

    def evaluate(self, candidate: Candidate) -> EvalResult:
        """The recorded result of ``candidate`` (free), else a new evaluation (one unit of budget)."""
        return self.evaluate_many([candidate])[0]

    @property
    def parallelism(self) -> int:
        """Candidates the wrapped evaluator runs at the same time (its workers; 1 for a sequential evaluator)."""
        return parallelism_of(self.evaluator)

    def evaluate_many(self, candidates: Sequence[Candidate]) -> list[EvalResult]:
        """Results of ``candidates`` in input order; the new distinct ones are evaluated together, in parallel when
        the wrapped evaluator is a :class:`~envs.evaluators.BatchEvaluator`.

        Each new distinct candidate costs one unit, exactly as with :meth:`evaluate`; recorded ones and repeats in
        the batch are free. When the batch holds more new candidates than :attr:`remaining`, nothing is evaluated
        and :class:`BudgetExhausted` names the first one past the budget. New entries join the ledger in input order:
        from a batch evaluator once the whole batch is back (a crash mid-batch loses no training: its evaluation
        store keeps the finished ones, and the resumed run asks for the same batch), from any other evaluator one by
        one as each finishes.
        """
        affordable = self.affordable(candidates)
        if affordable < len(candidates):
            raise BudgetExhausted(candidates[affordable], self.budget)
        new = {candidate.content_hash(): candidate for candidate in candidates if candidate not in self}
        self.repeats += len(candidates) - len(new)
        if new and isinstance(self.evaluator, BatchEvaluator):
            self._add(list(zip(new.values(), self.evaluator.evaluate_many(list(new.values())), strict=True)))
        else:
            for candidate in new.values():
                self._add([(candidate, self.evaluator.evaluate(candidate))])
        return [self._by_hash[candidate.content_hash()].result for candidate in candidates]

    def _add(self, evaluated: list[tuple[Candidate, EvalResult]]) -> None:
        """Score every new result, then append each to the ledger, record it and report it."""
        start = len(self._history)
        entries = [
            Evaluation(start + offset, candidate, result, self._score(result))
            for offset, (candidate, result) in enumerate(evaluated)
        ]
        for entry in entries:
            if self.history_path is not None:
                self._append(self.history_path, entry)
            self._record(entry)
            if self.on_result is not None:
                self.on_result(entry)

    def affordable(self, candidates: Sequence[Candidate]) -> int:
        """The length of the longest prefix of ``candidates`` that :meth:`evaluate_many` can pay for: its new
        distinct candidates number at most :attr:`remaining`."""
        new: set[str] = set()
        for position, candidate in enumerate(candidates):
            key = candidate.content_hash()
            if key not in self._by_hash and key not in new:
                if len(new) == self.remaining:
                    return position
                new.add(key)
        return len(candidates)

    # ---- the ledger ---------------------------------------------------------------------------------------------

    @property
    def spent(self) -> int:
        """Distinct evaluations recorded so far (this run and the runs it resumes)."""
        return len(self._history)

    @property
    def remaining(self) -> int:
        """Distinct evaluations left."""
        return self.budget - len(self._history)

    @property
    def history(self) -> tuple[Evaluation, ...]:
        """Every distinct evaluation, in the order first evaluated."""
        return tuple(self._history)

    @property
    def best(self) -> Evaluation | None:
        """The entry with the highest reward (the earliest on ties); None before the first evaluation."""
        return self._best

    def results(self) -> list[EvalResult]:
        """The results in evaluation order (e.g. for :func:`search.pareto.hypervolume_trace`)."""
        return [entry.result for entry in self._history]

    def lookup(self, candidate: Candidate) -> Evaluation | None:
        """The ledger entry of ``candidate``, or None when it was never evaluated in this run."""
        return self._by_hash.get(candidate.content_hash())

    def __contains__(self, candidate: object) -> bool:
        return isinstance(candidate, Candidate) and candidate.content_hash() in self._by_hash

    def __len__(self) -> int:
        return len(self._history)

    def _score(self, result: EvalResult) -> float:
        value = float(self.reward(result))
        if not math.isfinite(value):
            candidate = result.candidate.content_hash()
            raise ValueError(f"reward {self.reward.name!r} gave {value} for candidate {candidate}")
        return value

    def _record(self, entry: Evaluation) -> None:
        self._history.append(entry)
        self._by_hash[entry.candidate.content_hash()] = entry
        if self._best is None or entry.reward > self._best.reward:
            self._best = entry

    def _identity(self) -> dict[str, str]:
        return {name: getattr(self.evaluator, name) for name in IDENTITY}

    def _append(self, path: Path, entry: Evaluation) -> None:
        lines = []
        if not path.exists() or path.stat().st_size == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            lines.append(json.dumps(self._identity(), sort_keys=True))
        record = {"candidate": entry.candidate.model_dump(mode="json"), "result": entry.result.model_dump(mode="json")}
        lines.append(json.dumps(record, sort_keys=True))
        with path.open("a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())

    def _load(self, path: Path) -> None:
        """Read the ledger; a torn last line (a crash mid-append: no final newline) is cut off."""
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            complete = text[: text.rfind("\n") + 1]
            with path.open("r+", encoding="utf-8") as out:
                out.truncate(len(complete.encode("utf-8")))
            text = complete
        lines = text.splitlines()
        if not lines:
            return
        try:
            identity = json.loads(lines[0])
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line 1 is not the ledger's JSON header: {error}") from None
        if identity != self._identity():
            raise ValueError(
                f"{path} records evaluations of {identity}, but the evaluator is {self._identity()}; "
                "use a new run directory for another task, teacher or fidelity"
            )
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                candidate = Candidate.model_validate(record["candidate"])
                result = EvalResult.model_validate(record["result"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}: line {number} is not a ledger entry: {error}") from None
            if candidate.content_hash() in self._by_hash:
                raise ValueError(f"{path}: line {number} repeats candidate {candidate.content_hash()}")
            self._record(Evaluation(len(self._history), candidate, result, self._score(result)))
