"""Parallel live evaluation on Ray: a pool of actors, each holding one :class:`~distilsearch.envs.live.LiveEvaluator`.

:class:`RayEvaluator` starts a private local Ray (or connects to ``address``), starts ``num_workers`` actors that each
load the teacher and the task once, and spreads candidates over them. Every worker writes to the same SQLite
:class:`~distilsearch.envs.store.EvaluationStore`, whose leases keep two workers from distilling the same candidate.

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

One host only. WAL-mode SQLite needs every writer on one machine, and SQLite on NFS or other network file systems
can corrupt the database or break its locks, so every worker is pinned to the driver's node (for a ``ray://``
client, the node running the client server) even on a multi-node cluster, and ``store_path`` / ``students_dir``
must be local to that node. Using several machines would need a client-server store; that is not provided.

Failures never hang the caller: a worker that dies (crash, OOM kill) or runs past ``eval_timeout_s`` turns its
candidate into a ``failed`` result naming the reason (not stored, so a later run retries it) and is replaced, up to
``max_worker_restarts`` times in all; candidates left when no worker remains fail the same way.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray._private.ray_constants as ray_constants
import torch
from ray.exceptions import GetTimeoutError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from distilsearch.envs.fidelity import Fidelity, apply_fidelity, fidelity_steps, get_fidelity
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.store import STORE_FILE, EvaluationStore, evaluation_key
from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.kdlib.measure.latency import LatencyProtocol
from distilsearch.kdlib.student_evaluator import DEFAULT_LATENCY
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.training.finetune import FineTuneRecipe

MAX_TEMP_DIR_BYTES = 40
LOOPBACK = "127.0.0.1"
SHORT_TEMP_PARENT = "/tmp"
POLL_SECONDS = 1.0

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


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs to build its LiveEvaluator (pickled to each actor)."""

    task: str | DataSpec
    fidelity: Fidelity
    store_path: Path
    device: str
    teacher_recipe: FineTuneRecipe | None
    base_dir: Path | None
    teacher_dir: Path | None
    students_dir: Path | None
    latency: LatencyProtocol
    progress: bool
    threads: int
    setup: Callable[[], object] | None
    remeasure_teacher_latency: bool = False


@dataclass(frozen=True)
class WorkerIdentity:
    """What a started worker reports: the task and teacher it evaluates with, and the training-set size."""

    task: str
    teacher_key: str
    train_size: int


class EvaluationWorker:
    """The Ray actor body: one LiveEvaluator, built once, evaluating one candidate at a time."""

    def __init__(self, settings: WorkerSettings) -> None:
        if settings.setup is not None:
            settings.setup()
        torch.set_num_threads(settings.threads)
        self.evaluator = LiveEvaluator(
            settings.task,
            fidelity=settings.fidelity,
            store=EvaluationStore(settings.store_path),
            device=settings.device,
            teacher_recipe=settings.teacher_recipe,
            base_dir=settings.base_dir,
            teacher_dir=settings.teacher_dir,
            students_dir=settings.students_dir,
            latency=settings.latency,
            progress=settings.progress,
            remeasure_teacher_latency=settings.remeasure_teacher_latency,
        )

    def identity(self) -> WorkerIdentity:
        """This worker's task, teacher key and training-set size."""
        live = self.evaluator
        return WorkerIdentity(live.task, live.teacher_key, live.train_size)

    def evaluate_group(
        self, candidates: Sequence[Candidate], fidelity: Fidelity | None = None
    ) -> tuple[list[EvalResult], int, int]:
        """The results of ``candidates``, evaluated in order at ``fidelity`` (None: the worker's level), and how much
        they added to the evaluator's ``distillations`` and ``reused`` counters."""
        live = self.evaluator
        before = (live.distillations, live.reused)
        results = [live.evaluate(candidate, fidelity) for candidate in candidates]
        return results, live.distillations - before[0], live.reused - before[1]


@dataclass
class _Slot:
    actor: Any
    ready: bool = False


@dataclass(frozen=True)
class _Job:
    slot: _Slot
    members: tuple[tuple[str, Candidate], ...]
    deadline: float | None
    level: Fidelity


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _check_positive(name: str, value: float | None, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be a finite number {bound}{' or None' if allow_none else ''}")


class RayEvaluator:
    """Evaluates candidates on ``num_workers`` Ray actors sharing one evaluation store (see the module docstring).

    ``task`` is a registered task name or the user's data (a ``DataSpec``); ``teacher_dir`` the user's fine-tuned
    teacher folder (else the teacher is fine-tuned from ``base_dir`` with ``teacher_recipe``).
    ``address``: None starts a private local Ray (stopped again by :meth:`shutdown`); ``"auto"`` or ``"ray://..."``
    connects to a running cluster (only disconnected by :meth:`shutdown`). A Ray already initialised in this process
    is used as it is and left running. ``setup`` runs in each worker before its evaluator is built (e.g. to register
    a custom task); it must be importable or serialisable there (``runtime_env`` is given to every actor).

    ``num_cpus_per_eval`` / ``num_gpus_per_eval`` are each worker's Ray resources (its torch thread count is the
    whole CPUs); ``object_store_bytes`` sizes a local Ray's object store (results are small). ``eval_timeout_s``
    bounds one evaluation (None: no bound), ``startup_timeout_s`` a worker's start (loading, or first fine-tuning,
    the teacher). ``remeasure_teacher_latency`` is each worker's LiveEvaluator option. ``store_path`` defaults to
    ``<run_dir>/store.sqlite``; ``distillations``, ``reused`` and ``worker_failures`` count over the pool. Not
    thread-safe: call from one thread.
    """

    def __init__(
        self,
        task: str | DataSpec,
        *,
        num_workers: int,
        run_dir: Path,
        store_path: Path | None = None,
        fidelity: str | Fidelity = "low",
        num_cpus_per_eval: float = 1,
        num_gpus_per_eval: float = 0,
        address: str | None = None,
        device: str = "auto",
        teacher_recipe: FineTuneRecipe | None = None,
        base_dir: Path | None = None,
        teacher_dir: Path | None = None,
        students_dir: Path | None = None,
        latency: LatencyProtocol = DEFAULT_LATENCY,
        progress: bool = False,
        setup: Callable[[], object] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        dashboard: bool = False,
        object_store_bytes: int | None = 256 * 2**20,
        eval_timeout_s: float | None = 6 * 3600.0,
        startup_timeout_s: float = 1800.0,
        max_worker_restarts: int = 3,
        remeasure_teacher_latency: bool = False,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers={num_workers!r} must be a positive int")
        if isinstance(max_worker_restarts, bool) or not isinstance(max_worker_restarts, int) or max_worker_restarts < 0:
            raise ValueError(f"max_worker_restarts={max_worker_restarts!r} must be an int >= 0")
        _check_positive("num_cpus_per_eval", num_cpus_per_eval)
        _check_positive("num_gpus_per_eval", num_gpus_per_eval, allow_zero=True)
        _check_positive("eval_timeout_s", eval_timeout_s, allow_none=True)
        _check_positive("startup_timeout_s", startup_timeout_s)
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"address={address!r} must be None (start a local Ray), 'auto' or a 'ray://' address")
        self.fidelity_level = get_fidelity(fidelity)
        self.fidelity = self.fidelity_level.name
        self.run_dir = Path(run_dir)
        self.store_path = Path(store_path) if store_path is not None else self.run_dir / STORE_FILE
        if address is None or not address.startswith("ray://"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            EvaluationStore(self.store_path).close()
        self.num_workers = num_workers
        self.eval_timeout_s = eval_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.restarts_left = max_worker_restarts
        self.distillations = 0
        self.reused = 0
        self.worker_failures = 0
        self.temp_dir: Path | None = None
        self._link_dir: Path | None = None
        self._slots: list[_Slot] = []
        self._closed = False
        self._settings = WorkerSettings(
            task=task,
            fidelity=self.fidelity_level,
            store_path=self.store_path.resolve(),
            device=device,
            teacher_recipe=teacher_recipe,
            base_dir=Path(base_dir).resolve() if base_dir is not None else None,
            teacher_dir=Path(teacher_dir).resolve() if teacher_dir is not None else None,
            students_dir=Path(students_dir).resolve() if students_dir is not None else None,
            latency=latency,
            progress=progress,
            threads=max(1, int(num_cpus_per_eval)),
            setup=setup,
            remeasure_teacher_latency=remeasure_teacher_latency,
        )
        self._started_ray = False
        try:
            self._init_ray(address, num_cpus_per_eval, num_gpus_per_eval, dashboard, object_store_bytes)
            self._actor_class = ray.remote(EvaluationWorker).options(
                num_cpus=num_cpus_per_eval,
                num_gpus=num_gpus_per_eval,
                max_restarts=0,
                max_task_retries=0,
                max_concurrency=1,
                runtime_env=dict(runtime_env) if runtime_env is not None else None,
                scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
            )
            self._slots = [_Slot(self._actor_class.remote(self._settings)) for _ in range(num_workers)]
            identity = self._await_workers()
        except BaseException:
            self.shutdown()
            raise
        self.task = identity.task
        self.teacher_key = identity.teacher_key
        self.train_size = identity.train_size

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
            alive = [node for node in ray.nodes() if node.get("Alive")]
            if len(alive) > 1:
                logger.warning(
                    "the Ray cluster at %s has %d nodes, but the SQLite store needs one host: every worker runs on "
                    "the driver's node",
                    address,
                    len(alive),
                )
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

    def _await_workers(self) -> WorkerIdentity:
        refs = [slot.actor.identity.remote() for slot in self._slots]
        try:
            identities: list[WorkerIdentity] = ray.get(refs, timeout=self.startup_timeout_s)
        except GetTimeoutError as error:
            raise TimeoutError(
                f"{self.num_workers} workers did not start within startup_timeout_s={self.startup_timeout_s:g} s "
                f"(Ray has {ray.available_resources()} available; the task or the teacher may still be building)"
            ) from error
        except RayError as error:
            raise RuntimeError(f"a worker failed to start: {_one_line(error)}") from error
        first = identities[0]
        for identity in identities[1:]:
            if identity != first:
                raise RuntimeError(f"workers disagree on the task or teacher: {first} vs {identity}")
        for slot in self._slots:
            slot.ready = True
        return first

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

    def evaluate_many(
        self,
        candidates: Sequence[Candidate],
        fidelity: str | Fidelity | None = None,
        *,
        timeout_s: float | None = None,
    ) -> list[EvalResult]:
        """Evaluate ``candidates`` at ``fidelity`` (None: this evaluator's level) in parallel across the workers;
        results in input order.

        Candidates that are trained identically at that fidelity are evaluated once. ``timeout_s`` replaces
        ``eval_timeout_s`` for this call (seconds per candidate, counted from its submission to a worker).
        """
        return self.evaluate_requests([(candidate, fidelity) for candidate in candidates], timeout_s=timeout_s)

    def evaluate_requests(
        self, requests: Sequence[tuple[Candidate, str | Fidelity | None]], *, timeout_s: float | None = None
    ) -> list[EvalResult]:
        """:meth:`evaluate_many` for requests at mixed fidelities (e.g. jobs on several rungs), all in one pool."""
        groups: dict[str, tuple[tuple[str, Candidate], ...]] = {}
        levels: dict[str, Fidelity] = {}
        keys = []
        for candidate, fidelity in requests:
            key, trained, level = self._prepared(candidate, fidelity)
            keys.append(key)
            groups.setdefault(key, ((key, trained),))
            levels.setdefault(key, level)
        results = self._evaluate_jobs([(groups[key], levels[key]) for key in groups], timeout_s)
        return [results[key] for key in keys]

    def evaluate_groups(
        self,
        groups: Sequence[Sequence[Candidate]],
        fidelity: str | Fidelity | None = None,
        *,
        timeout_s: float | None = None,
    ) -> list[list[EvalResult]]:
        """Evaluate each group's candidates in order on one worker, the groups in parallel across the workers; the
        results group by group, in input order. A group's later members can reuse what its first trained (an int8
        twin measured from its fp32 twin's training, see :class:`~distilsearch.kdlib.student_evaluator.
        StudentEvaluator`). ``timeout_s`` (else ``eval_timeout_s``) bounds each member of a group."""
        prepared = [[self._prepared(candidate, fidelity) for candidate in group] for group in groups]
        jobs = [(tuple((k, c) for k, c, _ in members), members[0][2]) for members in prepared if members]
        results = self._evaluate_jobs(jobs, timeout_s)
        return [[results[key] for key, _, _ in members] for members in prepared]

    def _prepared(self, candidate: Candidate, fidelity: str | Fidelity | None) -> tuple[str, Candidate, Fidelity]:
        """The store key, the candidate as trained at ``fidelity`` (None: this evaluator's level) and that level."""
        level = self.fidelity_level if fidelity is None else get_fidelity(fidelity)
        trained = apply_fidelity(candidate, level, train_size=self.train_size)
        return evaluation_key(trained, self.task, self.teacher_key, level.name), trained, level

    def _evaluate_jobs(
        self, jobs: Sequence[tuple[tuple[tuple[str, Candidate], ...], Fidelity]], timeout_s: float | None
    ) -> dict[str, EvalResult]:
        """Run each job (its members in order on one worker) across the pool; every member's result by its key."""
        if self._closed:
            raise RuntimeError("this RayEvaluator was shut down")
        _check_positive("timeout_s", timeout_s, allow_none=True)
        timeout = timeout_s if timeout_s is not None else self.eval_timeout_s
        queue = deque(jobs)
        idle = deque(self._slots)
        running: dict[Any, _Job] = {}
        results: dict[str, EvalResult] = {}
        try:
            self._run(queue, idle, running, results, timeout)
        finally:
            for job in running.values():
                self._restart(job.slot)
        return results

    def _run(
        self,
        queue: deque[tuple[tuple[tuple[str, Candidate], ...], Fidelity]],
        idle: deque[_Slot],
        running: dict[Any, _Job],
        results: dict[str, EvalResult],
        timeout: float | None,
    ) -> None:
        """Feed idle workers from ``queue`` and collect results until both are empty; ``running`` holds the jobs."""
        while queue or running:
            while queue and idle:
                slot = idle.popleft()
                members, level = queue.popleft()
                deadline = None
                if timeout is not None:
                    startup = 0.0 if slot.ready else self.startup_timeout_s
                    deadline = time.monotonic() + timeout * len(members) + startup
                ref = slot.actor.evaluate_group.remote([candidate for _, candidate in members], level)
                running[ref] = _Job(slot, members, deadline, level)
            if not running:
                for members, level in queue:
                    self._fail_all(members, "no worker left: every worker died or timed out", level, results)
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=self._wait_seconds(running.values()))
            for ref in ready:
                self._collect(ref, running.pop(ref), results, idle)
            now = time.monotonic()
            for ref, job in list(running.items()):
                if job.deadline is not None and now > job.deadline:
                    del running[ref]
                    reason = f"evaluation timed out after {timeout:g} s; its worker was stopped"
                    self._fail_all(job.members, reason, job.level, results)
                    self._replace(job.slot, idle)

    def _fail_all(
        self,
        members: Sequence[tuple[str, Candidate]],
        reason: str,
        level: Fidelity,
        results: dict[str, EvalResult],
    ) -> None:
        for key, candidate in members:
            results[key] = self._failed(candidate, reason, level)

    @staticmethod
    def _wait_seconds(jobs: Any) -> float:
        deadlines = [job.deadline for job in jobs if job.deadline is not None]
        if not deadlines:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, min(deadlines) - time.monotonic()))

    def _collect(self, ref: Any, job: _Job, results: dict[str, EvalResult], idle: deque[_Slot]) -> None:
        try:
            done, distilled, reused = ray.get(ref, timeout=self.startup_timeout_s)
        except RayTaskError as error:
            cause = error.cause if error.cause is not None else error
            self._fail_all(job.members, f"the worker raised {type(cause).__name__}: {cause}", job.level, results)
            idle.append(job.slot)
        except RayError as error:
            self._fail_all(job.members, f"the worker died: {_one_line(error)}", job.level, results)
            self._replace(job.slot, idle)
        else:
            job.slot.ready = True
            results.update((key, result) for (key, _), result in zip(job.members, done, strict=True))
            self.distillations += distilled
            self.reused += reused
            idle.append(job.slot)

    def _restart(self, slot: _Slot) -> None:
        """Stop a worker and start a fresh one in its slot."""
        ray.kill(slot.actor, no_restart=True)
        slot.actor, slot.ready = self._actor_class.remote(self._settings), False

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
        """Stop the workers; stop (or disconnect from) Ray if this evaluator started (or connected) it."""
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
