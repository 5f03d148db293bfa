"""A teacher the user brings: a local, fine-tuned Hugging Face sequence classifier of a supported family.

The folder must hold ``config.json``, safetensors weights with a trained classification head, and the model's own
tokenizer. Its identity (:func:`folder_teacher_key`) is the sha256 of those files' bytes plus the task's data
fingerprint, so a changed file or other data is another teacher. Its accuracy on the task's validation, test and OOD
sets is measured once and cached under ``$DISTILSEARCH_HOME/teacher-scores``; the folder itself is read in place, never
copied or written to.

Labels: the teacher's ``id2label`` must name the task's labels in the task's order (compared case-insensitively), or
be the generic ``LABEL_0 .. LABEL_{K-1}`` that ``transformers`` writes when no names were given (then label ``i`` of
the data is taken to be ``LABEL_i``). :func:`load_task_for_teacher` puts user data's labels in the teacher's order.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from distilsearch.kdlib.core.atomic import lock_for, write_json_atomic
from distilsearch.kdlib.core.device import select_device
from distilsearch.kdlib.core.hashing import sha256_file, sha256_json
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.data.batching import pad_token_id
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.measure.scoring import labels_of, majority_label, score_sets
from distilsearch.kdlib.students.families import UnsupportedModelError, family_of, usable_positions
from distilsearch.kdlib.training.recipe import FineTuneRecipe
from distilsearch.kdlib.training.teacher import Teacher, get_teacher

if TYPE_CHECKING:
    from distilsearch.kdlib.data.user_data import DataSpec

FORMAT_VERSION = 1
GENERIC_LABEL = re.compile(r"LABEL_(\d+)")
TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json")
DEFAULT_MAX_LENGTH = FineTuneRecipe().max_length


class TeacherFolderError(ValueError):
    """A teacher folder that cannot serve as a teacher: missing files, another family, labels that do not match."""


def check_teacher_folder(folder: str | Path) -> Path:
    """``folder`` as a Path after checking it is a local folder with ``config.json`` and safetensors weights."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise TeacherFolderError(
            f"teacher folder {str(folder)!r} does not exist (distilsearch never downloads a teacher from the hub; "
            "give a local folder written by save_pretrained)"
        )
    if not path.is_dir():
        raise TeacherFolderError(f"teacher path {str(folder)!r} is a file; give the folder written by save_pretrained")
    if not (path / "config.json").is_file():
        raise TeacherFolderError(f"teacher folder {path} has no config.json (not a save_pretrained folder)")
    if not any(path.glob("*.safetensors")):
        raise TeacherFolderError(
            f"teacher folder {path} has no .safetensors weights (distilsearch loads no pickled weights; re-save it "
            "with model.save_pretrained(folder), which writes safetensors)"
        )
    return path


def teacher_config(folder: Path) -> PretrainedConfig:
    """The teacher's config after checking it is a sequence classifier of a supported family."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    try:
        family_of(config)
    except UnsupportedModelError as error:
        raise TeacherFolderError(f"teacher folder {folder}: {error}") from None
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise TeacherFolderError(
            f"teacher folder {folder} holds {', '.join(architectures) or 'no recorded architecture'}, not a "
            "fine-tuned *ForSequenceClassification model; pass a base encoder as --base to fine-tune a teacher on "
            "the task"
        )
    return config


def teacher_label_names(config: PretrainedConfig) -> tuple[str, ...] | None:
    """The teacher's label names in id order, or None when they are transformers' generic ``LABEL_i``."""
    names = tuple(str(config.id2label[index]) for index in range(config.num_labels))
    generic = all((match := GENERIC_LABEL.fullmatch(name)) and int(match.group(1)) == i for i, name in enumerate(names))
    return None if generic else names


def check_labels(folder: Path, config: PretrainedConfig, task: TaskData) -> str | None:
    """Raise TeacherFolderError when the teacher's labels do not match the task's (count, names or order);
    return a note when the teacher's labels are generic and are matched by position."""
    names = teacher_label_names(config)
    shown = ", ".join(names) if names else ", ".join(f"LABEL_{i}" for i in range(config.num_labels))
    data = ", ".join(task.label_names)
    if config.num_labels != task.num_labels:
        raise TeacherFolderError(
            f"teacher {folder} has {config.num_labels} labels ({shown}) but task {task.name!r} has "
            f"{task.num_labels} ({data})"
        )
    if names is None:
        return f"the teacher's labels are generic ({shown}): LABEL_i is taken to be the data's label i ({data})"
    folded, wanted = [name.casefold() for name in names], [name.casefold() for name in task.label_names]
    if folded != wanted:
        order = " (the same labels in another order)" if sorted(folded) == sorted(wanted) else ""
        raise TeacherFolderError(
            f"teacher {folder} labels ({shown}) do not match task {task.name!r} labels ({data}){order}"
        )
    return None


def load_task_for_teacher(source: str | DataSpec, folder: str | Path | None, *, progress: bool = True) -> TaskData:
    """The task ``source`` (a registered name or user data); user data whose labels are the teacher's in another
    order, and that names no label order itself, is loaded again in the teacher's order."""
    task = load_task(source, progress=progress)
    if folder is None or isinstance(source, str) or source.label_names is not None:
        return task
    names = teacher_label_names(teacher_config(check_teacher_folder(folder)))
    if names is None or sorted(map(str.casefold, names)) != sorted(map(str.casefold, task.label_names)):
        return task
    spelled = {name.casefold(): name for name in task.label_names}
    ordered = tuple(spelled[name.casefold()] for name in names)
    if ordered == task.label_names:
        return task
    return load_task(source.model_copy(update={"label_names": ordered}), progress=progress)


def model_file_names(folder: Path) -> list[str]:
    """The names of the files in ``folder`` that make a model: weights, config and tokenizer, sorted."""
    return sorted(
        path.name
        for path in folder.iterdir()
        if path.is_file()
        and (
            path.suffix == ".safetensors"
            or path.name in ("config.json", "model.safetensors.index.json", *TOKENIZER_FILES)
            or path.name.startswith("tokenizer")
            or path.suffix == ".model"
        )
    )


def folder_teacher_key(folder: Path, task: TaskData) -> str:
    """sha256 of the teacher's weights, config and tokenizer files and of the task's data fingerprint."""
    names = model_file_names(folder)
    return sha256_json(
        {
            "files": {name: sha256_file(folder / name) for name in names},
            "data": task.fingerprint,
            "format": FORMAT_VERSION,
        }
    )


def load_teacher_folder(
    folder: str | Path,
    task: TaskData,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: str = "auto",
    progress: bool = True,
) -> Teacher:
    """The user's fine-tuned teacher in ``folder`` for ``task``, with its accuracy on the task's sets (measured once
    per folder content, data and ``max_length``, then read from the cache)."""
    started = time.perf_counter()
    path = check_teacher_folder(folder)
    config = teacher_config(path)
    note = check_labels(path, config, task)
    if max_length > usable_positions(config):
        raise TeacherFolderError(
            f"max_length={max_length} is above the {usable_positions(config)} positions of the teacher in {path}"
        )
    key = folder_teacher_key(path, task)
    scores_key = sha256_json(
        {"teacher": key, "ood": task.ood_fingerprints, "ood_dev": task.ood_dev_fingerprints, "max_length": max_length}
    )
    cached = cache_dir("teacher-scores") / f"{task.name}-{scores_key[:24]}.json"
    with lock_for(cached):
        metrics = _read_scores(cached, scores_key)
        from_cache = metrics is not None
        if metrics is None:
            metrics = _score(path, task, max_length, select_device(device), progress)
            metrics["notes"] = dict(task.notes) | ({"teacher labels": note} if note else {})
            write_json_atomic(cached, {"key": scores_key, "teacher": str(path), "metrics": metrics})
    return Teacher(path, key, task.name, metrics, from_cache, time.perf_counter() - started)


def _read_scores(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"cached teacher scores {path} are unreadable ({error}); measuring again", stacklevel=3)
        return None
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("metrics"), dict):
        warnings.warn(f"cached teacher scores {path} do not match this teacher; measuring again", stacklevel=3)
        return None
    return stored["metrics"]


def _score(folder: Path, task: TaskData, max_length: int, device: torch.device, progress: bool) -> dict[str, Any]:
    """The teacher's accuracy (and the majority baseline) on every evaluation set of ``task``."""
    started = time.perf_counter()
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, use_safetensors=True, output_loading_info=True
    )
    if loading["missing_keys"]:
        missing = ", ".join(sorted(loading["missing_keys"])[:4])
        raise TeacherFolderError(
            f"teacher folder {folder} lacks trained weights for {missing}: it is not a fine-tuned classifier (pass a "
            "base encoder as --base to fine-tune a teacher)"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    sets = tokenize_task(task, tokenizer, max_length, progress=progress)
    majority = majority_label(labels_of(sets["train"]))
    scores = score_sets(
        model.to(device),
        {name: data for name, data in sets.items() if name != "train"},
        majority=majority,
        pad_id=pad_token_id(tokenizer),
        device=device,
    )
    return {
        "task": task.name,
        "source": "folder",
        "scores": scores,
        "train_examples": len(sets["train"]),
        "majority_label": task.label_names[majority],
        "max_length": max_length,
        "eval_seconds": round(time.perf_counter() - started, 2),
    }


def teacher_for(
    task: TaskData,
    *,
    folder: str | Path | None = None,
    base_dir: Path | None = None,
    recipe: FineTuneRecipe | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Teacher:
    """The teacher of ``task``: the user's fine-tuned ``folder`` when given, else one fine-tuned from ``base_dir``
    (default: the embedded MiniLM) with ``recipe`` and cached."""
    if folder is None:
        return get_teacher(task, recipe, base_dir=base_dir, device=device, progress=progress)
    if base_dir is not None:
        raise TeacherFolderError(
            "give either a fine-tuned teacher folder (--teacher) or a base model (--base), not both"
        )
    max_length = recipe.max_length if recipe is not None else DEFAULT_MAX_LENGTH
    return load_teacher_folder(folder, task, max_length=max_length, device=device, progress=progress)
