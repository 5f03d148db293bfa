"""A search run as a Python object: the library API behind ``distilsearch search``, ``pareto`` and ``export``.

``run_search(config)`` starts a search into its run folder, or resumes it when the folder holds one started with
compatible settings, and returns the :class:`Run`; ``Run.open(path)`` reads a run folder back. A run answers with
its evaluations, its Pareto frontier and hypervolume, exports a frontier student, and :meth:`Run.validate` re-distils
frontier members to check that their stored accuracy is reproduced (in the manner of CompilerGym's ``validate``).
The folder's layout is :mod:`distilsearch.search.run_layout`; every failure is a :class:`RunError` naming the
folder and what to do.

    from distilsearch.search.run import run_search
    from distilsearch.search.run_config import SearchConfig

    run = run_search(SearchConfig(agent="random", budget=3, fidelity="low", out="results/runs/demo"))
    print(run.frontier_table())
    report = run.validate(ranks=[1])
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilsearch.search import run_layout
from distilsearch.search.run_config import SearchConfig
from distilsearch.search.run_layout import ResumeMismatch, RunLayout

if TYPE_CHECKING:
    import pandas as pd

    from distilsearch.envs.evaluators import Evaluator
    from distilsearch.envs.rewards import Reward
    from distilsearch.envs.space import SearchSpace
    from distilsearch.envs.store import EvaluationStore
    from distilsearch.kdlib.student_evaluator import StudentEvaluator
    from distilsearch.kdlib.students.candidate import EvalResult
    from distilsearch.search.agents.base import Agent
    from distilsearch.search.budget import BudgetedEvaluator, LedgerEntry

FRONTIER_OBJECTIVES = ("accuracy", "latency")
Notify = Callable[[str], None]


class RunError(ValueError):
    """A run cannot start, resume, be read or exported; the message names the folder and what to do."""


@dataclass(frozen=True)
class Validation:
    """One frontier member re-distilled: its stored and reproduced validation accuracy and whether they agree."""

    rank: int
    candidate: str
    stored: float | None
    reproduced: float | None
    tolerance: float
    error: str | None = None

    @property
    def difference(self) -> float | None:
        if self.stored is None or self.reproduced is None:
            return None
        return abs(self.reproduced - self.stored)

    @property
    def passed(self) -> bool:
        return self.error is None and self.difference is not None and self.difference <= self.tolerance


@dataclass
class Session:
    """What one ``run_search`` call did: budget spent (in the run's unit), evaluations, training time, notes."""

    spent: int = 0
    budget: int = 0
    evaluations: int = 0
    train_seconds: float = 0.0
    restored: int = 0
    notes: list[str] = field(default_factory=list)


class Run:
    """A run folder and its settings; evaluations and frontiers are read from its store on demand."""

    def __init__(self, path: Path, config: SearchConfig, session: Session | None = None) -> None:
        self.path = Path(path)
        self.layout = RunLayout(self.path)
        self.config = config
        self.session = session

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, task={self.config.task!r}, agent={self.config.agent!r})"

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The run in folder ``path``; RunError when it is not a run folder or its settings are unreadable."""
        path = Path(path)
        layout = RunLayout(path)
        if not path.is_dir():
            raise RunError(f"run folder {path} does not exist or is not a folder")
        if not layout.config.is_file():
            raise RunError(f"{path} is not a search run folder (no {run_layout.CONFIG})")
        try:
            return cls(path, SearchConfig.load(layout.config))
        except (ValueError, OSError) as error:
            raise RunError(f"{error}; restore the run's {run_layout.CONFIG} or use another run folder") from None

    # ---- what the run holds ---------------------------------------------------------------------------------------

    def store(self) -> EvaluationStore:
        """The run's evaluation store, opened for reading (RunError when missing or not a store); close it when done."""
        from distilsearch.envs.store import EvaluationStore, StoreError

        if not self.layout.store.is_file():
            raise RunError(f"run folder {self.path} has no evaluation store ({run_layout.STORE})")
        try:
            return EvaluationStore(self.layout.store, create=False)
        except StoreError as error:
            raise RunError(str(error)) from None

    def results(self) -> list[EvalResult]:
        """One result per candidate of the run's task (its most-trained one), in order of first evaluation."""
        from distilsearch.envs.store import StoreError
        from distilsearch.search.pareto import most_trained

        store = self.store()
        try:
            rows = store.rows(task=self.config.task)
        except StoreError as error:
            raise RunError(str(error)) from None
        finally:
            store.close()
        return most_trained(row.result for row in rows)

    def ledger(self) -> list[LedgerEntry]:
        """The run's distinct requests in the order they were made (the ledger ``evaluations.jsonl``), each with
        the reward the run's reward function gives it."""
        from distilsearch.envs.rewards import make_reward
        from distilsearch.search.budget import LedgerEntry, read_ledger

        if not self.layout.ledger.is_file():
            return []
        try:
            records = read_ledger(self.layout.ledger)[1]
            reward = make_reward(self.config.reward, **self.config.reward_options)
        except ValueError as error:
            raise RunError(str(error)) from None
        return [
            LedgerEntry(index, candidate, result, reward(result), fidelity, cost)
            for index, (candidate, result, fidelity, cost) in enumerate(records)
        ]

    def agent_record(self) -> dict[str, Any]:
        """What the agent recorded when the run started (``agent.json``: agent, options, seed, space hash, reward,
        evaluator identity) plus ``checkpoint``: the path of its resume state, or None before it wrote one."""
        path = self.path / run_layout.AGENT_MANIFEST
        if not path.is_file():
            raise RunError(f"run folder {self.path} has no {run_layout.AGENT_MANIFEST} (the agent never started)")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunError(f"{path} is not valid JSON: {error}") from None
        state = run_layout.AGENT_STATES.get(str(record.get("agent")))
        checkpoint = self.path / state if state is not None and (self.path / state).is_file() else None
        return record | {"checkpoint": checkpoint}

    def frontier(self, objectives: Sequence[str] = FRONTIER_OBJECTIVES) -> list[EvalResult]:
        """The non-dominated results under ``objectives`` (validation-side by default), best first."""
        from distilsearch.search.pareto import frontier

        return frontier(self.results(), objectives)

    def frontier_table(self, objectives: Sequence[str] = FRONTIER_OBJECTIVES) -> pd.DataFrame:
        """The frontier as a table: one row per member, its metrics and candidate (see :func:`labelled_frontier`)."""
        return labelled_frontier(self.results(), objectives)

    def hypervolume(self, objectives: Sequence[str] = FRONTIER_OBJECTIVES, reference: dict | None = None) -> float:
        """The hypervolume of the run's results under ``objectives`` (default reference: see ``search.pareto``)."""
        from distilsearch.search.pareto import default_reference, hypervolume, objective_matrix, reference_point

        results = self.results()
        bound = default_reference(results, objectives, reference or {})
        return hypervolume(objective_matrix(results, objectives), reference_point(objectives, bound))

    # ---- re-distilling frontier members ---------------------------------------------------------------------------

    def student_evaluator(
        self, *, device: str = "auto", progress: bool = False, teacher_dir: Path | None = None
    ) -> StudentEvaluator:
        """A live evaluator for the run's task and teacher (the user's folder, or fine-tuned or taken from the cache).

        ``teacher_dir`` replaces the run's teacher folder (one that was moved); it must hold the same teacher.
        """
        from distilsearch.kdlib.data.assets import AssetError
        from distilsearch.kdlib.student_evaluator import StudentEvaluator
        from distilsearch.kdlib.training.teacher_folder import load_task_for_teacher, teacher_for

        folder = teacher_dir or self.config.teacher
        try:
            task = load_task_for_teacher(self.config.task_source(), folder, progress=progress)
            teacher = teacher_for(task, folder=folder, base_dir=self.config.base, device=device, progress=progress)
        except (AssetError, ValueError, OSError) as error:
            raise RunError(str(error)) from None
        if teacher_dir is not None:
            self._check_teacher_key(teacher.key, teacher_dir)
        return StudentEvaluator(teacher, task, device=device, progress=progress)

    def _check_teacher_key(self, key: str, teacher_dir: Path) -> None:
        """Refuse a teacher folder other than the one the run's results were distilled from."""
        keys = {result.provenance.get("teacher_key") for result in self.results()} - {None}
        if keys and key not in keys:
            raise RunError(
                f"teacher folder {teacher_dir} (key {key[:16]}) is not the teacher this run distilled from "
                f"(key {sorted(keys)[0][:16]}); give the run's teacher folder, moved but unchanged"
            )

    def member(self, rank: int, objectives: Sequence[str] = FRONTIER_OBJECTIVES) -> EvalResult:
        """The rank-``rank`` frontier member (1 = best on the first objective)."""
        members = self.frontier(objectives)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise RunError(f"rank {rank!r} must be an int of at least 1")
        if rank > len(members):
            raise RunError(f"rank {rank} is beyond the frontier of {self.path}, which has {len(members)} students")
        return members[rank - 1]

    def export(
        self,
        rank: int = 1,
        out: Path | None = None,
        *,
        force: bool = False,
        evaluator: StudentEvaluator | None = None,
        progress: bool = False,
        teacher_dir: Path | None = None,
    ) -> EvalResult:
        """Re-distil the rank-``rank`` frontier student (deterministically) and save it to ``out`` (default
        ``RUN/students/rank-K``); RunError when the destination is unsafe or the training fails. ``teacher_dir``
        replaces a teacher folder that moved since the run (it must hold the same teacher)."""
        from distilsearch.search.destinations import DestinationError, check_folder_destination

        destination = out or self.layout.student(rank)
        try:
            check_folder_destination(destination, force=force, protected=[self.path])
        except DestinationError as error:
            raise RunError(str(error)) from None
        chosen = self.member(rank)
        evaluator = evaluator or self.student_evaluator(progress=progress, teacher_dir=teacher_dir)
        result = evaluator.evaluate(chosen.candidate, out_dir=destination, stop_after=_stop_after(chosen))
        if result.status != "ok":
            raise RunError(f"re-distilling rank {rank} ({chosen.candidate.summary()}) {result.status}: {result.error}")
        return result

    def validate(
        self,
        ranks: Sequence[int] | None = None,
        *,
        tolerance: float = 0.01,
        objectives: Sequence[str] = FRONTIER_OBJECTIVES,
        evaluator: StudentEvaluator | None = None,
        progress: bool = False,
    ) -> list[Validation]:
        """Re-distil frontier members (``ranks``, default all) from scratch and compare their validation accuracy
        with the stored one: a member passes when the two differ by at most ``tolerance``. Training is seeded, so
        on the machine that ran the search the difference is normally 0; other hardware may differ slightly."""
        if not tolerance >= 0:
            raise RunError(f"tolerance={tolerance!r} must be a number >= 0")
        members = self.frontier(objectives)
        chosen = list(ranks) if ranks is not None else list(range(1, len(members) + 1))
        stored_members = [self.member(rank, objectives) for rank in chosen]
        evaluator = evaluator or (self.student_evaluator(progress=progress) if chosen else None)
        outcomes = []
        for rank, stored in zip(chosen, stored_members, strict=True):
            fresh = evaluator.evaluate(stored.candidate, stop_after=_stop_after(stored))
            error = None if fresh.status == "ok" else f"{fresh.status}: {fresh.error}"
            outcomes.append(
                Validation(
                    rank=rank,
                    candidate=stored.candidate.summary(),
                    stored=stored.validation_accuracy,
                    reproduced=fresh.validation_accuracy,
                    tolerance=tolerance,
                    error=error,
                )
            )
        return outcomes


def labelled_frontier(results: Iterable[EvalResult], objectives: Sequence[str]) -> pd.DataFrame:
    """:func:`~distilsearch.search.pareto.frontier_table` with a ``predicted`` column after the candidate hash: True
    for a member whose numbers a surrogate predicted (never measured)."""
    from distilsearch.envs.surrogate import is_predicted
    from distilsearch.search.pareto import frontier_table

    results = list(results)
    predicted = {result.candidate.content_hash() for result in results if is_predicted(result)}
    frame = frontier_table(results, objectives)
    frame.insert(2, "predicted", frame["candidate_hash"].isin(predicted).astype(bool))
    return frame


def _stop_after(result: EvalResult) -> int | None:
    """The learning-curve rung a stored result stopped at (multi-fidelity agents), or None for a full budget."""
    return (result.provenance.get("fidelity") or {}).get("stop_after")


# ---- starting and resuming -----------------------------------------------------------------------------------------


def run_search(
    config: SearchConfig,
    *,
    progress: bool = True,
    notify: Notify | None = None,
    on_evaluation: Callable[[LedgerEntry], None] | None = None,
    retry_failed: bool = False,
) -> Run:
    """Run ``config``'s search into its run folder, resuming a compatible run there; return the :class:`Run`.

    ``notify`` receives human-readable notes as they arise (restored store rows, unspent budget); they are also kept
    in ``run.session.notes`` and the run's ``search.log``. ``on_evaluation`` is called after each new evaluation.
    A start that fails before spending anything leaves no folder behind (or the folder as it was). Failed
    evaluations of a resumed run are answered from its ledger and store unless ``retry_failed``: then they are
    withdrawn from the ledger (their budget given back) and evaluated again when the agent asks for them.
    """
    from distilsearch.search.run_lock import RunLock, RunLocked

    agent, reward, space = _parts(config)
    run_dir = config.run_dir()
    _check_run_dir(run_dir)
    created = not run_dir.exists()
    session = Session(budget=config.budget)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(run_dir):
            job = _Job(config, run_dir, agent, reward, space, session, progress, on_evaluation, retry_failed)
            _locked(job, notify)
    except RunLocked as error:
        raise RunError(str(error)) from None
    except OSError as error:
        raise RunError(f"search in {run_dir} stopped: {error}") from None
    except BaseException:
        if created and run_dir.is_dir() and _nothing_spent(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return Run(run_dir, config, session)


def _parts(config: SearchConfig) -> tuple[Agent, Reward, SearchSpace]:
    """The agent, reward and search space of ``config`` (RunError for an unusable one)."""
    from distilsearch.envs.rewards import make_reward
    from distilsearch.kdlib.data.assets import AssetError
    from distilsearch.search.agents import make_agent

    try:
        agent = make_agent(config.agent, **config.agent_options)
        reward = make_reward(config.reward, **config.reward_options)
        return agent, reward, _space(config)
    except (AssetError, ValueError, OSError) as error:
        raise RunError(str(error)) from None


def _space(config: SearchConfig) -> SearchSpace:
    """The run's space (:func:`_table_space` for the table backends, else :func:`_live_space`) with the run's
    deployment limits replacing its own."""
    if config.backend in ("table", "surrogate"):
        return _table_space(config).with_limits(config.limits())
    return _live_space(config)


def _live_space(config: SearchConfig) -> SearchSpace:
    """The space YAML (or the teacher's default space) with the run's deployment limits replacing its own."""
    from transformers import AutoConfig

    from distilsearch.envs.space import DEFAULT_FIXED, SearchSpace
    from distilsearch.kdlib.training.teacher import resolve_base_dir

    if config.space is not None:
        return SearchSpace.from_yaml(config.space).with_limits(config.limits())
    folder = config.teacher if config.teacher is not None else resolve_base_dir(config.base)
    teacher_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    fixed = DEFAULT_FIXED | {"max_length": config.max_length}
    return SearchSpace.default_for(teacher_config, fixed=fixed, limits=config.limits())


def _table_space(config: SearchConfig) -> SearchSpace:
    """The space a table backend searches: a bench table's recorded space (a ``--space`` given must be that space),
    else the ``--space`` given, which a plain table needs. Nothing is fetched."""
    from distilsearch.envs.bench_table import BenchTable, BenchTableError
    from distilsearch.envs.space import SearchSpace

    path = config.table_path()
    if not path.is_file():
        hint = "" if config.table is not None else " (KD-Bench's table; build it with `distilsearch bench build`)"
        raise RunError(f"--backend {config.backend}: the benchmark table {path} does not exist{hint}")
    given = SearchSpace.from_yaml(config.space) if config.space is not None else None
    try:
        bench = BenchTable.load(path)
    except BenchTableError as error:
        if given is None:
            raise RunError(f"{error}; pass --space SPACE.yaml, the space its rows cover") from None
        return given
    if given is not None:
        bench.check_space(given)
    return bench.space


def _nothing_spent(run_dir: Path) -> bool:
    """True when the run folder holds only what a start writes (settings, log, lock, an empty store and ledger)."""
    from distilsearch.envs.store import EvaluationStore, StoreError

    layout = RunLayout(run_dir)
    if any(path.name not in run_layout.START_FILES for path in run_dir.iterdir()):
        return False
    if layout.ledger.is_file() and len(layout.ledger.read_text(encoding="utf-8", errors="replace").splitlines()) > 1:
        return False
    if not layout.store.is_file():
        return True
    try:
        with closing(EvaluationStore(layout.store, create=False)) as store:
            return len(store) == 0
    except StoreError:
        return False


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a run folder that is a file, or a folder of something other than a search run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a run folder")
    if run_dir.is_dir() and not (run_dir / run_layout.CONFIG).exists() and not _nothing_spent(run_dir):
        raise RunError(f"run folder {run_dir} is not empty and holds no {run_layout.CONFIG}; refusing to write into it")


def _save_settings(config: SearchConfig, run_dir: Path, note: Notify) -> None:
    """Write ``config.yaml``, or check that the run was started with compatible settings (a run that has spent
    nothing, a start that failed, takes the new settings)."""
    saved = RunLayout(run_dir).config
    if saved.is_file():
        try:
            differences = SearchConfig.load(saved).differences(config)
        except ValueError as error:
            raise RunError(f"{error}; restore the run's {run_layout.CONFIG} or use another --out") from None
        if differences and not _nothing_spent(run_dir):
            raise ResumeMismatch(run_dir, differences)
        if differences:
            note(f"run folder held no evaluations; starting it afresh with new settings: {'; '.join(differences)}")
    config.save(run_dir)


def _evaluator(config: SearchConfig, run_dir: Path, store: EvaluationStore, retry_failed: bool) -> Evaluator:
    from distilsearch.envs.evaluators import TableEvaluator
    from distilsearch.envs.live import LiveEvaluator
    from distilsearch.envs.ray_evaluator import RayEvaluator
    from distilsearch.envs.surrogate import SurrogateEvaluator

    if config.backend in ("table", "surrogate"):
        table = TableEvaluator(config.table_path())
        return SurrogateEvaluator.from_table(table) if config.backend == "surrogate" else table
    if config.workers > 1 or config.ray_address or config.gpus_per_eval > 0:
        return RayEvaluator(
            config.task_source(),
            num_workers=config.workers,
            run_dir=run_dir,
            store_path=RunLayout(run_dir).store,
            fidelity=config.fidelity,
            address=config.ray_address,
            num_gpus_per_eval=config.gpus_per_eval,
            base_dir=config.base,
            teacher_dir=config.teacher,
            retry_failed=retry_failed,
        )
    return LiveEvaluator(
        config.task_source(),
        fidelity=config.fidelity,
        store=store,
        base_dir=config.base,
        teacher_dir=config.teacher,
        progress=False,
        retry_failed=retry_failed,
    )


def _restore_store(budgeted: BudgetedEvaluator, store: EvaluationStore) -> int:
    """Write into the store every ledger entry it lacks (a crash between the two writes, or a deleted store)."""
    from distilsearch.envs.store import evaluation_key

    restored = 0
    for entry in budgeted.entries():
        key = evaluation_key(entry.result.candidate, budgeted.task, budgeted.teacher_key, entry.fidelity)
        if key not in store:
            store.put(key, entry.result, task=budgeted.task, teacher_key=budgeted.teacher_key, fidelity=entry.fidelity)
            restored += 1
    return restored


def _run_log(run_dir: Path) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger("distilsearch.search")
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(RunLayout(run_dir).log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


@dataclass(frozen=True)
class _Job:
    """The parts of one search session, handed from :func:`run_search` to the steps that run it."""

    config: SearchConfig
    run_dir: Path
    agent: Agent
    reward: Reward
    space: SearchSpace
    session: Session
    progress: bool
    on_evaluation: Callable[[LedgerEntry], None] | None
    retry_failed: bool = False


def _locked(job: _Job, notify: Notify | None) -> None:
    """The search itself, holding the run folder's lock: settings, evaluator, ledger, agent, frontier files."""
    log, handler = _run_log(job.run_dir)

    def note(text: str) -> None:
        job.session.notes.append(text)
        log.info(text)
        if notify is not None:
            notify(text)

    try:
        _save_settings(job.config, job.run_dir, note)
        _search(job, note, log)
    finally:
        log.removeHandler(handler)
        handler.close()


def _search(job: _Job, note: Notify, log: logging.Logger) -> None:
    from distilsearch.envs.ray_evaluator import RayEvaluator
    from distilsearch.envs.store import EvaluationStore, StoreError, evaluation_key
    from distilsearch.kdlib.core.progress import progress_bar
    from distilsearch.kdlib.data.assets import AssetError
    from distilsearch.search.budget import BudgetedEvaluator
    from distilsearch.search.dnas.tune import NoRoomForTrials
    from distilsearch.search.pareto import most_trained

    config, run_dir, space, session, on_evaluation = job.config, job.run_dir, job.space, job.session, job.on_evaluation
    layout = RunLayout(run_dir)
    try:
        store = EvaluationStore(layout.store)
    except StoreError as error:
        raise RunError(str(error)) from None
    with closing(store):
        try:
            evaluator = _evaluator(config, run_dir, store, job.retry_failed)
        except (AssetError, ValueError, OSError, StoreError) as error:
            raise RunError(str(error)) from None
        if evaluator.task != config.task:
            raise RunError(
                f"the {config.backend} backend holds task {evaluator.task!r}, not the run's task {config.task!r}"
            )
        if config.budget_unit == "evaluations" and config.budget > space.num_valid():
            note(
                f"the budget of {config.budget} evaluations is above the {space.num_valid()} valid candidates of the "
                "space; the rest will stay unspent"
            )
        unit = "eval" if config.budget_unit == "evaluations" else "step"
        bar = progress_bar(total=config.budget, desc=f"{config.agent} budget", unit=unit, disable=not job.progress)

        def record(entry: LedgerEntry) -> None:
            result = entry.result
            key = evaluation_key(result.candidate, evaluator.task, evaluator.teacher_key, entry.fidelity)
            if key not in store:  # live evaluators store their own results; tables and surrogates do not
                store.put(key, result, task=evaluator.task, teacher_key=evaluator.teacher_key, fidelity=entry.fidelity)
            log.info(
                "evaluation %d at %s (cost %d %s, %.1f s): %s %s validation_accuracy=%s reward=%.4f",
                entry.index,
                entry.fidelity,
                entry.cost,
                config.budget_unit,
                result.train_seconds or 0.0,
                result.candidate.summary(),
                result.status,
                result.validation_accuracy,
                entry.reward,
            )
            bar.update(entry.cost)
            best = budgeted.best
            if best is not None:
                bar.set_postfix(
                    best_reward=f"{best.reward:.3f}", best_val=f"{best.result.validation_accuracy or 0:.3f}"
                )
            if on_evaluation is not None:
                on_evaluation(entry)

        try:
            budgeted = BudgetedEvaluator(
                evaluator,
                config.budget,
                record,
                reward=job.reward,
                history_path=layout.ledger,
                unit=config.budget_unit,
                retry_failed=job.retry_failed,
            )
            session.restored = _restore_store(budgeted, store)
        except ResumeMismatch:
            bar.close()
            raise
        except (ValueError, StoreError) as error:
            bar.close()
            raise RunError(str(error)) from None
        if session.restored:
            note(f"restored {session.restored} evaluation(s) missing from {store.path} from the ledger")
        bar.update(budgeted.spent)
        log.info("search started: %s (already spent %d of %d)", config.model_dump_json(), budgeted.spent, config.budget)
        try:
            job.agent.run(budgeted, space, run_dir, seed=config.seed)
        except ResumeMismatch:
            raise
        except (NoRoomForTrials, ValueError, StoreError) as error:
            log.exception("search stopped by an error")
            raise RunError(f"{error} (details in {layout.log})") from None
        finally:
            bar.close()
            if isinstance(evaluator, RayEvaluator):
                evaluator.shutdown()
            session.spent = budgeted.spent
            session.evaluations = len(budgeted)
            session.train_seconds = sum(result.train_seconds or 0.0 for result in budgeted.results())
            log.info(
                "search stopped: %d of %d %s on %d evaluations (%.0f s of training); distillations in this process: %s",
                budgeted.spent,
                budgeted.budget,
                config.budget_unit,
                len(budgeted),
                session.train_seconds,
                getattr(evaluator, "distillations", None),
            )
        if budgeted.remaining:
            note(f"{budgeted.remaining} {config.budget_unit} left unspent: {_why_unspent(budgeted, space)}")
        results = most_trained(row.result for row in store.rows(task=config.task))
        labelled_frontier(results, FRONTIER_OBJECTIVES).to_csv(layout.frontier_csv, index=False)


def _why_unspent(budgeted: BudgetedEvaluator, space: SearchSpace) -> str:
    evaluated = {entry.candidate.content_hash() for entry in budgeted.entries()}
    if len(evaluated) >= space.num_valid():
        return f"every one of the {space.num_valid()} valid candidates of the space was evaluated"
    if budgeted.unit == "steps":
        return "the agent's next request cost more steps than were left"
    return "the agent stopped before spending it (see the run's search.log)"
