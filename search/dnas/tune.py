"""A DNAS frontier sweep on Ray Tune: one trial per (beta, seed), each searching one architecture.

Each trial builds a :class:`~distilsearch.kdlib.student_evaluator.StudentEvaluator` for the teacher (tokenized sets and
cached teacher logits come from the shared on-disk caches), runs
:func:`~distilsearch.search.dnas.train.search_with_evaluator` with its ``beta`` and ``seed`` and passes every progress
report to ``ray.tune.report``; the last report has ``final=True`` and, like every report, the derived StudentSpec as
JSON under ``spec``.

Resources: each trial asks for ``num_cpus_per_trial`` CPUs (its torch thread count) and ``num_gpus_per_trial`` GPUs
(give ``device="cuda"`` with them), and at most ``max_concurrent`` trials run at once.

ASHA: with ``asha=True`` an :class:`~ray.tune.schedulers.ASHAScheduler` (``time_attr`` = reports) stops trials
early on ``asha_metric``. Trials with different betas optimise differently scaled objectives, so the default
metric is ``relative_loss`` (each trial's objective over its first report's), which stops searches that stall
without ranking the betas against each other (it is 1 at the first report, so rungs start at the second:
``grace_period >= 2``); ``loss``, ``kd_loss`` and ``validation_accuracy`` would favour small betas. A stopped trial
keeps the spec of its last report and is marked ``stopped``.

Storage and resume, as data only: the sweep lives in ``<run_dir>/dnas/<name>``, ``name`` being a hash of the
teacher and the settings. Each trial that ends (completed, stopped by ASHA or failed) is appended to ``trials.jsonl``
there as one JSON line (fsynced) by a Tune callback in the driver, so a sweep killed midway keeps its finished
trials. A call that finds records runs only the grid points without a completed or stopped one (failed and
unfinished trials start again from their beginning: trials do not checkpoint), with a new Tuner in a new experiment
folder ``tune-N`` beside the earlier ones (no Ray is started when none is missing); ASHA then ranks the rerun trials
among themselves. Nothing a call finds in the run folder is unpickled: earlier experiment folders, and the
``tuner.pkl`` of a sweep written by an older version (``Tuner.restore`` would unpickle it; a warning says so, and its
trials run again), are never read; Tune reads back only the new folder it writes during the call.
``summary.json`` lists every trial's outcome.

Local Ray: started like :class:`~distilsearch.envs.ray_evaluator.RayEvaluator` starts it
(:func:`~distilsearch.envs.ray_evaluator.init_local_ray`: node address 127.0.0.1, so Ray listens on the loopback
interface only, always; temp dir under ``<run_dir>/ray_tmp`` at mode 0700, a short link when that path is too long for
Unix sockets, no dashboard, worker output kept in log files, token authentication left to Ray) and stopped at the end; a
Ray already initialised is used and left running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
import torch
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler

from distilsearch.envs.ray_evaluator import init_local_ray, prepare_ray_temp_dir
from distilsearch.kdlib.core.atomic import read_appended_lines, write_json_atomic
from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.user_data import DataSpec
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.students.specs import StudentSpec
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.search.dnas.train import DNASConfig, search_with_evaluator

DNAS_DIR = "dnas"
SUMMARY_FILE = "summary.json"
TRIALS_FILE = "trials.jsonl"
EXPERIMENT_PREFIX = "tune-"
LEGACY_TUNER_FILE = "tuner.pkl"
FINISHED: frozenset[str] = frozenset({"completed", "stopped"})
ASHA_METRICS = {"relative_loss": "min", "loss": "min", "kd_loss": "min", "validation_accuracy": "max"}
TrialStatus = Literal["completed", "stopped", "failed"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSettings:
    """What every trial needs besides its ``beta`` and ``seed`` (pickled to the trial processes)."""

    teacher: Teacher
    config: DNASConfig
    device: str
    threads: int
    setup: Callable[[], object] | None
    task: str | DataSpec


@dataclass(frozen=True)
class TrialOutcome:
    """One trial: its beta and seed, how it ended, the derived spec (None if it never reported) and last report."""

    beta: float
    seed: int
    status: TrialStatus
    spec: StudentSpec | None
    metrics: dict[str, Any]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (the spec as a dict)."""
        return {
            "beta": self.beta,
            "seed": self.seed,
            "status": self.status,
            "spec": None if self.spec is None else self.spec.model_dump(mode="json"),
            "metrics": self.metrics,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> TrialOutcome:
        """The outcome :meth:`to_dict` wrote; ValueError, KeyError or TypeError when ``record`` is not one."""
        status = record["status"]
        if status not in ("completed", "stopped", "failed"):
            raise ValueError(f"unknown status {status!r}")
        seed, metrics, error = record["seed"], record["metrics"], record["error"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(metrics, dict):
            raise ValueError("seed must be an int and metrics an object")
        if error is not None and not isinstance(error, str):
            raise ValueError("error must be a string or null")
        spec = None if record["spec"] is None else StudentSpec.model_validate(record["spec"])
        return cls(float(record["beta"]), seed, status, spec, metrics, error)


def dnas_trial(trial_config: Mapping[str, Any], settings: TrialSettings) -> None:
    """The Tune trainable: search one architecture and report its progress (see the module docstring)."""
    if settings.setup is not None:
        settings.setup()
    torch.set_num_threads(settings.threads)
    teacher = settings.teacher
    task = load_task(settings.task, progress=False)
    evaluator = StudentEvaluator(teacher, task, device=settings.device, progress=False)
    point = trial_config["trial"]
    trial = {"beta": float(point["beta"]), "seed": int(point["seed"])}
    config = DNASConfig.model_validate(settings.config.model_dump() | trial)
    search_with_evaluator(evaluator, config, on_report=tune.report)


@contextlib.contextmanager
def local_ray(
    run_dir: Path, num_cpus: int, gpus: bool, runtime_env: Mapping[str, Any] | None, trial: Mapping[str, float]
) -> Iterator[None]:
    """A private local Ray for the sweep (see the module docstring), or the one already initialised, which must have
    room for one ``trial`` (its ``cpu`` and ``gpu`` needs)."""
    if ray.is_initialized():
        if runtime_env is not None:
            raise ValueError("runtime_env applies only when run_dnas_tune starts Ray, but Ray is already initialised")
        check_room(trial)
        logger.info("using the Ray already initialised in this process; it is left running")
        yield
        return
    prepared = prepare_ray_temp_dir(run_dir)
    try:
        init_local_ray(
            num_cpus=num_cpus,
            num_gpus=None if gpus else 0,
            include_dashboard=False,
            _temp_dir=str(prepared.ray_dir),
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=dict(runtime_env) if runtime_env is not None else None,
        )
        yield
    finally:
        ray.shutdown()
        if prepared.link_dir is not None:
            shutil.rmtree(prepared.link_dir, ignore_errors=True)


class NoRoomForTrials(RuntimeError):
    """The Ray already running cannot fit one DNAS trial."""


def check_room(trial: Mapping[str, float]) -> None:
    """:class:`NoRoomForTrials` when a single-node Ray has fewer free CPUs or GPUs than one trial needs (the sweep
    would wait forever: e.g. a :class:`~distilsearch.envs.ray_evaluator.RayEvaluator`'s workers hold every CPU of its
    local Ray). A cluster of several nodes is trusted to make room (autoscaling)."""
    if sum(1 for node in ray.nodes() if node.get("Alive")) > 1:
        return
    free = ray.available_resources()
    for resource, key in (("cpu", "CPU"), ("gpu", "GPU")):
        if trial[resource] > free.get(key, 0.0):
            raise NoRoomForTrials(
                f"a DNAS trial needs {trial[resource]:g} {key}, but the Ray already running has {free.get(key, 0.0):g} "
                f"free (of {ray.cluster_resources().get(key, 0.0):g}); its evaluation workers may hold them all: use "
                "fewer workers or a cluster with room for the trials"
            )


def check_grid(betas: Sequence[float], seeds: Sequence[int]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """``betas`` as floats and ``seeds``; ``ValueError`` unless both are non-empty, distinct and >= 0."""
    betas, seeds = tuple(betas), tuple(seeds)
    if not betas or any(isinstance(b, bool) or not isinstance(b, int | float) or not b >= 0 for b in betas):
        raise ValueError(f"betas={betas} must be one or more numbers >= 0")
    if not math.isfinite(max(betas)) or len(set(betas)) != len(betas):
        raise ValueError(f"betas={betas} must be finite and distinct")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds} must be one or more ints >= 0")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds} must be distinct")
    return tuple(float(b) for b in betas), seeds


_REPORTED = (
    "step",
    "tau",
    "loss",
    "kd_loss",
    "relative_loss",
    "expected_flops_ratio",
    "spec",
    "derived_flops_ratio",
    "validation_accuracy",
    "final",
)


def _trial_outcome(trial: Trial, error: str | None) -> TrialOutcome:
    metrics = {key: value for key, value in (trial.last_result or {}).items() if key in _REPORTED}
    spec = StudentSpec.model_validate_json(metrics["spec"]) if "spec" in metrics else None
    if error is not None:
        status: TrialStatus = "failed"
    else:
        status = "completed" if metrics.get("final") else "stopped"
    point = trial.config["trial"]
    return TrialOutcome(float(point["beta"]), int(point["seed"]), status, spec, metrics, error)


class TrialRecordError(ValueError):
    """A ``trials.jsonl`` line that is not a trial record."""


def append_trial(path: Path, outcome: TrialOutcome) -> None:
    """Append ``outcome`` to the JSON-lines file ``path`` and fsync it."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(outcome.to_dict(), sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_trials(path: Path) -> dict[tuple[float, int], TrialOutcome]:
    """The last record of each (beta, seed) in ``path`` (empty when absent); a torn last line (a crash mid-append:
    no final newline) is cut off, any other bad line is a :class:`TrialRecordError` naming the file and line."""
    outcomes: dict[tuple[float, int], TrialOutcome] = {}
    for number, line in enumerate(read_appended_lines(path), start=1):
        try:
            outcome = TrialOutcome.from_dict(json.loads(line))
        except (KeyError, TypeError, ValueError) as error:
            detail = " ".join(str(error).split())[:300]
            raise TrialRecordError(f"{path}: line {number} is not a DNAS trial record ({detail})") from None
        outcomes[(outcome.beta, outcome.seed)] = outcome
    return outcomes


class RecordTrials(tune.Callback):
    """Appends every trial that ends (completed, stopped or failed) to ``path`` (see :func:`append_trial`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        append_trial(self.path, _trial_outcome(trial, None))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        text = trial.get_error() or "the trial failed without an error message"
        append_trial(self.path, _trial_outcome(trial, " ".join(str(text).split())[-2000:]))


def sweep_name(
    teacher: Teacher,
    betas: Sequence[float],
    seeds: Sequence[int],
    config: DNASConfig,
    asha: tuple[str, int, float] | None,
) -> str:
    """The sweep folder's name: a hash of the teacher, the grid, the search settings and the ASHA settings."""
    settings = config.model_dump(mode="json", exclude={"beta", "seed"})
    identity = {
        "teacher": teacher.key,
        "task": teacher.task,
        "betas": tuple(betas),
        "seeds": tuple(seeds),
        "config": settings,
        "asha": list(asha) if asha is not None else None,
    }
    return "sweep-" + sha256_json(identity)[:12]


def _new_experiment(sweep: Path) -> str:
    """A ``tune-N`` name no experiment folder of ``sweep`` has yet."""
    taken = [path.name.removeprefix(EXPERIMENT_PREFIX) for path in sweep.glob(f"{EXPERIMENT_PREFIX}*")]
    number = 1 + max((int(suffix) for suffix in taken if suffix.isdigit()), default=0)
    return f"{EXPERIMENT_PREFIX}{number}"


def run_dnas_tune(
    teacher: Teacher,
    betas: Sequence[float],
    seeds: Sequence[int],
    config: DNASConfig,
    run_dir: str | Path,
    *,
    num_cpus_per_trial: int = 1,
    num_gpus_per_trial: float = 0,
    max_concurrent: int = 2,
    asha: bool = False,
    asha_metric: str = "relative_loss",
    grace_period: int = 2,
    reduction_factor: float = 2.0,
    num_cpus: int | None = None,
    device: str = "cpu",
    setup: Callable[[], object] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    task: str | DataSpec | None = None,
) -> list[TrialOutcome]:
    """Search one architecture per (beta, seed) on Ray Tune; outcomes in (beta, seed) grid order.

    ``config`` holds every search setting but ``beta`` and ``seed`` (its own are replaced). ``teacher`` fixes the
    task (``teacher.task``; give the user's data as ``task``, a ``DataSpec``, when the teacher's task is not
    registered); ``setup`` runs first in every trial (e.g. to register a custom task) and
    ``runtime_env`` is given to a Ray this call starts, with ``num_cpus`` CPUs (default: enough for
    ``max_concurrent`` trials). See the module docstring for ASHA, storage and resume.
    """
    betas, seeds = check_grid(betas, seeds)
    for name, value in (("num_cpus_per_trial", num_cpus_per_trial), ("max_concurrent", max_concurrent)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")
    gpus = num_gpus_per_trial
    if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not 0 <= gpus < math.inf:
        raise ValueError(f"num_gpus_per_trial={num_gpus_per_trial!r} must be a number >= 0")
    if asha_metric not in ASHA_METRICS:
        raise ValueError(f"asha_metric={asha_metric!r} must be one of {sorted(ASHA_METRICS)}")
    reports = math.ceil(config.steps / config.report_every)
    lowest = 2 if asha_metric == "relative_loss" else 1
    if asha and (
        isinstance(grace_period, bool) or not isinstance(grace_period, int) or not lowest <= grace_period <= reports
    ):
        raise ValueError(
            f"grace_period={grace_period!r} must be in {lowest}..{reports} (reports per trial; relative_loss is 1 at "
            "the first report)"
        )
    run_dir = Path(run_dir)
    name = sweep_name(teacher, betas, seeds, config, (asha_metric, grace_period, reduction_factor) if asha else None)
    sweep = (run_dir / DNAS_DIR / name).resolve()
    sweep.mkdir(parents=True, exist_ok=True)
    records = sweep / TRIALS_FILE
    grid = [(beta, seed) for beta in betas for seed in seeds]
    finished = {key for key, outcome in read_trials(records).items() if outcome.status in FINISHED}
    missing = [key for key in grid if key not in finished]
    if (sweep / LEGACY_TUNER_FILE).exists():
        logger.warning(
            "the Tune experiment an older version wrote in %s is not restored, as that would unpickle files of the "
            "run folder; trials without a JSON record run again",
            sweep,
        )
    if missing:
        logger.info("running %d of %d DNAS trials in %s", len(missing), len(grid), sweep)
        settings = TrialSettings(teacher, config, device, num_cpus_per_trial, setup, task or teacher.task)
        resources = {"cpu": num_cpus_per_trial, "gpu": num_gpus_per_trial}
        trainable = tune.with_resources(tune.with_parameters(dnas_trial, settings=settings), resources)
        scheduler = None
        if asha:
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                metric=asha_metric,
                mode=ASHA_METRICS[asha_metric],
                max_t=reports,
                grace_period=grace_period,
                reduction_factor=reduction_factor,
            )
        run_config = tune.RunConfig(
            name=_new_experiment(sweep), storage_path=str(sweep), callbacks=[RecordTrials(records)], verbose=0
        )
        cpus = num_cpus if num_cpus is not None else max_concurrent * num_cpus_per_trial
        with local_ray(run_dir, cpus, num_gpus_per_trial > 0, runtime_env, resources):
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([{"beta": beta, "seed": seed} for beta, seed in missing])},
                tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=max_concurrent),
                run_config=run_config,
            )
            tuner.fit()
    recorded = read_trials(records)
    outcomes = [
        recorded.get(key) or TrialOutcome(*key, "failed", None, {}, "the trial ended without a recorded outcome")
        for key in grid
    ]
    write_json_atomic(sweep / SUMMARY_FILE, {"name": name, "trials": [o.to_dict() for o in outcomes]})
    return outcomes
