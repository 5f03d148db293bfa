"""``distilsearch search`` (run or resume a search into a run folder) and ``distilsearch export`` (save a frontier
student)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from tqdm.auto import tqdm
from transformers import AutoConfig

from distilsearch.envs.evaluators import Evaluator, SurrogateEvaluator, TableEvaluator
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.ray_evaluator import RayEvaluator
from distilsearch.envs.rewards import Reward, make_reward
from distilsearch.envs.space import DEFAULT_FIXED, SearchSpace
from distilsearch.envs.store import EvaluationStore, StoreError, evaluation_key
from distilsearch.kdlib.data.assets import AssetError
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.training.teacher import get_teacher, resolve_base_dir
from distilsearch.search.agents import make_agent
from distilsearch.search.agents.base import Agent
from distilsearch.search.budget import HISTORY_FILE, BudgetedEvaluator, Evaluation
from distilsearch.search.cli.console import JsonFlag, console, fail
from distilsearch.search.cli.pareto import STORE_FILE, pareto
from distilsearch.search.destinations import check_folder_destination
from distilsearch.search.dnas.tune import NoRoomForTrials
from distilsearch.search.pareto import frontier, frontier_table, most_trained
from distilsearch.search.run_config import CONFIG_FILE, SearchConfig
from distilsearch.search.run_lock import HOLDER_FILE, LOCK_FILE, RunLock, RunLocked

FRONTIER_CSV = "frontier.csv"
LOG_FILE = "search.log"
FRONTIER_OBJECTIVES = ("accuracy", "latency")
START_FILES = frozenset(
    {CONFIG_FILE, LOG_FILE, HISTORY_FILE, STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", LOCK_FILE, HOLDER_FILE}
)


def _settings(config_file: Path | None, given: dict[str, Any]) -> SearchConfig:
    """The config file's settings overridden by the flags that were given."""
    try:
        base = SearchConfig.load(config_file).model_dump() if config_file else {}
        return SearchConfig(**(base | {name: value for name, value in given.items() if value is not None}))
    except (ValidationError, ValueError, OSError) as error:
        fail(str(error))


def _nothing_spent(run_dir: Path) -> bool:
    """True when the run folder holds only what a start writes (settings, log, lock, an empty store and ledger)."""
    if any(path.name not in START_FILES for path in run_dir.iterdir()):
        return False
    ledger = run_dir / HISTORY_FILE
    if ledger.is_file() and len(ledger.read_text(encoding="utf-8", errors="replace").splitlines()) > 1:
        return False
    store = run_dir / STORE_FILE
    try:
        return not store.is_file() or len(EvaluationStore(store, create=False)) == 0
    except StoreError:
        return False


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a run folder that is a file, or a folder of something other than a search run."""
    if run_dir.exists() and not run_dir.is_dir():
        fail(f"--out {run_dir} is a file, not a run folder")
    if run_dir.is_dir() and not (run_dir / CONFIG_FILE).exists() and not _nothing_spent(run_dir):
        fail(f"run folder {run_dir} is not empty and holds no {CONFIG_FILE}; refusing to write into it")


def _save_settings(config: SearchConfig, run_dir: Path, log: logging.Logger) -> None:
    """Write ``config.yaml``, or check that the run was started with compatible settings.

    A run that has spent nothing (a start that failed) takes the new settings.
    """
    saved = run_dir / CONFIG_FILE
    if saved.is_file():
        try:
            differences = SearchConfig.load(saved).differences(config)
        except ValueError as error:
            fail(f"{error}; restore the run's {CONFIG_FILE} or use another --out")
        if differences and not _nothing_spent(run_dir):
            fail(
                f"run folder {run_dir} was started with other settings ({'; '.join(differences)}); "
                "use another --out, or the same settings to resume"
            )
        if differences:
            log.info("run folder held no evaluations; starting it afresh with new settings: %s", "; ".join(differences))
    config.save(run_dir)


def _restore_store(budgeted: BudgetedEvaluator, store: EvaluationStore, log: logging.Logger) -> int:
    """Write into the store every ledger entry it lacks (a crash between the two writes, or a deleted store)."""
    restored = 0
    for entry in budgeted.entries():
        key = evaluation_key(entry.result.candidate, budgeted.task, budgeted.teacher_key, entry.fidelity)
        if key not in store:
            store.put(key, entry.result, task=budgeted.task, teacher_key=budgeted.teacher_key, fidelity=entry.fidelity)
            restored += 1
    if restored:
        log.info("restored %d store row(s) from the ledger", restored)
        console.print(f"restored {restored} evaluation(s) missing from {store.path} from the ledger", highlight=False)
    return restored


def _evaluator(config: SearchConfig, run_dir: Path, store: EvaluationStore) -> Evaluator:
    if config.backend in ("table", "surrogate"):
        if config.table is None:
            fail(f"--backend {config.backend} needs --table PATH (a benchmark table written by envs.evaluators)")
        table = TableEvaluator(config.table)
        return SurrogateEvaluator.from_table(table) if config.backend == "surrogate" else table
    if config.workers > 1 or config.ray_address:
        return RayEvaluator(
            config.task,
            num_workers=config.workers,
            run_dir=run_dir,
            store_path=run_dir / STORE_FILE,
            fidelity=config.fidelity,
            address=config.ray_address,
            num_gpus_per_eval=config.gpus_per_eval,
            base_dir=config.base,
        )
    return LiveEvaluator(config.task, fidelity=config.fidelity, store=store, base_dir=config.base, progress=False)


def _space(config: SearchConfig) -> SearchSpace:
    """The space YAML (or the teacher's default space) with the run's deployment limits replacing its own."""
    if config.space is not None:
        return SearchSpace.from_yaml(config.space).with_limits(config.limits())
    teacher_config = AutoConfig.from_pretrained(resolve_base_dir(config.base), local_files_only=True)
    fixed = DEFAULT_FIXED | {"max_length": config.max_length}
    return SearchSpace.default_for(teacher_config, fixed=fixed, limits=config.limits())


def search(
    task: Annotated[str | None, typer.Option(help="Task name (default rt-polarity).")] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="random, evolution, ppo, maskable-ppo, dnas, successive-halving, hyperband or mo-asha."),
    ] = None,
    budget: Annotated[int | None, typer.Option(help="Budget to spend, in --budget-unit (default 8).")] = None,
    budget_unit: Annotated[
        str | None,
        typer.Option(help="evaluations (each new request costs 1; default) or steps (its training steps)."),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="live (distil for real), table or surrogate.")] = None,
    fidelity: Annotated[
        str | None, typer.Option(help="Training budget per evaluation: low, medium, high, full.")
    ] = None,
    reward: Annotated[str | None, typer.Option(help="weighted, mnasnet or constrained.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parallel live evaluations on Ray; agents propose this many at a time.")
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join a Ray cluster ('auto' or ray://...).")] = None,
    gpus_per_eval: Annotated[float | None, typer.Option(help="GPUs per evaluation on Ray.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the agent.")] = None,
    table: Annotated[Path | None, typer.Option(help="Benchmark table (table / surrogate backends).")] = None,
    space: Annotated[Path | None, typer.Option(help="Search space YAML (default: derived from the teacher).")] = None,
    base: Annotated[Path | None, typer.Option(help="Local base model for the teacher (default: MiniLM).")] = None,
    min_speedup: Annotated[
        float | None, typer.Option(help="Least FLOPs speed-up over the teacher at batch 1 x 64 (e.g. 3).")
    ] = None,
    max_params: Annotated[float | None, typer.Option(help="Most parameters of a student (e.g. 5e6).")] = None,
    max_size_mb: Annotated[float | None, typer.Option(help="Most MB (10^6 bytes) of a student's weights.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default results/runs/<task>-<agent>-...).")] = None,
    config: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="YAML with these settings.")] = None,
) -> None:
    """Run a search into a run folder; the same command again resumes it (nothing evaluated twice)."""
    given = {
        "task": task,
        "agent": agent,
        "budget": budget,
        "budget_unit": budget_unit,
        "backend": backend,
        "fidelity": fidelity,
        "reward": reward,
        "workers": workers,
        "ray_address": ray_address,
        "gpus_per_eval": gpus_per_eval,
        "seed": seed,
        "table": table,
        "space": space,
        "base": base,
        "min_speedup": min_speedup,
        "max_params": max_params,
        "max_size_mb": max_size_mb,
        "out": out,
    }
    settings = _settings(config, given)
    try:
        chosen_reward = make_reward(settings.reward, **settings.reward_options)
        chosen_agent = make_agent(settings.agent, **settings.agent_options)
        search_space = _space(settings)
    except (AssetError, ValueError, OSError) as error:
        fail(str(error))
    run_dir = settings.run_dir()
    _check_run_dir(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(run_dir):
            _run(settings, run_dir, chosen_agent, chosen_reward, search_space)
    except RunLocked as error:
        fail(str(error))
    except OSError as error:
        fail(f"search in {run_dir} stopped: {error}")
    except BaseException:
        if created and run_dir.is_dir() and _nothing_spent(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_log(run_dir: Path) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger("distilsearch.search")
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


def _run(settings: SearchConfig, run_dir: Path, agent: Agent, reward: Reward, space: SearchSpace) -> None:
    """The search itself, holding the run folder's lock: settings, evaluator, ledger, agent, frontier."""
    log, handler = _run_log(run_dir)
    try:
        _save_settings(settings, run_dir, log)
        _search_locked(settings, run_dir, agent, reward, space, log)
    finally:
        log.removeHandler(handler)
        handler.close()


def _search_locked(
    settings: SearchConfig, run_dir: Path, agent: Agent, reward: Reward, space: SearchSpace, log: logging.Logger
) -> None:
    try:
        store = EvaluationStore(run_dir / STORE_FILE)
        evaluator = _evaluator(settings, run_dir, store)
    except (AssetError, ValueError, OSError, StoreError) as error:
        fail(str(error))
    if evaluator.task != settings.task:
        fail(f"the {settings.backend} backend holds task {evaluator.task!r}, not the run's task {settings.task!r}")
    if settings.budget_unit == "evaluations" and settings.budget > space.num_valid():
        console.print(
            f"note: the budget of {settings.budget} evaluations is above the {space.num_valid()} valid candidates "
            "of the space; the rest will stay unspent",
            highlight=False,
        )
    unit = "eval" if settings.budget_unit == "evaluations" else "step"
    bar = tqdm(total=settings.budget, desc=f"{settings.agent} budget", unit=unit)

    def record(entry: Evaluation) -> None:
        result = entry.result
        key = evaluation_key(result.candidate, evaluator.task, evaluator.teacher_key, entry.fidelity)
        store.put(key, result, task=evaluator.task, teacher_key=evaluator.teacher_key, fidelity=entry.fidelity)
        log.info(
            "evaluation %d at %s (cost %d %s, %.1f s): %s %s validation_accuracy=%s reward=%.4f",
            entry.index,
            entry.fidelity,
            entry.cost,
            settings.budget_unit,
            result.train_seconds or 0.0,
            result.candidate.summary(),
            result.status,
            result.validation_accuracy,
            entry.reward,
        )
        bar.update(entry.cost)
        best = budgeted.best
        if best is not None:
            bar.set_postfix(best_reward=f"{best.reward:.3f}", best_val=f"{best.result.validation_accuracy or 0:.3f}")

    try:
        budgeted = BudgetedEvaluator(
            evaluator,
            settings.budget,
            record,
            reward=reward,
            history_path=run_dir / HISTORY_FILE,
            unit=settings.budget_unit,
        )
        _restore_store(budgeted, store, log)
    except (ValueError, StoreError) as error:
        bar.close()
        fail(str(error))
    bar.update(budgeted.spent)
    log.info("search started: %s (already spent %d of %d)", settings.model_dump_json(), budgeted.spent, settings.budget)
    try:
        agent.run(budgeted, space, run_dir, seed=settings.seed)
    except (NoRoomForTrials, ValueError, StoreError) as error:
        log.exception("search stopped by an error")
        fail(f"{error} (details in {run_dir / LOG_FILE})")
    finally:
        bar.close()
        if isinstance(evaluator, RayEvaluator):
            evaluator.shutdown()
        trained = getattr(evaluator, "distillations", None)
        seconds = sum(result.train_seconds or 0.0 for result in budgeted.results())
        spent = f"{budgeted.spent} of {budgeted.budget} {settings.budget_unit} on {len(budgeted)} evaluations"
        log.info("search stopped: %s (%.0f s of training); distillations in this process: %s", spent, seconds, trained)
    console.print(f"spent {spent} ({seconds:.0f} s of training)", highlight=False)
    if budgeted.remaining:
        console.print(
            f"note: {budgeted.remaining} {settings.budget_unit} left unspent: {_why_unspent(budgeted, space)}"
        )
    results = most_trained(row.result for row in store.rows(task=settings.task))
    frontier_table(results, FRONTIER_OBJECTIVES).to_csv(run_dir / FRONTIER_CSV, index=False)
    pareto(run_dir, objectives=",".join(FRONTIER_OBJECTIVES), compare=None, json_output=False, reference=None)


def _why_unspent(budgeted: BudgetedEvaluator, space: SearchSpace) -> str:
    evaluated = {entry.candidate.content_hash() for entry in budgeted.entries()}
    if len(evaluated) >= space.num_valid():
        return f"every one of the {space.num_valid()} valid candidates of the space was evaluated"
    if budgeted.unit == "steps":
        return "the agent's next request cost more steps than were left"
    return "the agent stopped before spending it (see the run's search.log)"


def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A search run folder.", show_default=False)],
    rank: Annotated[int, typer.Option(min=1, help="1 = the most accurate frontier student.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Destination (default RUN_DIR/students/rank-K).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a destination that exists and is not empty.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Save the rank-K student of a run's (accuracy, latency) frontier: it is distilled again, deterministically."""
    if not (run_dir / CONFIG_FILE).is_file():
        fail(f"{run_dir} is not a search run folder (no {CONFIG_FILE})")
    destination = out or run_dir / "students" / f"rank-{rank}"
    try:
        settings = SearchConfig.load(run_dir / CONFIG_FILE)
        check_folder_destination(destination, force=force, protected=[run_dir])
        rows = EvaluationStore(run_dir / STORE_FILE, create=False).rows(task=settings.task)
    except (ValueError, StoreError, OSError) as error:
        fail(str(error))
    members = frontier(most_trained(row.result for row in rows), FRONTIER_OBJECTIVES)
    if rank > len(members):
        fail(f"rank {rank} is beyond the frontier of {run_dir}, which has {len(members)} students")
    chosen = members[rank - 1]
    try:
        teacher = get_teacher(settings.task, base_dir=settings.base, progress=not json_output)
        evaluator = StudentEvaluator(teacher, load_task(settings.task, progress=False), progress=not json_output)
    except (AssetError, ValueError, OSError) as error:
        fail(str(error))
    result = evaluator.evaluate(chosen.candidate, out_dir=destination)
    if result.status != "ok":
        fail(f"re-distilling rank {rank} ({chosen.candidate.summary()}) {result.status}: {result.error}")
    if json_output:
        print(result.model_dump_json(indent=2))
        return
    console.print(
        f"rank {rank}: {chosen.candidate.summary()} — stored validation accuracy {chosen.validation_accuracy:.4f}, "
        f"re-distilled {result.validation_accuracy:.4f} (test {result.accuracy:.4f}); saved to {result.student_path}",
        highlight=False,
    )
