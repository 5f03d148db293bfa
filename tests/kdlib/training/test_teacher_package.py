"""A teacher sent to workers as bytes: the files arrive whole and are checked, a changed file is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from distilsearch.kdlib.core.hashing import sha256_file
from distilsearch.kdlib.training.teacher import MANIFEST, verify_cached_teacher
from distilsearch.kdlib.training.teacher_package import TeacherMismatchError, pack_teacher, unpack_teacher


def test_a_packed_teacher_unpacks_into_the_same_teacher(toy_teacher_and_task, tmp_path: Path) -> None:
    teacher, _ = toy_teacher_and_task
    package = pack_teacher(teacher)
    assert MANIFEST in package.files and "config.json" in package.files
    assert any(name.endswith(".safetensors") for name in package.files)
    unpacked = unpack_teacher(package, tmp_path / "worker" / "teacher")
    assert (unpacked.key, unpacked.task, unpacked.metrics) == (teacher.key, teacher.task, teacher.metrics)
    for name in package.files:
        assert sha256_file(unpacked.path / name) == sha256_file(Path(teacher.path) / name)
    assert verify_cached_teacher(unpacked.path, teacher.key) == verify_cached_teacher(Path(teacher.path), teacher.key)
    mine, theirs = unpacked.load_model().state_dict(), teacher.load_model().state_dict()
    assert mine.keys() == theirs.keys() and all(mine[name].equal(theirs[name]) for name in mine)


def test_a_changed_file_is_refused_naming_it(toy_teacher_and_task, tmp_path: Path) -> None:
    teacher, _ = toy_teacher_and_task
    package = pack_teacher(teacher)
    weights = next(name for name in package.files if name.endswith(".safetensors"))
    data = bytearray(package.files[weights])
    data[-1] ^= 0xFF
    changed = dataclasses.replace(package, files=package.files | {weights: bytes(data)})
    with pytest.raises(TeacherMismatchError, match=f"teacher file {weights} hashes to .*, not the driver's"):
        unpack_teacher(changed, tmp_path / "teacher")
    assert changed.files_sha256 == package.files_sha256, "the identity is the driver's digests, not the bytes sent"


def test_a_folder_without_weights_cannot_be_sent(toy_teacher_and_task, tmp_path: Path) -> None:
    teacher, _ = toy_teacher_and_task
    (tmp_path / "config.json").write_text((Path(teacher.path) / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="holds no safetensors weights"):
        pack_teacher(dataclasses.replace(teacher, path=tmp_path))
