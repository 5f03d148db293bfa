"""Teacher logits on a tokenized set, computed once and cached on disk.

What is cached, and what is not. Logits are tiny: a 10k-example transfer set with 2 classes is
10,000 x 2 x 4 B = 80 KB, so every distillation run of a search that reuses the same teacher and set skips the
teacher entirely when only the prediction-layer loss needs it. Intermediate features are not cached: for the
MiniLM-L6 teacher (hidden 384, 6 layers + embeddings = 7 hidden states, 12 heads) at 64 tokens, the hidden
states alone are 10,000 x 64 x 384 x 7 x 4 B = 6.9 GB per set and the attention maps another
10,000 x 6 x 12 x 64 x 64 x 4 B = 11.8 GB. Reading ~19 GB back every epoch is slower than recomputing them
(a teacher forward is about a third of a teacher training step and runs at thousands of examples per second on
a GPU), and augmented batches change every step, so a cache could not serve them anyway. The distiller therefore
recomputes features with an online teacher forward, only when its configuration needs them.

Cache key: ``sha256(teacher key, content digest of the set, precision, format version)``. The set's identity is
:func:`dataset_digest`, a sha256 of the token columns themselves in row order, rather than ``Dataset._fingerprint``:
the fingerprint changes with ``set_format``/``with_format`` (the same rows read two ways would miss), is random
for sets built while ``datasets`` caching is disabled, and says nothing about content, whereas the digest is the
same for equal rows however they were produced (``load_from_disk``, ``select``, in memory) and costs a few ms per
10k rows. It also covers the maximum length: truncating differently changes the ids, hence the key, while sets
that happen to tokenize identically rightly share logits. ``precision`` is ``bf16`` when the device autocasts
(CUDA) and ``fp32`` otherwise, so CPU and GPU runs never read each other's slightly different logits.

Integrity: each entry's safetensors metadata records the sha256 of the logits' bytes. A flipped bit, a truncated
file or a non-finite value is never used: the entry is recomputed and rewritten, with a warning naming the file.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from distilsearch.kdlib.core.atomic import lock_for, staging_dir
from distilsearch.kdlib.core.device import autocast
from distilsearch.kdlib.core.hashing import sha256_json
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.core.progress import progress_bar
from distilsearch.kdlib.data.batching import evaluation_batches

FORMAT_VERSION = 1
LOGITS_FILE = "logits.safetensors"
HASH_FIELD = "sha256"
TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def dataset_digest(dataset: datasets.Dataset) -> str:
    """sha256 of the token columns of ``dataset`` in row order (each row's length and ids, as int64).

    Independent of the set's format, fingerprint, storage and indices mapping: equal rows give equal digests.
    """
    missing = [column for column in TOKEN_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks the token columns {missing} (columns: {dataset.column_names})")
    table = dataset.with_format("arrow")[:]
    digest = hashlib.sha256(f"rows={len(dataset)}".encode())
    for column in TOKEN_COLUMNS:
        values = table.column(column)
        digest.update(column.encode())
        digest.update(pc.cast(pc.list_value_length(values), pa.int64()).to_numpy().tobytes())
        digest.update(pc.cast(pc.list_flatten(values), pa.int64()).to_numpy().tobytes())
    return digest.hexdigest()


def precision_of(device: torch.device) -> str:
    """``bf16`` when :func:`distilsearch.kdlib.core.device.autocast` casts on ``device``, else ``fp32``."""
    return "bf16" if isinstance(autocast(device), torch.autocast) else "fp32"


def teacher_outputs_key(teacher_key: str, dataset: datasets.Dataset, device: torch.device) -> str:
    """The cache key of the teacher's logits on ``dataset`` (see the module docstring)."""
    if not isinstance(teacher_key, str) or not teacher_key:
        raise ValueError(f"teacher_key must be a non-empty string, got {teacher_key!r}")
    payload = {
        "teacher": teacher_key,
        "data": dataset_digest(dataset),
        "precision": precision_of(device),
        "format": FORMAT_VERSION,
    }
    return sha256_json(payload)[:32]


def teacher_logits(
    teacher_model: nn.Module,
    teacher_key: str,
    dataset: datasets.Dataset,
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = True,
) -> Tensor:
    """The teacher's logits ``(len(dataset), classes)`` (float32, CPU), row-aligned with ``dataset``.

    Read from ``cache_dir("teacher-outputs")`` when present; otherwise computed in eval mode and written
    atomically (a crash leaves no partial entry; concurrent callers wait on a file lock) with the sha256 of the
    logits' bytes in the file's metadata. A cached file that cannot be read, has the wrong row count, holds
    non-finite values or does not match its recorded sha256 is recomputed and rewritten with a warning naming it.
    An entry written before hashes were recorded is checked for shape and finite values, then given its hash.
    ``teacher_key`` must identify the teacher's weights (:attr:`distilsearch.kdlib.training.teacher.Teacher.key`).
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty: there are no teacher logits to compute")
    target = cache_dir("teacher-outputs") / teacher_outputs_key(teacher_key, dataset, device)
    metadata = {"teacher_key": teacher_key, "rows": str(len(dataset)), "precision": precision_of(device)}
    with lock_for(target):
        cached = _read_cached(target / LOGITS_FILE, len(dataset))
        if cached is not None:
            logits, hashed = cached
            if not hashed:
                _write(target, logits, metadata)
            return logits
        logits = _compute_logits(teacher_model, dataset, pad_id, device, batch_size, progress)
        _write(target, logits, metadata)
    return logits


def logits_sha256(logits: Tensor) -> str:
    """Hex sha256 of a float32 CPU tensor's bytes in row-major order."""
    return hashlib.sha256(logits.contiguous().numpy().tobytes()).hexdigest()


def _write(target: Path, logits: Tensor, metadata: dict[str, str]) -> None:
    """Atomically (re)write the cache entry ``target`` with the logits and their sha256."""
    with staging_dir(target) as staging:
        save_file({"logits": logits}, staging / LOGITS_FILE, metadata=metadata | {HASH_FIELD: logits_sha256(logits)})


def _read_cached(path: Path, rows: int) -> tuple[Tensor, bool] | None:
    """The cached logits and whether they carried a (matching) hash; None, with a warning, when they are unusable."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            recorded = (handle.metadata() or {}).get(HASH_FIELD)
            logits = handle.get_tensor("logits")
    except (OSError, SafetensorError, KeyError, ValueError) as error:
        return _unusable(path, f"are unreadable ({error})")
    if logits.dtype != torch.float32 or logits.dim() != 2 or logits.shape[0] != rows:
        return _unusable(path, f"have dtype {logits.dtype} and shape {tuple(logits.shape)}")
    if recorded is not None and (actual := logits_sha256(logits)) != recorded:
        return _unusable(path, f"have sha256 {actual}, but {recorded} was recorded when they were written")
    if not torch.isfinite(logits).all():
        return _unusable(path, "hold non-finite values")
    return logits, recorded is not None


def _unusable(path: Path, problem: str) -> None:
    warnings.warn(f"cached teacher logits {path} {problem}; recomputing them", stacklevel=4)
    return None


@torch.inference_mode()
def _compute_logits(
    model: nn.Module, dataset: datasets.Dataset, pad_id: int, device: torch.device, batch_size: int, progress: bool
) -> Tensor:
    model.eval()
    logits: Tensor | None = None
    total = -(-len(dataset) // batch_size)
    bar = progress_bar(total=total, desc="teacher logits", unit="batch", disable=not progress)
    for indices, batch in evaluation_batches(dataset, batch_size, pad_id):
        inputs = {name: batch[name].to(device) for name in TOKEN_COLUMNS}
        with autocast(device):
            batch_logits = model(**inputs).logits.float().cpu()
        if logits is None:
            logits = torch.empty(len(dataset), batch_logits.shape[-1])
        logits[indices] = batch_logits
        bar.update(1)
    bar.close()
    assert logits is not None
    return logits.contiguous()
