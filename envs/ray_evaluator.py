"""Parallel live evaluation on Ray: a pool of actors on any node of a cluster, the driver as the one writer.

:class:`RayEvaluator` starts a private local Ray (or connects to ``address``), builds the teacher and loads the task
once in the driver, and sends both to ``num_workers`` actors through Ray's object store: the teacher's files with
their sha256 (:mod:`~distilsearch.kdlib.training.teacher_package`; a worker whose files hash otherwise is refused,
and no worker ever fine-tunes a teacher of its own) and the task's sets, held in memory. Each worker keeps one
:class:`~distilsearch.envs.live.LiveEvaluator` without a store and returns every result, with the student's folder as
bytes when ``students_dir`` is given. The driver alone writes: the SQLite
:class:`~distilsearch.envs.store.EvaluationStore` (``store_path``), the students under ``students_dir`` and, through
its caller, the run's ledger. It knows what is in flight, so no candidate is handed to two workers, and workers need
no shared file system, no ``DISTILSEARCH_HOME`` of the driver and no access to the run folder: they may run on any
node.

Local Ray settings: CPUs = ``num_workers * num_cpus_per_eval`` (GPUs: none unless ``num_gpus_per_eval > 0``), the
node's address 127.0.0.1 (:func:`init_local_ray`: every Ray server listens on the loopback interface only, always
for a local start; a Ray on other machines is reached by ``address``), no dashboard (or, with ``dashboard=True``,
one bound to 127.0.0.1 only), worker output kept in log files rather than echoed (``log_to_driver=False``), and
Ray's files under ``<run_dir>/ray_tmp/ray``: Ray makes its temp dir world-writable, so it sits in ``ray_tmp``, kept
at mode 0700. A Unix socket path may not exceed 107 bytes and Ray puts its sockets about 66 bytes below its temp
dir, so when that folder's path is longer than :data:`MAX_TEMP_DIR_BYTES`, Ray is given a short link to it
(``/tmp/kdray-XXXXXXXX/t``, in a 0700 folder removed at shutdown; logged as a warning); the files still live in the
run folder. Token authentication is left to Ray: since 2.59 a new local cluster enables it (its token in
``~/.ray/auth_token``) unless ``RAY_AUTH_MODE`` says otherwise; it guards the loopback ports against other local
users, and a warning is logged when ``RAY_AUTH_MODE=disabled``.

Failures never hang the caller and nothing is lost. A worker that dies mid-evaluation (a crash, an OOM kill, a lost
node, SIGKILL) is replaced and its candidate handed to a worker again, up to ``max_retries`` times; then, like a
training that failed (NaN loss, CUDA OOM, an exception) or ran past ``eval_timeout_s``, the candidate's result is
``failed`` with its cause, and it is stored like any other result: a resumed search answers it from the store and
the ledger, and re-runs it only when asked to (``retry_failed``, ``distilsearch search --retry-failed``). Workers
are replaced up to ``max_worker_restarts`` times in all; candidates left when no worker remains fail the same way.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import socket
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray
import ray._private.ray_constants as ray_constants
import torch
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from distilsearch.envs.fidelity import Fidelity, apply_fidelity, fidelity_steps, get_fidelity
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.store import STORE_FILE, EvaluationStore, evaluation_key
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.kdlib.measure.latency import LatencyProtocol
from distilsearch.kdlib.student_evaluator import DEFAULT_LATENCY
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.training.finetune import FineTuneRecipe
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.kdlib.training.teacher_folder import load_task_for_teacher, teacher_for
from distilsearch.kdlib.training.teacher_package import (
    TeacherMismatchError,
    TeacherPackage,
    pack_teacher,
    unpack_teacher,
)

MAX_TEMP_DIR_BYTES = 40
LOOPBACK = "127.0.0.1"
SHORT_TEMP_PARENT = "/tmp"
POLL_SECONDS = 1.0
WORKER_FOLDER_PREFIX = "kdsearch-worker-"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayTempDir:
    """Ray's temporary folder inside a run folder (``path``), and what Ray is given (``ray_dir``: it or a short link
    in ``link_dir``, to be removed after ``ray.shutdown()``)."""

    path: Path
    ray_dir: Path
    link_dir: Path | None


def prepare_ray_temp_dir(run_dir: Path) -> RayTempDir:
    """Create ``<run_dir>/ray_tmp/ray`` (the enclosing folder kept at 0700) and, if its path is too long for Ray's
    Unix sockets, a short link to it; warn when Ray's token authentication is disabled."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        logger.warning("RAY_AUTH_MODE=disabled: Ray's ports accept unauthenticated requests from the network")
    private = Path(run_dir) / "ray_tmp"
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    private.chmod(0o700)
    path = private.resolve() / "ray"
    path.mkdir(exist_ok=True)
    if len(os.fsencode(path)) <= MAX_TEMP_DIR_BYTES:
        return RayTempDir(path, path, None)
    link_dir = Path(tempfile.mkdtemp(prefix="kdray-", dir=SHORT_TEMP_PARENT))
    (link_dir / "t").symlink_to(path, target_is_directory=True)
    logger.warning(
        "Ray temp dir %s is too long for Unix socket paths (over %d bytes); Ray uses the link %s to it",
        path,
        MAX_TEMP_DIR_BYTES,
        link_dir / "t",
    )
    return RayTempDir(path, link_dir / "t", link_dir)


def init_local_ray(**options: Any) -> None:
    """``ray.init(**options)`` starting a local Ray whose node address is 127.0.0.1, so that its servers listen on
    the loopback interface only (and a dashboard, if asked for, too).

    On Linux, Ray replaces a loopback ``_node_ip_address`` by the machine's network address unless its cluster
    support is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` read at import), so that switch is held off while the node
    starts; a Ray that still chose another address is shut down and a RuntimeError raised.
    """
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(_node_ip_address=LOOPBACK, dashboard_host=LOOPBACK, **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled
    address = ray.util.get_node_ip_address()
    if address != LOOPBACK:
        ray.shutdown()
        raise RuntimeError(f"the local Ray took the address {address}, not {LOOPBACK}; it was shut down")


class WorkerEvaluator(Protocol):
    """What a worker evaluates with: the part of :class:`~distilsearch.envs.live.LiveEvaluator` that workers use (a
    benchmark of the orchestration plugs in its own through ``RayEvaluator(worker_evaluator=...)``)."""

    distillations: int
    reused: int

    def evaluate(self, candidate: Candidate, fidelity: Fidelity | None = None) -> EvalResult:
        """The result of ``candidate`` at ``fidelity`` (None: the evaluator's level)."""
        ...


MakeWorkerEvaluator = Callable[["WorkerSettings", Teacher, TaskData, Path | None], WorkerEvaluator]


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs besides the teacher and the task (pickled to each actor)."""

    fidelity: Fidelity
    device: str
    latency: LatencyProtocol
    progress: bool
    threads: int
    keep_students: bool
    setup: Callable[[], object] | None = None
    remeasure_teacher_latency: bool = False
    make_evaluator: MakeWorkerEvaluator | None = None


def live_worker_evaluator(
    settings: WorkerSettings, teacher: Teacher, task: TaskData, students_dir: Path | None
) -> LiveEvaluator:
    """A worker's default evaluator: a storeless LiveEvaluator of the driver's teacher and task."""
    return LiveEvaluator(
        task,
        teacher=teacher,
        fidelity=settings.fidelity,
        store=None,
        device=settings.device,
        students_dir=students_dir,
        latency=settings.latency,
        progress=settings.progress,
        remeasure_teacher_latency=settings.remeasure_teacher_latency,
    )


@dataclass(frozen=True)
class WorkerIdentity:
    """What a started worker reports: the task, teacher key and teacher files' hash it evaluates with, and where."""

    task: str
    teacher_key: str
    teacher_files_sha256: str
    node_id: str
    host: str
    pid: int


@dataclass(frozen=True)
class WorkerReply:
    """One evaluation's outcome on a worker: the result, how much it added to the worker's ``distillations`` and
    ``reused`` counters, and the student's folder as a tar archive (when students are kept)."""

    result: EvalResult
    distilled: int
    reused: int
    student: bytes | None = None


def archive_folder(folder: Path) -> bytes:
    """``folder``'s files as an uncompressed tar archive (weights do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


def extract_archive(data: bytes, folder: Path) -> None:
    """Unpack an :func:`archive_folder` archive into ``folder`` (replaced), refusing links and paths that leave it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(folder, filter="data")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_worker_folders(parent: Path) -> list[Path]:
    """Remove the private folders (``kdsearch-worker-<pid>-*``) under ``parent`` of workers no longer running: a
    killed worker cannot clean up its copy of the teacher. Returns what was removed."""
    removed = []
    for folder in parent.glob(f"{WORKER_FOLDER_PREFIX}*"):
        pid = folder.name.removeprefix(WORKER_FOLDER_PREFIX).split("-")[0]
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class EvaluationWorker:
    """The Ray actor body: the driver's teacher unpacked into a private folder (``kdsearch-worker-<pid>-*`` in the
    temporary directory; those of dead workers are removed when a worker starts), one storeless evaluator, one
    candidate at a time."""

    def __init__(self, settings: WorkerSettings, package: TeacherPackage, task: TaskData) -> None:
        if settings.setup is not None:
            settings.setup()
        torch.set_num_threads(settings.threads)
        remove_stale_worker_folders(Path(tempfile.gettempdir()))
        self.folder = Path(tempfile.mkdtemp(prefix=f"{WORKER_FOLDER_PREFIX}{os.getpid()}-"))
        self.teacher = unpack_teacher(package, self.folder / "teacher")
        self.files_sha256 = package.files_sha256
        self.students_dir = self.folder / "students" if settings.keep_students else None
        make = settings.make_evaluator or live_worker_evaluator
        self.evaluator = make(settings, self.teacher, task, self.students_dir)
        self.task = task.name

    def identity(self) -> WorkerIdentity:
        """This worker's task, teacher key, teacher files' hash and place."""
        node = ray.get_runtime_context().get_node_id()
        return WorkerIdentity(self.task, self.teacher.key, self.files_sha256, node, socket.gethostname(), os.getpid())

    def evaluate_group(self, candidates: Sequence[Candidate], fidelity: Fidelity | None = None) -> list[WorkerReply]:
        """Evaluate ``candidates`` in order at ``fidelity`` (None: the worker's level); each result's provenance
        names the worker (``"worker"``: node, host, pid) and each reply carries its student's folder (then removed
        here) when students are kept."""
        place = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
        replies = []
        for candidate in candidates:
            live = self.evaluator
            before = (live.distillations, live.reused)
            result = live.evaluate(candidate, fidelity)
            result = result.model_copy(update={"provenance": result.provenance | {"worker": place}})
            student = None
            if self.students_dir is not None and result.student_path:
                folder = Path(result.student_path)
                if folder.is_dir() and folder.is_relative_to(self.students_dir):
                    student = archive_folder(folder)
                    shutil.rmtree(folder)
            replies.append(WorkerReply(result, live.distillations - before[0], live.reused - before[1], student))
        return replies


@dataclass
class _Slot:
    actor: Any
    ready: bool = False


@dataclass
class _Job:
    """Candidates that run in order on one worker (twins; usually one), with the worker's deaths so far."""

    members: tuple[tuple[str, Candidate], ...]
    level: Fidelity
    deaths: int = 0
    causes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Running:
    slot: _Slot
    job: _Job
    deadline: float | None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _check_positive(name: str, value: float | None, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name}={value!r} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be an int >= 0")


def _check_local_gpus(num_gpus_per_eval: float) -> None:
    """Refuse GPUs per evaluation that this machine's Ray does not have, instead of workers that wait for them until
    ``startup_timeout_s`` (a cluster is not checked: its autoscaler may still add GPU nodes)."""
    available = ray.cluster_resources().get("GPU", 0)
    if num_gpus_per_eval > available:
        raise ValueError(
            f"num_gpus_per_eval={num_gpus_per_eval:g}, but the local Ray has {available:g} GPUs "
            f"(torch sees CUDA: {torch.cuda.is_available()}); use 0 on a machine without CUDA, or pass the address of "
            "a cluster with GPU nodes"
        )


class RayEvaluator:
    """Evaluates candidates on ``num_workers`` Ray actors; the driver writes the store (see the module docstring).

    ``task`` is a registered task name, the user's data (a ``DataSpec``) or loaded ``TaskData``; ``teacher`` a built
    teacher, else ``teacher_dir`` the user's fine-tuned teacher folder, else the teacher is fine-tuned from
    ``base_dir`` with ``teacher_recipe``, in this process, and cached. ``address``: None starts a private local Ray
    (stopped again by :meth:`shutdown`); ``"auto"`` or ``"ray://..."`` connects to a running cluster (only
    disconnected by :meth:`shutdown`), whose workers may sit on any node. A Ray already initialised in this process
    is used as it is and left running. ``setup`` runs in each worker before its evaluator is built; it must be
    importable or serialisable there (``runtime_env`` is given to every actor).

    ``num_cpus_per_eval`` / ``num_gpus_per_eval`` are each worker's Ray resources (its torch thread count is the
    whole CPUs); ``object_store_bytes`` sizes a local Ray's object store (it carries the teacher once and the students
    kept). ``eval_timeout_s`` bounds one evaluation (None: no bound), ``startup_timeout_s`` a worker's start.
    ``max_retries`` is how often a candidate whose worker died is handed out again; ``retry_failed`` re-runs, once per
    evaluator, a candidate whose stored result is ``failed``. ``remeasure_teacher_latency`` is each worker's
    LiveEvaluator option; ``worker_evaluator`` replaces the workers' LiveEvaluator (benchmarks of the orchestration).
    ``store_path`` defaults to ``<run_dir>/store.sqlite``. ``distillations``, ``reused`` and ``worker_failures``
    count over the pool; :attr:`timings` sums the driver's seconds by activity (``dispatch``: handing out jobs,
    ``wait``: blocked until a worker answers, ``collect``: receiving results, ``store`` and ``students``: writing
    them). Not thread-safe: call from one thread.
    """

    def __init__(
        self,
        task: str | DataSpec | TaskData,
        *,
        num_workers: int,
        run_dir: Path,
        store_path: Path | None = None,
        fidelity: str | Fidelity = "low",
        num_cpus_per_eval: float = 1,
        num_gpus_per_eval: float = 0,
        address: str | None = None,
        device: str = "auto",
        teacher: Teacher | None = None,
        teacher_recipe: FineTuneRecipe | None = None,
        base_dir: Path | None = None,
        teacher_dir: Path | None = None,
        students_dir: Path | None = None,
        latency: LatencyProtocol = DEFAULT_LATENCY,
        progress: bool = False,
        setup: Callable[[], object] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        dashboard: bool = False,
        object_store_bytes: int | None = 512 * 2**20,
        eval_timeout_s: float | None = 6 * 3600.0,
        startup_timeout_s: float = 1800.0,
        max_worker_restarts: int = 3,
        max_retries: int = 2,
        retry_failed: bool = False,
        remeasure_teacher_latency: bool = False,
        worker_evaluator: MakeWorkerEvaluator | None = None,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers={num_workers!r} must be a positive int")
        _check_count("max_worker_restarts", max_worker_restarts)
        _check_count("max_retries", max_retries)
        _check_positive("num_cpus_per_eval", num_cpus_per_eval)
        _check_positive("num_gpus_per_eval", num_gpus_per_eval, allow_zero=True)
        _check_positive("eval_timeout_s", eval_timeout_s, allow_none=True)
        _check_positive("startup_timeout_s", startup_timeout_s)
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"address={address!r} must be None (start a local Ray), 'auto' or a 'ray://' address")
        if teacher is not None and (teacher_recipe is not None or base_dir is not None or teacher_dir is not None):
            raise ValueError("pass either a built teacher or teacher_recipe / base_dir / teacher_dir, not both")
        self.fidelity_level = get_fidelity(fidelity)
        self.fidelity = self.fidelity_level.name
        self.run_dir = Path(run_dir)
        self.store_path = Path(store_path) if store_path is not None else self.run_dir / STORE_FILE
        self.students_dir = Path(students_dir) if students_dir is not None else None
        self.num_workers = num_workers
        self.eval_timeout_s = eval_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.restarts_left = max_worker_restarts
        self.max_retries = max_retries
        self.retry_failed = retry_failed
        self.distillations = 0
        self.reused = 0
        self.worker_failures = 0
        self.timings: dict[str, float] = dict.fromkeys(("dispatch", "wait", "collect", "store", "students"), 0.0)
        self.temp_dir: Path | None = None
        self._link_dir: Path | None = None
        self._slots: list[_Slot] = []
        self._retried: set[str] = set()
        self._closed = False
        self._started_ray = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store = EvaluationStore(self.store_path)
        try:
            data = task if isinstance(task, TaskData) else load_task_for_teacher(task, teacher_dir, progress=progress)
            if teacher is None:
                teacher = teacher_for(
                    data, folder=teacher_dir, base_dir=base_dir, recipe=teacher_recipe, device=device, progress=progress
                )
            self.task = data.name
            self.teacher_key = teacher.key
            self.train_size = len(data.splits["train"])
            package = pack_teacher(teacher)
            self.teacher_files_sha256 = package.files_sha256
            settings = WorkerSettings(
                fidelity=self.fidelity_level,
                device=device,
                latency=latency,
                progress=progress,
                threads=max(1, int(num_cpus_per_eval)),
                keep_students=self.students_dir is not None,
                setup=setup,
                remeasure_teacher_latency=remeasure_teacher_latency,
                make_evaluator=worker_evaluator,
            )
            self._init_ray(address, num_cpus_per_eval, num_gpus_per_eval, dashboard, object_store_bytes)
            if address is None:
                _check_local_gpus(num_gpus_per_eval)
            self._shared = (settings, ray.put(package), ray.put(data.in_memory()))
            del package
            self._actor_class = ray.remote(EvaluationWorker).options(
                num_cpus=num_cpus_per_eval,
                num_gpus=num_gpus_per_eval,
                max_restarts=0,
                max_task_retries=0,
                max_concurrency=1,
                runtime_env=dict(runtime_env) if runtime_env is not None else None,
            )
            self._slots = [_Slot(self._new_actor()) for _ in range(num_workers)]
            self.identities = self._await_workers()
        except BaseException:
            self.shutdown()
            raise

    def _new_actor(self) -> Any:
        return self._actor_class.remote(*self._shared)

    def _init_ray(
        self,
        address: str | None,
        num_cpus_per_eval: float,
        num_gpus_per_eval: float,
        dashboard: bool,
        object_store_bytes: int | None,
    ) -> None:
        if ray.is_initialized():
            logger.info("using the Ray already initialised in this process; it is left running at shutdown")
            return
        if address is not None:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            self._started_ray = True
            return
        prepared = prepare_ray_temp_dir(self.run_dir)
        self.temp_dir, self._link_dir = prepared.path, prepared.link_dir
        init_local_ray(
            num_cpus=math.ceil(self.num_workers * num_cpus_per_eval),
            num_gpus=None if num_gpus_per_eval > 0 else 0,
            include_dashboard=dashboard,
            object_store_memory=object_store_bytes,
            _temp_dir=str(prepared.ray_dir),
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        self._started_ray = True

    def _await_workers(self) -> list[WorkerIdentity]:
        refs = [slot.actor.identity.remote() for slot in self._slots]
        try:
            identities: list[WorkerIdentity] = ray.get(refs, timeout=self.startup_timeout_s)
        except GetTimeoutError as error:
            raise TimeoutError(
                f"{self.num_workers} workers did not start within startup_timeout_s={self.startup_timeout_s:g} s "
                f"(Ray has {ray.available_resources()} available)"
            ) from error
        except RayTaskError as error:
            cause = error.cause if error.cause is not None else error
            if isinstance(cause, TeacherMismatchError):
                raise TeacherMismatchError(str(cause)) from None
            raise RuntimeError(f"a worker failed to start: {_one_line(error)}") from error
        except RayError as error:
            raise RuntimeError(f"a worker failed to start: {_one_line(error)}") from error
        for identity in identities:
            self._check_identity(identity)
        for slot in self._slots:
            slot.ready = True
        return identities

    def _check_identity(self, identity: WorkerIdentity) -> None:
        """Refuse a worker whose task or teacher is not the driver's."""
        mine = (self.task, self.teacher_key, self.teacher_files_sha256)
        theirs = (identity.task, identity.teacher_key, identity.teacher_files_sha256)
        if theirs != mine:
            raise TeacherMismatchError(
                f"worker {identity.pid} on {identity.host} evaluates task {identity.task!r} with teacher "
                f"{identity.teacher_key[:16]} (files {identity.teacher_files_sha256[:16]}), not the driver's task "
                f"{self.task!r} and teacher {self.teacher_key[:16]} (files {self.teacher_files_sha256[:16]})"
            )

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (
            f"RayEvaluator(task={getattr(self, 'task', None)!r}, workers={len(self._slots)}, "
            f"fidelity={self.fidelity_level.describe()!r}, store={str(self.store_path)!r})"
        )

    @property
    def live_workers(self) -> int:
        """Workers currently in the pool."""
        return len(self._slots)

    @property
    def parallelism(self) -> int:
        """Candidates evaluated at the same time: the workers in the pool (at least 1)."""
        return max(1, len(self._slots))

    def evaluate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> EvalResult:
        """Evaluate one candidate on a worker (blocking), at ``fidelity`` (None: this evaluator's level)."""
        return self.evaluate_many([candidate], fidelity)[0]

    def cost_steps(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> int:
        """The training steps an evaluation of ``candidate`` at ``fidelity`` runs."""
        level = self.fidelity_level if fidelity is None else get_fidelity(fidelity)
        return fidelity_steps(candidate, level, train_size=self.train_size)

    def trained_candidate(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> Candidate:
        """``candidate`` with the budget of ``fidelity`` (default: this evaluator's): what is trained and stored."""
        return self._prepared(candidate, fidelity)[1]

    def key(self, candidate: Candidate, fidelity: str | Fidelity | None = None) -> str:
        """The evaluation-store key of ``candidate`` at ``fidelity`` (None: this evaluator's level)."""
        return self._prepared(candidate, fidelity)[0]

    def evaluate_many(
        self,
        candidates: Sequence[Candidate],
        fidelity: str | Fidelity | None = None,
        *,
        timeout_s: float | None = None,
    ) -> list[EvalResult]:
        """Evaluate ``candidates`` at ``fidelity`` (None: this evaluator's level) in parallel across the workers;
        results in input order.

        A candidate already in the store is answered from it; candidates trained identically at that fidelity are
        evaluated once. ``timeout_s`` replaces ``eval_timeout_s`` for this call (seconds per candidate, counted from
        its submission to a worker).
        """
        return self.evaluate_requests([(candidate, fidelity) for candidate in candidates], timeout_s=timeout_s)

    def evaluate_requests(
        self, requests: Sequence[tuple[Candidate, str | Fidelity | None]], *, timeout_s: float | None = None
    ) -> list[EvalResult]:
        """:meth:`evaluate_many` for requests at mixed fidelities (e.g. jobs on several rungs), all in one pool."""
        groups = self.evaluate_groups(
            [[candidate] for candidate, _ in requests],
            timeout_s=timeout_s,
            fidelities=[fidelity for _, fidelity in requests],
        )
        return [group[0] for group in groups]

    def evaluate_groups(
        self,
        groups: Sequence[Sequence[Candidate]],
        fidelity: str | Fidelity | None = None,
        *,
        timeout_s: float | None = None,
        fidelities: Sequence[str | Fidelity | None] | None = None,
    ) -> list[list[EvalResult]]:
        """Evaluate each group's candidates in order on one worker, the groups in parallel across the workers; the
        results group by group, in input order. A group's later members can reuse what its first trained (an int8
        twin measured from its fp32 twin's training, see :class:`~distilsearch.kdlib.student_evaluator.
        StudentEvaluator`). ``fidelities`` gives each group its own level. ``timeout_s`` (else ``eval_timeout_s``)
        bounds each member of a group."""
        if self._closed:
            raise RuntimeError("this RayEvaluator was shut down")
        _check_positive("timeout_s", timeout_s, allow_none=True)
        timeout = timeout_s if timeout_s is not None else self.eval_timeout_s
        levels = list(fidelities) if fidelities is not None else [fidelity] * len(groups)
        prepared = [
            [self._prepared(candidate, level) for candidate in group]
            for group, level in zip(groups, levels, strict=True)
        ]
        results: dict[str, EvalResult] = {}
        queued: set[str] = set()
        jobs = []
        started = time.perf_counter()
        for members in prepared:
            todo = []
            for key, trained, _ in members:
                if key in results or key in queued:
                    continue
                stored = self.store.get(key)
                if stored is not None and not self._retrying(key, stored):
                    results[key] = stored
                    self.reused += 1
                else:
                    todo.append((key, trained))
                    queued.add(key)
            if todo:
                jobs.append(_Job(tuple(todo), members[0][2]))
        self.timings["store"] += time.perf_counter() - started
        if jobs:
            self._run(deque(jobs), results, timeout)
        return [[results[key] for key, _, _ in members] for members in prepared]

    def _retrying(self, key: str, stored: EvalResult) -> bool:
        """Whether a stored result is re-run: a ``failed`` one with ``retry_failed``, once per evaluator."""
        if stored.status != "failed" or not self.retry_failed or key in self._retried:
            return False
        self._retried.add(key)
        return True

    def _prepared(self, candidate: Candidate, fidelity: str | Fidelity | None) -> tuple[str, Candidate, Fidelity]:
        """The store key, the candidate as trained at ``fidelity`` (None: this evaluator's level) and that level."""
        level = self.fidelity_level if fidelity is None else get_fidelity(fidelity)
        trained = apply_fidelity(candidate, level, train_size=self.train_size)
        return evaluation_key(trained, self.task, self.teacher_key, level.name), trained, level

    def _run(self, queue: deque[_Job], results: dict[str, EvalResult], timeout: float | None) -> None:
        """Feed idle workers from ``queue`` and collect results until both are empty."""
        idle = deque(self._slots)
        running: dict[Any, _Running] = {}
        try:
            while queue or running:
                started = time.perf_counter()
                while queue and idle:
                    slot, job = idle.popleft(), queue.popleft()
                    deadline = None
                    if timeout is not None:
                        startup = 0.0 if slot.ready else self.startup_timeout_s
                        deadline = time.monotonic() + timeout * len(job.members) + startup
                    ref = slot.actor.evaluate_group.remote([candidate for _, candidate in job.members], job.level)
                    running[ref] = _Running(slot, job, deadline)
                self.timings["dispatch"] += time.perf_counter() - started
                if not running:
                    for job in queue:
                        self._finish_failed(job, "no worker left: every worker died or timed out", results)
                    break
                started = time.perf_counter()
                ready, _ = ray.wait(list(running), num_returns=1, timeout=self._wait_seconds(running.values()))
                self.timings["wait"] += time.perf_counter() - started
                for ref in ready:
                    self._collect(ref, running.pop(ref), queue, results, idle)
                now = time.monotonic()
                for ref, run in list(running.items()):
                    if run.deadline is not None and now > run.deadline:
                        del running[ref]
                        reason = f"evaluation timed out after {timeout:g} s; its worker was stopped"
                        self._finish_failed(run.job, reason, results)
                        self._replace(run.slot, idle)
        finally:
            for run in running.values():
                self._restart(run.slot)

    @staticmethod
    def _wait_seconds(runs: Any) -> float:
        deadlines = [run.deadline for run in runs if run.deadline is not None]
        if not deadlines:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, min(deadlines) - time.monotonic()))

    def _collect(
        self,
        ref: Any,
        run: _Running,
        queue: deque[_Job],
        results: dict[str, EvalResult],
        idle: deque[_Slot],
    ) -> None:
        job = run.job
        started = time.perf_counter()
        try:
            replies: list[WorkerReply] = ray.get(ref, timeout=self.startup_timeout_s)
        except RayTaskError as error:
            cause = error.cause if error.cause is not None else error
            self._finish_failed(job, f"the worker raised {type(cause).__name__}: {_one_line(cause)}", results)
            idle.append(run.slot)
        except RayError as error:
            job.deaths += 1
            job.causes.append(_one_line(error))
            self._replace(run.slot, idle)
            if job.deaths <= self.max_retries:
                logger.warning(
                    "a worker died evaluating %s (%d of %d retries used); handing it out again",
                    ", ".join(candidate.content_hash()[:12] for _, candidate in job.members),
                    job.deaths,
                    self.max_retries,
                )
                queue.appendleft(job)
            else:
                reason = f"its worker died {job.deaths} time(s) (last: {job.causes[-1]})"
                self._finish_failed(job, reason, results)
        else:
            self.timings["collect"] += time.perf_counter() - started
            run.slot.ready = True
            idle.append(run.slot)
            for (key, _), reply in zip(job.members, replies, strict=True):
                self.distillations += reply.distilled
                self.reused += reply.reused
                results[key] = self._keep(key, reply, job.level)

    def _keep(self, key: str, reply: WorkerReply, level: Fidelity) -> EvalResult:
        """Write a worker's result (and its student) on the driver; return the result as stored."""
        result = reply.result
        if reply.student is not None and self.students_dir is not None:
            started = time.perf_counter()
            folder = self.students_dir / key
            extract_archive(reply.student, folder)
            result = result.model_copy(update={"student_path": str(folder)})
            self.timings["students"] += time.perf_counter() - started
        started = time.perf_counter()
        self.store.put(
            key, result, task=self.task, teacher_key=self.teacher_key, fidelity=level.name, replace_failed=True
        )
        self.timings["store"] += time.perf_counter() - started
        return result

    def _finish_failed(self, job: _Job, reason: str, results: dict[str, EvalResult]) -> None:
        """Store a ``failed`` result with ``reason`` for every member of ``job``."""
        for key, candidate in job.members:
            results[key] = self._keep(key, WorkerReply(self._failed(candidate, reason, job.level), 0, 0), job.level)

    def _restart(self, slot: _Slot) -> None:
        """Stop a worker and start a fresh one in its slot."""
        ray.kill(slot.actor, no_restart=True)
        slot.actor, slot.ready = self._new_actor(), False

    def _replace(self, slot: _Slot, idle: deque[_Slot]) -> None:
        """Stop a dead or stuck worker and start a fresh one in its place while restarts remain."""
        self.worker_failures += 1
        if self.restarts_left > 0:
            self.restarts_left -= 1
            self._restart(slot)
            idle.append(slot)
            logger.warning("replaced a failed worker (%d restarts left)", self.restarts_left)
        else:
            ray.kill(slot.actor, no_restart=True)
            self._slots.remove(slot)
            logger.warning("a worker failed and no restarts are left; %d workers remain", len(self._slots))

    def _failed(self, candidate: Candidate, reason: str, level: Fidelity) -> EvalResult:
        provenance = {
            "task": self.task,
            "teacher_key": self.teacher_key,
            "fidelity": {
                "name": level.name,
                "max_steps": level.max_steps,
                "epochs": level.epochs,
                "stop_after": level.stop_after,
            },
            "backend": "ray",
        }
        return EvalResult(candidate=candidate, status="failed", error=reason, provenance=provenance)

    def shutdown(self) -> None:
        """Stop the workers; stop (or disconnect from) Ray if this evaluator started (or connected) it; close the
        store."""
        if self._closed:
            return
        self._closed = True
        if ray.is_initialized():
            for slot in self._slots:
                ray.kill(slot.actor, no_restart=True)
        self._slots = []
        if self._started_ray:
            ray.shutdown()
        if self._link_dir is not None:
            shutil.rmtree(self._link_dir, ignore_errors=True)
        self.store.close()
