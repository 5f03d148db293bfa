"""The live backend: an :class:`~distilsearch.envs.evaluators.Evaluator` that really distils and measures each
candidate.

:class:`LiveEvaluator` loads (or fine-tunes and caches) the teacher and loads the task once, builds one
:class:`~distilsearch.kdlib.student_evaluator.StudentEvaluator`, and evaluates candidates at a :mod:`fidelity
<distilsearch.envs.fidelity>` level through an :class:`~distilsearch.envs.store.EvaluationStore`: a candidate already
stored (by this process or any other on the host) costs no training, and the store's leases keep concurrent workers from
distilling the same one twice.
"""

from __future__ import annotations

from pathlib import Path

from distilsearch.envs.fidelity import Fidelity, apply_fidelity, fidelity_steps, get_fidelity
from distilsearch.envs.store import EvaluationStore, evaluation_key
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.kdlib.measure.latency import LatencyProtocol
from distilsearch.kdlib.student_evaluator import DEFAULT_LATENCY, StudentEvaluator
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.training.finetune import FineTuneRecipe
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.kdlib.training.teacher_folder import load_task_for_teacher, teacher_for


class LiveEvaluator:
    """Distils and measures candidates of one task against one teacher at one fidelity level.

    ``task`` is a registered task name, the user's data (a :class:`~distilsearch.kdlib.data.user_data.DataSpec`) or an
    already-loaded :class:`~distilsearch.kdlib.data.task_registry.TaskData`; ``teacher`` an already-built
    :class:`~distilsearch.kdlib.training.teacher.Teacher` (then ``teacher_recipe``, ``base_dir`` and ``teacher_dir``
    must stay None), else :func:`~distilsearch.kdlib.training.teacher_folder.teacher_for` takes the user's fine-tuned
    ``teacher_dir`` or builds (or reuses) the one fine-tuned from ``base_dir``. Results are stored in
    ``store``; without a store they are kept in memory for this evaluator's lifetime. With ``students_dir``, every
    ``ok`` student is exported to ``students_dir/<evaluation key>``.

    The result's candidate is the one actually trained (the level's budget, see
    :func:`~distilsearch.envs.fidelity.apply_fidelity`), and its provenance names the level under ``"fidelity"``.
    ``fidelity`` is the default level; :meth:`evaluate` takes another per request (e.g. a
    :func:`~distilsearch.envs.fidelity.rung`), and
    :meth:`cost_steps` prices a request in training steps.
    ``remeasure_teacher_latency`` times the teacher again beside each new student (see
    :class:`~distilsearch.kdlib.student_evaluator.StudentEvaluator`). ``retry_failed`` evaluates a candidate whose
    stored result is ``failed`` again, once per evaluator, and replaces that result.
    ``distillations`` counts candidates trained here; ``reused`` counts results taken from the store (or memory)
    instead; invalid candidates count in neither, as they are rejected before training.
    """

    def __init__(
        self,
        task: str | DataSpec | TaskData,
        *,
        fidelity: str | Fidelity = "low",
        store: EvaluationStore | None = None,
        device: str = "auto",
        teacher: Teacher | None = None,
        teacher_recipe: FineTuneRecipe | None = None,
        base_dir: Path | None = None,
        teacher_dir: Path | None = None,
        students_dir: Path | None = None,
        latency: LatencyProtocol = DEFAULT_LATENCY,
        progress: bool = True,
        lease_seconds: float = 60.0,
        remeasure_teacher_latency: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.fidelity_level = get_fidelity(fidelity)
        self.fidelity = self.fidelity_level.name
        if teacher is None:
            data = task if isinstance(task, TaskData) else load_task_for_teacher(task, teacher_dir, progress=progress)
            teacher = teacher_for(
                data, folder=teacher_dir, base_dir=base_dir, recipe=teacher_recipe, device=device, progress=progress
            )
        elif teacher_recipe is not None or base_dir is not None or teacher_dir is not None:
            raise ValueError("pass either a built teacher or teacher_recipe / base_dir / teacher_dir, not both")
        else:
            data = task if isinstance(task, TaskData) else load_task(task, progress=progress)
        self.student_evaluator = StudentEvaluator(
            teacher,
            data,
            device=device,
            latency=latency,
            progress=progress,
            remeasure_teacher_latency=remeasure_teacher_latency,
        )
        self.task = data.name
        self.teacher_key = teacher.key
        self.train_size = len(data.splits["train"])
        self.store = store
        self.students_dir = Path(students_dir) if students_dir is not None else None
        self.lease_seconds = lease_seconds
        self.retry_failed = retry_failed
        self._retried: set[str] = set()
        self.distillations = 0
        self.reused = 0
        self._memory: dict[str, EvalResult] = {}

    def __repr__(self) -> str:
        return (
            f"LiveEvaluator(task={self.task!r}, teacher_key={self.teacher_key[:16]!r}, "
            f"fidelity={self.fidelity_level.describe()!r}, store={self.store!r})"
        )

    def _level(self, fidelity: str | Fidelity | None) -> Fidelity:
        return self.fidelity_level if fidelity is None else get_fidelity(fidelity)

    def trained_candidate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> Candidate:
        """``candidate`` with the budget of ``fidelity`` (default: this evaluator's): what is trained and stored."""
        return apply_fidelity(candidate, self._level(fidelity), train_size=self.train_size)

    def key(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> str:
        """The evaluation-store key of ``candidate`` at this evaluator's task and teacher and at ``fidelity``."""
        level = self._level(fidelity)
        return evaluation_key(self.trained_candidate(candidate, level), self.task, self.teacher_key, level.name)

    def cost_steps(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> int:
        """The training steps an evaluation of ``candidate`` at ``fidelity`` runs."""
        return fidelity_steps(candidate, self._level(fidelity), train_size=self.train_size)

    def evaluate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> EvalResult:
        """The stored result of ``candidate`` at ``fidelity`` (default: this evaluator's level), or a fresh
        distillation (stored before returning)."""
        level = self._level(fidelity)
        trained = self.trained_candidate(candidate, level)
        key = evaluation_key(trained, self.task, self.teacher_key, level.name)
        ran: list[EvalResult] = []

        def distil() -> EvalResult:
            out_dir = self.students_dir / key if self.students_dir is not None else None
            result = self.student_evaluator.evaluate(trained, out_dir=out_dir, stop_after=level.stop_after)
            recorded = {
                "name": level.name,
                "max_steps": level.max_steps,
                "epochs": level.epochs,
                "stop_after": level.stop_after,
            }
            result = result.model_copy(update={"provenance": result.provenance | {"fidelity": recorded}})
            ran.append(result)
            return result

        if self.store is None:
            result = self._memory.get(key)
            if result is None:
                result = self._memory[key] = distil()
        else:
            retry = self.retry_failed and key not in self._retried
            self._retried.add(key)
            result = self.store.get_or_evaluate(
                key,
                distil,
                task=self.task,
                teacher_key=self.teacher_key,
                fidelity=level.name,
                lease_seconds=self.lease_seconds,
                retry_failed=retry,
            )
        if not ran:
            self.reused += 1
        elif ran[0].status != "invalid":
            self.distillations += 1
        return result
