"""Export a trained student: a stock Hugging Face folder with provenance, and an ONNX classifier.

ONNX path: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based exporter (the default since torch
2.9; the TorchScript one, ``dynamo=False``, is deprecated), at opset >= 18, with dynamic batch and sequence
axes. With torch 2.13 / transformers 5 it matches torch to about 1e-8 for both eager and SDPA attention, with
one silent pitfall: an all-ones example ``attention_mask`` lets transformers drop the mask while tracing, and
the graph then ignores padding (logits off by about 1e-2), so the example mask used here contains padding.

Integrity: ``distilsearch.json`` records the sha256 of every weights file (``weights_sha256``), and
:func:`load_student` (also used by :func:`export_onnx` on a folder) refuses weights that do not match it.
"""

from __future__ import annotations

import filecmp
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from distilsearch.kdlib.core.atomic import staging_dir
from distilsearch.kdlib.core.hashing import first_mismatch, sha256_file
from distilsearch.kdlib.core.versions import runtime_versions
from distilsearch.kdlib.students.quantization import QuantEmbedding, QuantLinear

PROVENANCE_FILE = "distilsearch.json"
WEIGHTS_HASHES = "weights_sha256"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUT = "logits"
MIN_OPSET = 18
DEFAULT_OPSET = 18


class StudentIntegrityError(ValueError):
    """A student folder's weights are missing or do not match the sha256 recorded in its ``distilsearch.json``."""


def _check_exportable(model: object) -> None:
    if not isinstance(model, PreTrainedModel):
        raise ValueError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, QuantLinear | QuantEmbedding):
            raise ValueError("model has quantization-aware layers; call materialize_quantized(model) first")
        if type(module).__module__.startswith("torch.ao.nn.quantized"):
            raise ValueError(f"model holds a torch.ao quantized module ({type(module).__name__}); export fp32")


def _same_tree(left: Path, right: Path) -> bool:
    """Whether two folders hold the same file names with byte-identical contents."""
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(left / name, right / name) for name in comparison.common_dirs)


def export_student(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    provenance: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Save model, tokenizer and ``json`` (provenance, environment, weights sha256) to ``out_dir`` atomically.

    Everything is written to a temporary folder beside ``out_dir`` and renamed into place, so readers never
    see a partial export. A non-empty ``out_dir`` holding something else is replaced only if
    ``overwrite=True`` (otherwise ``FileExistsError``); an identical re-export is accepted. ``provenance``
    must be JSON-serialisable. Returns the export folder.
    """
    _check_exportable(model)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ValueError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    if not isinstance(provenance, Mapping):
        raise ValueError(f"provenance must be a mapping, got {type(provenance).__name__}")
    record = {"provenance": dict(provenance), "environment": runtime_versions()}
    try:
        json.dumps(record)
    except TypeError as error:
        raise ValueError(f"provenance must be JSON-serialisable: {error}") from error
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir must be a folder, got existing file {out_dir}")
    occupied = out_dir.is_dir() and any(out_dir.iterdir())
    with staging_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record[WEIGHTS_HASHES] = {path.name: sha256_file(path) for path in _weights_files(staging)}
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if occupied and not overwrite and not _same_tree(staging, out_dir):
            raise FileExistsError(f"out_dir {out_dir} holds a different export; pass overwrite=True to replace it")
    return out_dir


def load_provenance(model_dir: str | Path) -> dict[str, Any]:
    """Read the ``distilsearch.json`` record of an exported student."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no {PROVENANCE_FILE}")
    return json.loads(path.read_text())


def _weights_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _student_folder(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path; a ValueError before transformers could mistake it for a hub id."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"student folder {str(model_dir)!r} does not exist (distilsearch never downloads from the hub; "
            "give a local folder)"
        )
    return folder


def verify_student(model_dir: str | Path) -> None:
    """Check every weights file of an exported student against the sha256 recorded in its ``distilsearch.json``.

    Raises :class:`StudentIntegrityError` naming the file (and both hashes) when one is missing, unrecorded or
    different. A folder exported before hashes were recorded (no ``weights_sha256``) passes with a warning that
    its weights are unverified.
    """
    folder = _student_folder(model_dir)
    recorded = load_provenance(folder).get(WEIGHTS_HASHES)
    if recorded is None:
        warnings.warn(
            f"student folder {folder} was exported without weights hashes (an older version); its weights are "
            "unverified",
            stacklevel=2,
        )
        return
    for path in _weights_files(folder):
        if path.name not in recorded:
            raise StudentIntegrityError(f"student weights file {path} is not recorded in {PROVENANCE_FILE}")
    mismatch = first_mismatch(folder, recorded)
    if mismatch is not None:
        path, actual, expected = mismatch
        if actual is None:
            raise StudentIntegrityError(f"student weights file {path} recorded in {PROVENANCE_FILE} is missing")
        raise StudentIntegrityError(
            f"student weights file {path} has sha256 {actual}, but {PROVENANCE_FILE} records {expected}"
        )


def load_student(
    model_dir: str | Path, device: torch.device | str = "cpu", *, eager_attention: bool = False
) -> PreTrainedModel:
    """An exported student in eval mode, after :func:`verify_student` (a mismatch raises, never loads).

    Students exported before weights hashes were recorded still load, with a warning that they are unverified.
    Only local files are read: ``model_dir`` must be an existing folder.
    """
    folder = _student_folder(model_dir)
    verify_student(folder)
    kwargs = {"attn_implementation": "eager"} if eager_attention else {}
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True, **kwargs)
    return model.to(device).eval()


class _LogitsOnly(nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) -> logits, for the exporter."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def export_onnx(
    model_dir_or_model: str | Path | PreTrainedModel, out_path: str | Path, *, opset: int = DEFAULT_OPSET
) -> Path:
    """Write a single-file ONNX graph ``(input_ids, attention_mask, token_type_ids) -> logits``.

    All three inputs are int64 with dynamic ``batch`` and ``sequence`` axes. A folder must exist locally; an
    exported student (one with ``distilsearch.json``) is loaded with :func:`load_student`, so tampered weights raise
    :class:`StudentIntegrityError`, and any other Hugging Face folder with ``AutoModelForSequenceClassification``.
    A model is exported as is (in eval mode, restored after). Returns ``out_path``.
    """
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {newest}], got {opset!r}")
    if isinstance(model_dir_or_model, str | Path):
        folder = _student_folder(model_dir_or_model)
        if (folder / PROVENANCE_FILE).is_file():
            model = load_student(folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    else:
        model = model_dir_or_model
    _check_exportable(model)
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"out_path must end in .onnx, got {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    example = torch.ones(2, 8, dtype=torch.long, device=device)
    mask = example.clone()
    mask[1, 5:] = 0
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in ONNX_INPUTS}
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*axis name: .* will not be used", UserWarning)
            warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)", FutureWarning)
            torch.onnx.export(
                _LogitsOnly(model).eval(),
                (example, mask, torch.zeros_like(example)),
                out_path,
                input_names=list(ONNX_INPUTS),
                output_names=[ONNX_OUTPUT],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
    onnx.checker.check_model(out_path)
    return out_path


def make_onnx_session(onnx_path: str | Path, num_threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with a fixed intra-op thread count and sequential execution."""
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"onnx_path {onnx_path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """Runs an exported ONNX classifier with ONNX Runtime on CPU."""

    def __init__(self, onnx_path: str | Path, num_threads: int = 1) -> None:
        self.session = make_onnx_session(onnx_path, num_threads)
        self.input_names = tuple(node.name for node in self.session.get_inputs())

    def __call__(self, **inputs: torch.Tensor | np.ndarray) -> np.ndarray:
        """Logits for tokenizer-style keyword inputs (torch or numpy); missing type ids default to zeros."""
        if "input_ids" not in inputs:
            raise ValueError(f"inputs must include input_ids, got {sorted(inputs)}")
        arrays = {name: np.asarray(value, dtype=np.int64) for name, value in inputs.items()}
        arrays.setdefault("attention_mask", np.ones_like(arrays["input_ids"]))
        arrays.setdefault("token_type_ids", np.zeros_like(arrays["input_ids"]))
        feed = {name: arrays[name] for name in self.input_names}
        return self.session.run([ONNX_OUTPUT], feed)[0]
