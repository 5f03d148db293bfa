"""A teacher as bytes, so that workers on other machines evaluate with exactly the driver's teacher.

:func:`pack_teacher` reads a built :class:`~distilsearch.kdlib.training.teacher.Teacher`'s model files (weights,
config, tokenizer) and its manifest into a :class:`TeacherPackage` with each file's sha256; :func:`unpack_teacher`
writes them into a worker's own folder, hashes what it wrote and refuses (:class:`TeacherMismatchError`) a teacher
whose files are not the driver's. A worker never fine-tunes a second teacher of its own: two fine-tunings on
different hardware need not give the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilsearch.kdlib.core.hashing import sha256_file, sha256_json
from distilsearch.kdlib.training.teacher import MANIFEST, Teacher
from distilsearch.kdlib.training.teacher_folder import model_file_names


class TeacherMismatchError(RuntimeError):
    """A worker's teacher files are not the driver's."""


@dataclass(frozen=True)
class TeacherPackage:
    """A teacher's files (name -> bytes), their sha256 digests and the driver's identity of the teacher."""

    key: str
    task: str
    metrics: dict[str, Any]
    files: dict[str, bytes]
    digests: dict[str, str]

    @property
    def files_sha256(self) -> str:
        """One hash of every file's name and sha256: the teacher's identity across machines."""
        return sha256_json(self.digests)


def pack_teacher(teacher: Teacher) -> TeacherPackage:
    """``teacher``'s model files and manifest (when it has one) as a :class:`TeacherPackage`."""
    folder = Path(teacher.path)
    names = model_file_names(folder) + ([MANIFEST] if (folder / MANIFEST).is_file() else [])
    if not any(name.endswith(".safetensors") for name in names):
        raise FileNotFoundError(f"teacher folder {folder} holds no safetensors weights to send to workers")
    return TeacherPackage(
        key=teacher.key,
        task=teacher.task,
        metrics=dict(teacher.metrics),
        files={name: (folder / name).read_bytes() for name in names},
        digests={name: sha256_file(folder / name) for name in names},
    )


def unpack_teacher(package: TeacherPackage, folder: Path) -> Teacher:
    """Write ``package``'s files into ``folder`` (created), check every file's sha256 against the driver's and
    return the teacher; :class:`TeacherMismatchError` names the first file that differs."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in package.files.items():
        (folder / name).write_bytes(data)
    written = {name: sha256_file(folder / name) for name in package.files}
    for name, expected in sorted(package.digests.items()):
        if written.get(name) != expected:
            raise TeacherMismatchError(
                f"this worker's teacher file {name} hashes to {written.get(name)}, not the driver's {expected} "
                f"(teacher {package.key[:16]}); it is refused rather than evaluating against another teacher"
            )
    return Teacher(folder, package.key, package.task, dict(package.metrics), from_cache=True, seconds=0.0)
