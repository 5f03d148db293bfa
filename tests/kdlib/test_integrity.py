"""Integrity of what distilsearch reads back: cached logits, student folders, the teacher manifest, extracted assets,
and local model folders that must never be mistaken for hub ids."""

from __future__ import annotations

import json
import re
import socket
import time
import warnings
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import torch
from asset_helpers import make_wheel, register, toy_asset
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertForSequenceClassification

from distilsearch.kdlib.core.hashing import sha256_file
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.data import assets
from distilsearch.kdlib.data.assets import CorruptAssetError, asset_dir, asset_path
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.measure.export import (
    PROVENANCE_FILE,
    StudentIntegrityError,
    export_onnx,
    export_student,
    load_student,
)
from distilsearch.kdlib.measure.scoring import predict_logits
from distilsearch.kdlib.training.finetune import FineTuneRecipe
from distilsearch.kdlib.training.teacher import (
    MANIFEST,
    get_teacher,
    new_classifier,
    resolve_base_dir,
    verify_cached_teacher,
)
from distilsearch.kdlib.training.teacher_outputs import LOGITS_FILE, teacher_logits, teacher_outputs_key

CPU = torch.device("cpu")
RECIPE = FineTuneRecipe(epochs=2, batch_size=16, max_length=16, learning_rate=1e-3)


def flip(path: Path, offset: int, mask: int) -> None:
    """XOR one byte of a file with ``mask`` (one or more flipped bits)."""
    blob = bytearray(path.read_bytes())
    blob[offset] ^= mask
    path.write_bytes(bytes(blob))


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the teacher ran although its logits were cached")


@pytest.fixture
def train_set(toy_task: str, tiny_bert_dir: Path) -> datasets.Dataset:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return tokenize_task(load_task(toy_task, progress=False), tokenizer, 16, progress=False)["train"]


def logits_file(train_set: datasets.Dataset) -> Path:
    return cache_dir("teacher-outputs") / teacher_outputs_key("teacher-a", train_set, CPU) / LOGITS_FILE


# The last four bytes of the file are the last float32 logit (little endian): the first flip changes its lowest
# mantissa bit (a 1e-7 relative error), the second one of its exponent bits (a finite value off by ~1e37).
@pytest.mark.parametrize(("offset", "mask"), [(-4, 0x01), (-1, 0x40)])
def test_a_flipped_bit_in_cached_logits_is_detected_and_rebuilt(
    tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset, offset: int, mask: int
) -> None:
    fresh = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    stored = logits_file(train_set)
    flip(stored, offset, mask)
    with pytest.warns(UserWarning, match=re.escape(str(stored))):
        again = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    assert torch.equal(again, fresh)
    assert torch.equal(again, predict_logits(tiny_teacher, train_set, pad_id=0, device=CPU))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU), fresh)


def test_a_truncated_logits_cache_is_rebuilt(
    tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset
) -> None:
    fresh = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    stored = logits_file(train_set)
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])
    with pytest.warns(UserWarning, match=re.escape(str(stored))):
        again = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    assert torch.equal(again, fresh)


def test_legacy_logits_without_hash_are_checked_for_finite_values(
    tiny_teacher: BertForSequenceClassification, train_set: datasets.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    stored = logits_file(train_set)
    legacy = {"teacher_key": "teacher-a", "rows": str(len(train_set)), "precision": "fp32"}
    broken = fresh.clone()
    broken[3, 1] = float("inf")
    save_file({"logits": broken}, stored, metadata=legacy)
    with pytest.warns(UserWarning, match="non-finite"):
        again = teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU, progress=False)
    assert torch.equal(again, fresh)
    save_file({"logits": fresh}, stored, metadata=legacy)
    monkeypatch.setattr(tiny_teacher, "forward", refuse)
    assert torch.equal(teacher_logits(tiny_teacher, "teacher-a", train_set, pad_id=0, device=CPU), fresh)
    with safe_open(stored, framework="pt") as handle:
        assert "sha256" in (handle.metadata() or {}), "a sound legacy entry is upgraded with its hash"


@pytest.fixture
def student_dir(tiny_teacher: BertForSequenceClassification, tiny_bert_dir: Path, tmp_path: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return export_student(tiny_teacher, tokenizer, tmp_path / "student", {"task": "tiny"})


def test_student_weights_hash_is_recorded_and_checked_on_load(
    student_dir: Path, tiny_teacher: BertForSequenceClassification
) -> None:
    weights = student_dir / "model.safetensors"
    record = json.loads((student_dir / PROVENANCE_FILE).read_text())
    assert record["weights_sha256"] == {"model.safetensors": sha256_file(weights)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        student = load_student(student_dir)
    expected = tiny_teacher.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in student.state_dict().items())


def test_tampered_student_weights_are_refused_naming_the_file(student_dir: Path, tmp_path: Path) -> None:
    weights = student_dir / "model.safetensors"
    recorded = sha256_file(weights)
    flip(weights, -4, 0x01)
    with pytest.raises(StudentIntegrityError) as raised:
        load_student(student_dir)
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert str(weights) in message and recorded in message and sha256_file(weights) in message
    with pytest.raises(StudentIntegrityError, match=re.escape(str(weights))):
        export_onnx(student_dir, tmp_path / "student.onnx")
    assert not (tmp_path / "student.onnx").exists()
    weights.unlink()
    with pytest.raises(StudentIntegrityError, match="missing"):
        load_student(student_dir)


def test_a_student_exported_before_hashes_loads_with_a_warning(student_dir: Path) -> None:
    record_path = student_dir / PROVENANCE_FILE
    record = json.loads(record_path.read_text())
    del record["weights_sha256"]
    record_path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="unverified"):
        student = load_student(student_dir)
    assert isinstance(student, BertForSequenceClassification)


def test_tampered_teacher_metrics_are_detected_and_the_teacher_rebuilt(toy_task: str, tiny_bert_dir: Path) -> None:
    first = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    manifest_path = first.path / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"]["scores"]["test"]["accuracy"] = 0.987654
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert not rebuilt.from_cache
    assert rebuilt.metrics["scores"] == first.metrics["scores"]
    assert verify_cached_teacher(rebuilt.path, rebuilt.key) == rebuilt.metrics


def test_a_legacy_teacher_manifest_is_verified_and_sealed(toy_task: str, tiny_bert_dir: Path) -> None:
    first = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    manifest_path = first.path / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    assert "manifest_sha256" in manifest
    del manifest["manifest_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="an older version"):
        second = get_teacher(toy_task, RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
    assert second.from_cache and second.metrics == first.metrics
    assert "manifest_sha256" in json.loads(manifest_path.read_text())


@pytest.fixture
def toy_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hand-supplied toy asset, extracted once; returns the extracted a.txt."""
    supplied = tmp_path / "supplied"
    supplied.mkdir()
    register(monkeypatch, toy_asset(make_wheel(supplied)))
    monkeypatch.setenv("DISTILSEARCH_ASSET_DIR", str(supplied))
    return asset_path("toy", progress=False) / "a.txt"


def forget_verdicts() -> None:
    """What a new process sees: no asset verified yet."""
    assets._INTACT.clear()


def test_a_tampered_extracted_asset_is_detected_and_re_extracted(toy_extracted: Path) -> None:
    toy_extracted.write_text("alphA")
    forget_verdicts()
    with pytest.warns(UserWarning, match=re.escape(str(toy_extracted))):
        root = asset_path("toy", progress=False)
    assert (root / "a.txt").read_text() == "alpha"


def test_a_tampered_asset_without_its_archive_is_an_error_naming_the_file(
    toy_extracted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "supplied" / assets.ASSETS["toy"].filename).unlink()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    toy_extracted.write_text("tampered")
    forget_verdicts()
    with pytest.raises(CorruptAssetError, match=re.escape(str(toy_extracted))):
        asset_path("toy", fetch=False, progress=False)
    again = "extracting asset 'toy' again"
    with pytest.warns(UserWarning, match=again), pytest.raises(CorruptAssetError, match=re.escape(str(toy_extracted))):
        asset_path("toy", progress=False)
    toy_extracted.unlink()
    with pytest.warns(UserWarning, match=again), pytest.raises(CorruptAssetError, match="missing"):
        asset_path("toy", progress=False)
    assert asset_dir(assets.ASSETS["toy"]).is_dir()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Hub offline mode off (as when HF_HUB_OFFLINE is unset) and every socket connection recorded and refused."""
    attempts: list[object] = []

    def refuse_connection(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network is off in this test")

    def refuse_lookup(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket.socket, "connect", refuse_connection)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    return attempts


@pytest.mark.parametrize("value", ["not-a-folder", "bert-base-uncased"])
def test_a_base_that_is_not_a_folder_fails_fast_without_network(
    toy_task: str, no_network: list[object], value: str
) -> None:
    expected = re.escape(f"base model folder {value!r} does not exist")
    started = time.perf_counter()
    with pytest.raises(ValueError, match=expected):
        get_teacher(toy_task, RECIPE, base_dir=Path(value), device="cpu", progress=False)
    with pytest.raises(ValueError, match=expected):
        new_classifier(Path(value), ("negative", "positive"))
    with pytest.raises(ValueError, match=expected):
        resolve_base_dir(value)
    with pytest.raises(ValueError, match=re.escape(f"student folder {value!r} does not exist")):
        export_onnx(value, Path("unused.onnx"))
    assert time.perf_counter() - started < 2.0
    assert no_network == []


def test_a_base_that_is_a_file_is_rejected(tmp_path: Path, no_network: list[object]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a folder"):
        resolve_base_dir(weights)
    assert resolve_base_dir(tmp_path) == tmp_path
    assert no_network == []
