"""Turn a Candidate into an EvalResult: cut, (trim, quantize), distil, score, time, measure and export a student.

:class:`StudentEvaluator` loads the teacher, its tokenizer and the task once and keeps them (with the tokenized
sets, the cached teacher logits and the teacher's latency) across candidates: a search worker builds one and calls
:meth:`StudentEvaluator.evaluate` many times.

Weight bits. ``32``: fp32. ``8``: FastFormers-style post-training int8 dynamic quantization of the linear layers;
accuracy and latency are those of the int8 model on CPU (its real kernels). Both train the same fp32 student, so the
evaluator keeps the last one it trained and deploys it again when its twin (the same candidate with the other of these
two widths, at the same rung) comes next, as deployment does: no second training; the result's provenance names the
twin under ``"trained_with"`` and its ``train_seconds`` are the twin's. ``2``: TernaryBERT-style ternary
weights trained with KD through a straight-through estimator; the reported size is the packed 2-bit size, while
latency is measured on the materialized fp32 weights, since PyTorch has no ternary kernels.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from distilsearch.kdlib.core.device import describe_device, select_device
from distilsearch.kdlib.core.versions import runtime_versions
from distilsearch.kdlib.data.augmentation import Substitutions, word_neighbours
from distilsearch.kdlib.data.batching import DynamicPadding, pad_token_id
from distilsearch.kdlib.data.general_corpus import CORPUS_NAME, CORPUS_VERSION, tokenized_general_corpus
from distilsearch.kdlib.data.task_registry import TaskData
from distilsearch.kdlib.data.tokenization import tokenize_task
from distilsearch.kdlib.data.transfer_sets import tokenized_transfer_set
from distilsearch.kdlib.measure.export import export_student
from distilsearch.kdlib.measure.flops import bert_flops, theoretical_speedup
from distilsearch.kdlib.measure.footprint import count_parameters, peak_forward_memory_bytes, size_on_disk
from distilsearch.kdlib.measure.latency import LatencyProtocol, LatencyStats, measure_latency
from distilsearch.kdlib.measure.scoring import accuracy, labels_of, predict_logits
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.kdlib.students.cutting import cut_student, importance_needed, trim_vocabulary
from distilsearch.kdlib.students.quantization import (
    apply_weight_quantization,
    materialize_quantized,
    quantize_int8_dynamic,
    quantized_size_bytes,
)
from distilsearch.kdlib.students.specs import KDConfig
from distilsearch.kdlib.students.vocabulary import MappedInputs, vocabulary_map
from distilsearch.kdlib.training.distiller import DistillationOutcome, distill, transfer_rows_per_batch
from distilsearch.kdlib.training.teacher import Teacher
from distilsearch.kdlib.training.teacher_outputs import teacher_logits

CALIBRATION_EXAMPLES = 64
OOD_TEST = "ood/"
OOD_DEV = "ood-dev/"
DEFAULT_LATENCY = LatencyProtocol(points=((1, 64), (32, 128)), warmup=3, repeats=15, num_threads=1)
SHARED_TRAINING_BITS = (32, 8)
"""Weight widths whose students train identically (8 is quantized after training), so one training serves both."""


@dataclass
class _Trained:
    """The last fp32 student trained for a weight width of :data:`SHARED_TRAINING_BITS`."""

    key: str
    candidate_hash: str
    student: PreTrainedModel
    outcome: DistillationOutcome
    train_seconds: float


def _training_key(candidate: Candidate, stop_after: int | None) -> str:
    """What determines the trained fp32 weights: the candidate at 32 bits and the rung."""
    fp32 = candidate.model_copy(update={"spec": candidate.spec.model_copy(update={"weight_bits": 32})})
    return f"{fp32.content_hash()}@{stop_after}"


class StudentEvaluator:
    """Evaluates candidates against one teacher on one task, reusing everything that does not depend on them.

    Latency depends on the architecture alone (the spec: sizes, weight bits, vocabulary), never on the training, so it
    is measured once per spec and device and reused: the rungs and recipes of one architecture share it. The teacher's
    is measured once, or, with ``remeasure_teacher_latency``, again right before each student's (for long runs on a
    machine whose load changes: every speed-up then compares two measurements taken side by side).
    """

    def __init__(
        self,
        teacher: Teacher,
        task: TaskData,
        *,
        device: str = "auto",
        latency: LatencyProtocol = DEFAULT_LATENCY,
        latency_device: str = "cpu",
        progress: bool = True,
        remeasure_teacher_latency: bool = False,
    ) -> None:
        if task.name != teacher.task:
            raise ValueError(f"task {task.name!r} does not match the teacher's task {teacher.task!r}")
        self.teacher = teacher
        self.task = task
        self.device = select_device(device)
        self.latency_protocol = latency
        self.latency_device = select_device(latency_device)
        self.progress = progress
        self.remeasure_teacher_latency = remeasure_teacher_latency
        self.tokenizer = teacher.load_tokenizer()
        self.pad_id = pad_token_id(self.tokenizer)
        self.teacher_model = teacher.load_model(self.device, eager_attention=True)
        self.teacher_config = self.teacher_model.config
        self._sets: dict[int, dict] = {}
        self._general: dict[int, datasets.Dataset] = {}
        self._transfer: dict[int, tuple[datasets.Dataset, torch.Tensor]] = {}
        self._substitutions: Substitutions | None = None
        self._teacher_scores: dict[int, dict[str, float]] = {}
        self._teacher_latency: dict[str, dict[tuple[int, int], LatencyStats]] = {}
        self._student_latency: dict[tuple[str, str], list[LatencyPoint]] = {}
        self._last_trained: _Trained | None = None

    def tokenized(self, max_length: int) -> dict:
        """The task's tokenized sets at ``max_length`` (cached on disk and in memory)."""
        if max_length not in self._sets:
            self._sets[max_length] = tokenize_task(self.task, self.tokenizer, max_length, progress=self.progress)
        return self._sets[max_length]

    def general_set(self, kd: KDConfig) -> datasets.Dataset | None:
        """The tokenized set ``kd``'s general stage trains on: None (the task's train set) unless a general stage runs
        on ``general-en`` (tokenized once per length, cached on disk and in memory)."""
        if kd.general_distillation_steps == 0 or kd.general_corpus != CORPUS_NAME:
            return None
        if kd.max_length not in self._general:
            self._general[kd.max_length] = tokenized_general_corpus(
                self.task, self.tokenizer, kd.max_length, progress=self.progress
            )
        return self._general[kd.max_length]

    def transfer(self, kd: KDConfig) -> tuple[datasets.Dataset, torch.Tensor] | None:
        """The task's tokenized transfer set at ``kd.max_length`` and its cached teacher logits when ``kd`` mixes it
        in (``transfer_ratio`` > 0), else None; :class:`NoTransferSetError` for a task without one."""
        if kd.transfer_ratio == 0:
            return None
        if kd.max_length not in self._transfer:
            rows = tokenized_transfer_set(self.task, self.tokenizer, kd.max_length, progress=self.progress)
            self._transfer[kd.max_length] = (rows, self.teacher_logits_for(rows))
        return self._transfer[kd.max_length]

    def substitutions(self, kd: KDConfig) -> Substitutions | None:
        """The teacher's word neighbours when ``kd`` augments by substitution (computed once per evaluator)."""
        if kd.augmentation != "substitute":
            return None
        if self._substitutions is None:
            vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(self.teacher_config.vocab_size)))
            tokens = [token if isinstance(token, str) else "" for token in vocabulary]
            self._substitutions = word_neighbours(self.teacher_model.get_input_embeddings().weight.cpu(), tokens)
        return self._substitutions

    def teacher_scores(self, max_length: int) -> dict[str, float]:
        """The teacher's accuracy on validation, test and every OOD half at ``max_length`` (from cached teacher
        logits)."""
        if max_length not in self._teacher_scores:
            sets = self.tokenized(max_length)
            self._teacher_scores[max_length] = {
                name: accuracy(self.teacher_logits_for(sets[name]), labels_of(sets[name]))
                for name in sets
                if name != "train"
            }
        return self._teacher_scores[max_length]

    def majority_rate(self, max_length: int, split: str) -> float:
        """Accuracy on ``split`` of always answering the training set's most frequent label."""
        sets = self.tokenized(max_length)
        majority = int(torch.bincount(labels_of(sets["train"])).argmax())
        return float((labels_of(sets[split]) == majority).float().mean())

    def teacher_latency(self, device: torch.device) -> dict[tuple[int, int], LatencyStats]:
        """The teacher's latency on ``device``, measured once per evaluator (in the same process as students)."""
        if str(device) not in self._teacher_latency:
            model = self.teacher.load_model(device)
            self._teacher_latency[str(device)] = measure_latency(
                model, self.latency_protocol, self.teacher_config.vocab_size, device
            )
        return self._teacher_latency[str(device)]

    def evaluate(
        self, candidate: Candidate, out_dir: Path | None = None, *, stop_after: int | None = None
    ) -> EvalResult:
        """Distil and measure ``candidate``; ``invalid`` / ``failed`` results carry the reason, never raise (a spec the
        teacher cannot hold, or a transfer set the task does not have, is ``invalid``).

        ``stop_after=r`` trains only the first ``r`` steps of the candidate's schedule (a learning-curve rung, see
        :func:`distilsearch.kdlib.training.distiller.distill`).
        """
        try:
            candidate.spec.validate_against(self.teacher_config)
            self.transfer(candidate.kd)
        except ValueError as error:
            return EvalResult(candidate=candidate, status="invalid", error=str(error), provenance=self._provenance())
        try:
            return self._evaluate(candidate, out_dir, stop_after)
        except (RuntimeError, ValueError, OSError) as error:
            detail = "".join(traceback.format_exception_only(error)).strip()
            return EvalResult(candidate=candidate, status="failed", error=detail, provenance=self._provenance())

    def teacher_logits_for(self, dataset) -> torch.Tensor:
        """The teacher's logits on a tokenized set, computed once and cached on disk."""
        return teacher_logits(
            self.teacher_model,
            self.teacher.key,
            dataset,
            pad_id=self.pad_id,
            device=self.device,
            progress=self.progress,
        )

    def _evaluate(self, candidate: Candidate, out_dir: Path | None, stop_after: int | None) -> EvalResult:
        spec, kd = candidate.spec, candidate.kd
        sets = self.tokenized(kd.max_length)
        self.teacher_logits_for(sets["train"])
        self.teacher_scores(kd.max_length)
        started = time.perf_counter()  # after the per-teacher work every candidate shares (cached once)
        shared = spec.weight_bits in SHARED_TRAINING_BITS and not spec.trim_vocab
        key = _training_key(candidate, stop_after) if shared else None
        twin = self._last_trained if self._last_trained is not None and self._last_trained.key == key else None
        student_tokenizer, input_id_map = self.tokenizer, None
        if twin is not None:
            student, outcome, train_seconds = twin.student, twin.outcome, twin.train_seconds
            started = time.perf_counter() - train_seconds
        else:
            student, student_tokenizer, input_id_map, outcome = self._train(candidate, sets, stop_after)
            train_seconds = time.perf_counter() - started
            if key is not None and outcome.status == "ok":
                self._last_trained = _Trained(key, candidate.content_hash(), student, outcome, train_seconds)
        if outcome.status != "ok":
            return EvalResult(
                candidate=candidate,
                status="failed",
                error=outcome.error,
                train_seconds=train_seconds,
                train_steps=outcome.steps,
                learning_curve=outcome.learning_curve,
                provenance=self._provenance(outcome),
            )
        if spec.weight_bits == 2:
            materialize_quantized(student)
        deployed = quantize_int8_dynamic(student) if spec.weight_bits == 8 else student
        scoring_device = torch.device("cpu") if spec.weight_bits == 8 else self.device
        scores = self._scores(deployed, sets, input_id_map, scoring_device)
        latency_device = torch.device("cpu") if spec.weight_bits == 8 else self.latency_device
        latency_key = (spec.content_hash(), str(latency_device))
        if latency_key not in self._student_latency:
            self._student_latency[latency_key] = self._latency(deployed, latency_device)
        latency = self._student_latency[latency_key]
        size, path = self._size_and_export(student, student_tokenizer, spec.weight_bits, candidate, outcome, out_dir)
        counts = count_parameters(student)
        peak_point = self.latency_protocol.points[-1]
        peak_memory = peak_forward_memory_bytes(deployed, *peak_point, student.config.vocab_size)
        teacher_scores = self.teacher_scores(kd.max_length)
        point = self.latency_protocol.points[0]
        return EvalResult(
            candidate=candidate,
            status="ok",
            accuracy=scores["test"],
            validation_accuracy=scores["validation"],
            ood_accuracy=_named(scores, OOD_TEST),
            ood_dev_accuracy=_named(scores, OOD_DEV),
            teacher_accuracy=teacher_scores["test"],
            teacher_validation_accuracy=teacher_scores["validation"],
            teacher_ood_accuracy=_named(teacher_scores, OOD_TEST),
            teacher_ood_dev_accuracy=_named(teacher_scores, OOD_DEV),
            majority_validation_accuracy=self.majority_rate(kd.max_length, "validation"),
            majority_test_accuracy=self.majority_rate(kd.max_length, "test"),
            learning_curve=outcome.learning_curve,
            train_steps=outcome.steps,
            curve_seconds=outcome.curve_seconds,
            latency=latency,
            flops=float(bert_flops(student.config, *point).total),
            params_total=counts.total,
            params_non_embedding=counts.non_embedding,
            size_bytes=size,
            peak_memory_bytes=peak_memory,
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - started - train_seconds,
            student_path=str(path) if path else None,
            provenance=self._provenance(outcome)
            | _shared_training(twin, candidate)
            | self._corpus_record(candidate.kd),
        )

    def _train(
        self, candidate: Candidate, sets: dict, stop_after: int | None
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.Tensor | None, DistillationOutcome]:
        """Cut, (trim, prepare low-bit weights) and distil the student of ``candidate``."""
        spec, kd = candidate.spec, candidate.kd
        train_logits = self.teacher_logits_for(sets["train"])
        set_seed(kd.seed)
        calibration = None
        if importance_needed(spec, self.teacher_config):
            rows = [sets["train"][index] for index in range(min(CALIBRATION_EXAMPLES, len(sets["train"])))]
            calibration = {name: tensor.to(self.device) for name, tensor in DynamicPadding(self.pad_id)(rows).items()}
        student = cut_student(self.teacher_model, spec, calibration)
        student_tokenizer, input_id_map = self.tokenizer, None
        if spec.trim_vocab:
            used = {
                int(token)
                for split in ("train", "validation", "test")
                for ids in sets[split]["input_ids"]
                for token in ids
            }
            student, student_tokenizer = trim_vocabulary(student, self.tokenizer, used)
            input_id_map = vocabulary_map(self.tokenizer, student_tokenizer)
        if spec.weight_bits == 2:
            apply_weight_quantization(student, 2)
        student.to(self.device)
        transfer_set, transfer_logits = self.transfer(kd) or (None, None)
        outcome = distill(
            self.teacher_model,
            student,
            sets["train"],
            sets["validation"],
            kd,
            teacher_logits=train_logits,
            pad_id=self.pad_id,
            device=self.device,
            input_id_map=input_id_map,
            mask_token_id=self.tokenizer.mask_token_id,
            progress=self.progress,
            description=f"distilling {candidate.content_hash()}",
            curve_sets={name.removeprefix(OOD_DEV): data for name, data in sets.items() if name.startswith(OOD_DEV)},
            stop_after=stop_after,
            general_set=self.general_set(kd),
            transfer_set=transfer_set,
            transfer_logits=transfer_logits,
            substitutions=self.substitutions(kd),
        )
        return student, student_tokenizer, input_id_map, outcome

    def _scores(
        self, model: torch.nn.Module, sets: dict, input_id_map: torch.Tensor | None, device: torch.device
    ) -> dict[str, float]:
        viewed = MappedInputs(model, input_id_map) if input_id_map is not None else model
        viewed.to(device)
        return {
            name: accuracy(predict_logits(viewed, sets[name], pad_id=self.pad_id, device=device), labels_of(sets[name]))
            for name in sets
            if name != "train"
        }

    def _latency(self, model: PreTrainedModel, device: torch.device) -> list[LatencyPoint]:
        """Student latency beside the teacher's on the same device, with the FLOPs-theoretical speed-up."""
        model.to(device)
        if self.remeasure_teacher_latency:
            self._teacher_latency.pop(str(device), None)
        teacher_stats = self.teacher_latency(device)
        student_stats = measure_latency(model, self.latency_protocol, model.config.vocab_size, device)
        return [
            LatencyPoint(
                batch=batch,
                seq_len=seq_len,
                median_ms=stats.median_ms,
                p10_ms=stats.p10_ms,
                p90_ms=stats.p90_ms,
                teacher_median_ms=teacher_stats[(batch, seq_len)].median_ms,
                speedup=teacher_stats[(batch, seq_len)].median_ms / stats.median_ms,
                theoretical_speedup=theoretical_speedup(self.teacher_config, model.config, batch, seq_len),
            )
            for (batch, seq_len), stats in student_stats.items()
        ]

    def _size_and_export(
        self,
        student: PreTrainedModel,
        tokenizer,
        bits: int,
        candidate: Candidate,
        outcome: DistillationOutcome,
        out_dir: Path | None,
    ) -> tuple[int, Path | None]:
        provenance = self._provenance(outcome) | {"candidate": candidate.model_dump(mode="json")}
        if bits != 32:
            size = quantized_size_bytes(student, bits)
        if out_dir is not None:
            export_student(student.cpu(), tokenizer, out_dir, provenance, overwrite=True)
            return (size if bits != 32 else size_on_disk(out_dir)), out_dir
        if bits != 32:
            return size, None
        with tempfile.TemporaryDirectory(prefix="distilsearch-size-") as scratch:
            student.cpu().save_pretrained(scratch)
            return size_on_disk(Path(scratch)), None

    def _corpus_record(self, kd: KDConfig) -> dict[str, dict[str, object]]:
        """``general_corpus`` (name, version, rows) when the general stage ran on a general corpus, and
        ``transfer_set`` (rows, rows per batch) when task batches mixed in the transfer set."""
        record: dict[str, dict[str, object]] = {}
        general = self.general_set(kd)
        if general is not None:
            record["general_corpus"] = {"name": kd.general_corpus, "version": CORPUS_VERSION, "rows": len(general)}
        transfer = self.transfer(kd)
        if transfer is not None:
            per_batch = transfer_rows_per_batch(kd.batch_size, kd.transfer_ratio)
            record["transfer_set"] = {"rows": len(transfer[0]), "rows_per_batch": per_batch}
        return record

    def _provenance(self, outcome: DistillationOutcome | None = None) -> dict:
        record = {
            "task": self.task.name,
            "teacher_key": self.teacher.key,
            "data_fingerprint": self.task.fingerprint,
            "device": describe_device(self.device),
            "latency_device": str(self.latency_device),
            "latency_protocol": {
                "points": [list(point) for point in self.latency_protocol.points],
                "warmup": self.latency_protocol.warmup,
                "repeats": self.latency_protocol.repeats,
                "num_threads": self.latency_protocol.num_threads,
            },
            "environment": runtime_versions(),
        }
        if outcome is not None:
            record["distillation"] = {
                "steps": outcome.steps,
                "curve_seconds": round(outcome.curve_seconds, 3),
                "stage_steps": outcome.stage_steps,
                "seconds": round(outcome.seconds, 3),
                "best_validation_accuracy": outcome.best_validation_accuracy,
                "teacher_forward_batches": outcome.teacher_forward_batches,
            }
        return record


def _shared_training(twin: _Trained | None, candidate: Candidate) -> dict[str, str]:
    """The provenance entry naming the twin whose training a result reused (none when it trained its own)."""
    if twin is None or twin.candidate_hash == candidate.content_hash():
        return {}
    return {"trained_with": twin.candidate_hash}


def _named(scores: dict[str, float], prefix: str) -> dict[str, float]:
    """The scores of the sets named ``<prefix><name>``, keyed by ``name``."""
    return {name.removeprefix(prefix): value for name, value in scores.items() if name.startswith(prefix)}
