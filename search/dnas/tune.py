"""A DNAS frontier sweep on Ray Tune: one trial per (beta, seed), each searching one architecture.

Each trial builds a :class:`~kdlib.student_eval.StudentEvaluator` for the teacher (tokenized sets and cached teacher
logits come from the shared on-disk caches), runs :func:`~search.dnas.train.search_with_evaluator` with its ``beta``
and ``seed`` and passes every progress report to ``ray.tune.report``; the last report has ``final=True`` and, like
every report, the derived StudentSpec as JSON under ``spec``.

Resources: each trial asks for ``num_cpus_per_trial`` CPUs (its torch thread count) and ``num_gpus_per_trial`` GPUs
(give ``device="cuda"`` with them), and at most ``max_concurrent`` trials run at once.

ASHA: with ``asha=True`` an :class:`~ray.tune.schedulers.ASHAScheduler` (``time_attr`` = reports) stops trials
early on ``asha_metric``. Trials with different betas optimise differently scaled objectives, so the default
metric is ``relative_loss`` (each trial's objective over its first report's), which stops searches that stall
without ranking the betas against each other (it is 1 at the first report, so rungs start at the second:
``grace_period >= 2``); ``loss``, ``kd_loss`` and ``validation_accuracy`` would favour small betas. A stopped trial
keeps the spec of its last report and is marked ``stopped``.

Storage and resume: the experiment lives in ``<run_dir>/dnas/<name>``, ``name`` being a hash of the teacher and the
settings. A call that finds that experiment restores it with ``Tuner.restore``: finished trials are kept as they
are, unfinished and errored ones start again from their beginning (trials do not checkpoint). ``summary.json`` in the
experiment folder lists every trial's outcome.

Local Ray: started like :class:`~envs.ray_evaluator.RayEvaluator` starts it (temp dir under ``<run_dir>/ray_tmp``
at mode 0700, a short link when that path is too long for Unix sockets, no dashboard, worker output kept in log
files, token authentication left to Ray) and stopped at the end; a Ray already initialised is used and left running.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from envs.ray_evaluator import prepare_ray_temp_dir
from kdlib.atomic import write_json_atomic
from kdlib.hashing import sha256_json
from kdlib.specs import StudentSpec
from kdlib.student_eval import StudentEvaluator
from kdlib.tasks import load_task
from kdlib.teacher import Teacher
from search.dnas.train import DNASConfig, search_with_evaluator

DNAS_DIR = "dnas"
SUMMARY_FILE = "summary.json"
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


def dnas_trial(trial_config: Mapping[str, Any], settings: TrialSettings) -> None:
    """The Tune trainable: search one architecture and report its progress (see the module docstring)."""
    if settings.setup is not None:
        settings.setup()
    torch.set_num_threads(settings.threads)
    teacher = settings.teacher
    task = load_task(teacher.task, progress=False)
    evaluator = StudentEvaluator(teacher, task, device=settings.device, progress=False)
    trial = {"beta": float(trial_config["beta"]), "seed": int(trial_config["seed"])}
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
        ray.init(
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
    would wait forever: e.g. a :class:`~envs.ray_evaluator.RayEvaluator`'s workers hold every CPU of its local Ray).
    A cluster of several nodes is trusted to make room (autoscaling)."""
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


def _outcome(result: Any) -> TrialOutcome:
    metrics = {key: value for key, value in (result.metrics or {}).items() if key in _REPORTED}
    spec = StudentSpec.model_validate_json(metrics["spec"]) if "spec" in metrics else None
    if result.error is not None:
        status: TrialStatus = "failed"
    else:
        status = "completed" if metrics.get("final") else "stopped"
    error = None if result.error is None else " ".join(str(result.error).split())[-2000:]
    return TrialOutcome(float(result.config["beta"]), int(result.config["seed"]), status, spec, metrics, error)


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
) -> list[TrialOutcome]:
    """Search one architecture per (beta, seed) on Ray Tune; outcomes in (beta, seed) grid order.

    ``config`` holds every search setting but ``beta`` and ``seed`` (its own are replaced). ``teacher`` fixes the
    task (``teacher.task``); ``setup`` runs first in every trial (e.g. to register a custom task) and
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
    storage = (run_dir / DNAS_DIR).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    search_settings = config.model_dump(mode="json", exclude={"beta", "seed"})
    name = (
        "sweep-"
        + sha256_json(
            {
                "teacher": teacher.key,
                "task": teacher.task,
                "betas": betas,
                "seeds": seeds,
                "config": search_settings,
                "asha": [asha_metric, grace_period, reduction_factor] if asha else None,
            }
        )[:12]
    )
    settings = TrialSettings(teacher, config, device, num_cpus_per_trial, setup)
    resources = {"cpu": num_cpus_per_trial, "gpu": num_gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(dnas_trial, settings=settings), resources)
    experiment = storage / name
    cpus = num_cpus if num_cpus is not None else max_concurrent * num_cpus_per_trial
    with local_ray(run_dir, cpus, num_gpus_per_trial > 0, runtime_env, resources):
        if tune.Tuner.can_restore(experiment):
            logger.info("restoring the DNAS sweep in %s", experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, restart_errored=True)
        else:
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
            tuner = tune.Tuner(
                trainable,
                param_space={"beta": tune.grid_search(list(betas)), "seed": tune.grid_search(list(seeds))},
                tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=max_concurrent),
                run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
            )
        grid = tuner.fit()
    order = {(beta, seed): index for index, (beta, seed) in enumerate((b, s) for b in betas for s in seeds)}
    outcomes = sorted((_outcome(result) for result in grid), key=lambda o: order[(o.beta, o.seed)])
    write_json_atomic(experiment / SUMMARY_FILE, {"name": name, "trials": [o.to_dict() for o in outcomes]})
    return outcomes
