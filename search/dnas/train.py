"""The search itself: train a :class:`~distilsearch.search.dnas.supernet.SuperNet` and its architecture logits together.

Objective (AdaBERT-style: distillation plus beta times an efficiency term, here normalised expected FLOPs):
``KD + beta * E[FLOPs] / teacher FLOPs``, where
``KD = alpha * soft_target_loss(student, teacher, T) + (1 - alpha) * hard_label_loss(student, labels)`` on the cached
teacher logits and ``E[FLOPs]`` is :meth:`~distilsearch.search.dnas.supernet.SuperNet.expected_flops` at the current
Gumbel temperature. The temperature anneals geometrically from ``tau_start`` to ``tau_end`` over ``steps``.

Updates, per step: ``alternating=True`` (first-order DARTS) takes a weight step on the KD loss of one batch under a
fresh Gumbel-softmax draw, then an architecture step on the full objective of the next batch under another draw;
``alternating=False`` takes both steps from one batch and one draw. ``hard=True`` uses one-hot straight-through
draws (each forward's output is one sampled sub-network's) instead of soft mixtures. The cost term only reaches the
architecture logits. Every source of randomness (dropout, batch order, Gumbel noise) follows ``seed``; a non-finite
loss raises :class:`SearchDiverged`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

import datasets
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from transformers import PreTrainedModel

from distilsearch.kdlib.data.batching import Batch, DynamicPadding, evaluation_batches
from distilsearch.kdlib.measure.scoring import labels_of
from distilsearch.kdlib.student_evaluator import CALIBRATION_EXAMPLES, StudentEvaluator
from distilsearch.kdlib.students.importance import compute_importance
from distilsearch.kdlib.students.specs import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Selection,
    StudentSpec,
)
from distilsearch.kdlib.training.losses import hard_label_loss, soft_target_loss
from distilsearch.search.dnas.supernet import MODEL_INPUTS, ArchChoices, ArchWeights, SuperNet

Sizes = tuple[PositiveInt, ...]
ARCH_WEIGHT_DECAY = 1e-3
EVAL_BATCH_SIZE = 64


class SearchDiverged(RuntimeError):
    """The search objective became NaN or infinite."""


class DNASConfig(BaseModel):
    """Settings of one architecture search (frozen; JSON round-trip; errors name the field and value).

    ``depths`` / ``heads`` / ``ffn_sizes``: the searched choices (None: :meth:`ArchChoices.for_teacher`'s).
    ``max_length``, ``alpha``, ``temperature`` and the selections should match the KD recipe the derived students
    are later distilled with. ``flops_point``: the ``(batch, seq_len)`` FLOPs are counted at. ``report_every``:
    steps between progress reports (the last step always reports); ``validation_rows``: how many validation rows
    score the super-student at the derived architecture in each report (None: all).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    beta: NonNegativeFloat = 0.5
    steps: PositiveInt = 300
    weight_lr: PositiveFloat = 5e-5
    arch_lr: PositiveFloat = 0.02
    tau_start: PositiveFloat = 1.0
    tau_end: PositiveFloat = 0.1
    alternating: bool = True
    hard: bool = False
    batch_size: PositiveInt = 32
    max_length: PositiveInt = 128
    alpha: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.5
    temperature: PositiveFloat = 2.0
    depths: Sizes | None = None
    heads: Sizes | None = None
    ffn_sizes: Sizes | None = None
    layer_selection: Literal["uniform", "first", "last", "alternate"] = "first"
    head_selection: Selection = "importance"
    ffn_selection: Selection = "importance"
    flops_point: tuple[PositiveInt, PositiveInt] = (1, 64)
    report_every: PositiveInt = 50
    validation_rows: PositiveInt | None = 512
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _check_schedule(self) -> Self:
        if self.tau_end > self.tau_start:
            raise ValueError(f"tau_end={self.tau_end} must be <= tau_start={self.tau_start} (the schedule anneals)")
        return self

    def choices_for(self, teacher_config: Any) -> ArchChoices:
        """The searched choices: the given ones, the teacher's defaults for those left None."""
        default = ArchChoices.for_teacher(teacher_config)
        return ArchChoices(
            self.depths or default.depths, self.heads or default.heads, self.ffn_sizes or default.ffn_sizes
        ).check(teacher_config)

    def tau(self, step: int) -> float:
        """Gumbel-softmax temperature at 0-based ``step``: geometric from ``tau_start`` to ``tau_end``."""
        share = step / (self.steps - 1) if self.steps > 1 else 1.0
        return self.tau_start * (self.tau_end / self.tau_start) ** share


@dataclass(frozen=True)
class SearchOutcome:
    """The derived student, the final logits and metrics, and the reports made along the way."""

    spec: StudentSpec
    history: tuple[dict[str, Any], ...]
    arch_logits: dict[str, list]
    expected_flops_ratio: float
    derived_flops_ratio: float
    validation_accuracy: float
    seconds: float


def _batches(dataset: datasets.Dataset, batch_size: int, pad_id: int, seed: int) -> Iterator[Batch]:
    """Endless shuffled batches (a seeded order per epoch), each with ``rows``: the dataset row of every example."""
    collate = DynamicPadding(pad_id)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([dataset[row] for row in rows])
            batch["rows"] = torch.tensor(rows, dtype=torch.long)
            yield batch


def calibration_batch(dataset: datasets.Dataset, pad_id: int, device: torch.device) -> dict[str, Tensor]:
    """The importance calibration batch :class:`~distilsearch.kdlib.student_evaluator.StudentEvaluator` cuts students
    with: the first :data:`~distilsearch.kdlib.student_evaluator.CALIBRATION_EXAMPLES` rows of ``dataset``, padded, on
    ``device``."""
    rows = [dataset[index] for index in range(min(CALIBRATION_EXAMPLES, len(dataset)))]
    return {name: tensor.to(device) for name, tensor in DynamicPadding(pad_id)(rows).items()}


class _Search:
    """One search's state: the super-student, its logits, optimisers, batch stream and Gumbel generator."""

    def __init__(
        self,
        teacher: PreTrainedModel,
        train_set: datasets.Dataset,
        teacher_logits: Tensor,
        pad_id: int,
        config: DNASConfig,
        device: torch.device,
    ) -> None:
        self.config = config
        self.device = device
        importance = None
        if "importance" in (config.head_selection, config.ffn_selection):
            importance = compute_importance(teacher, calibration_batch(train_set, pad_id, device))
        self.supernet = SuperNet(
            teacher,
            config.choices_for(teacher.config),
            importance=importance,
            layer_selection=config.layer_selection,
            head_selection=config.head_selection,
            ffn_selection=config.ffn_selection,
            flops_point=config.flops_point,
        ).to(device)
        self.arch = self.supernet.new_arch_parameters()
        self.weight_optimizer = torch.optim.AdamW(self.supernet.parameters(), lr=config.weight_lr)
        self.arch_optimizer = torch.optim.Adam(
            self.arch.parameters(), lr=config.arch_lr, betas=(0.5, 0.999), weight_decay=ARCH_WEIGHT_DECAY
        )
        self.teacher_logits = teacher_logits
        self.batches = _batches(train_set, config.batch_size, pad_id, config.seed)
        self.gumbel = torch.Generator().manual_seed(config.seed)

    def kd_loss(self, weights: ArchWeights, batch: Batch) -> Tensor:
        inputs = {name: batch[name].to(self.device) for name in MODEL_INPUTS}
        logits = self.supernet(weights, **inputs).float()
        teacher = self.teacher_logits[batch["rows"]].to(self.device)
        soft = soft_target_loss(logits, teacher, self.config.temperature)
        hard = hard_label_loss(logits, batch["labels"].to(self.device))
        return self.config.alpha * soft + (1 - self.config.alpha) * hard

    def cost(self, tau: float) -> Tensor:
        return self.supernet.expected_flops(self.arch, tau) / self.supernet.teacher_flops

    def step(self, step: int) -> tuple[float, float]:
        """One weight step and one architecture step; returns (objective, KD loss) of the architecture step."""
        tau = self.config.tau(step)
        batch = next(self.batches)
        if self.config.alternating:
            self.weight_optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                weights = self.arch.sample(tau, self.gumbel, hard=self.config.hard)
            weight_loss = self.kd_loss(weights, batch)
            self._check(weight_loss, step, "the KD loss of the weight step")
            weight_loss.backward()
            self.weight_optimizer.step()
            batch = next(self.batches)
        self.weight_optimizer.zero_grad(set_to_none=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        with self._frozen_weights() if self.config.alternating else contextlib.nullcontext():
            kd = self.kd_loss(self.arch.sample(tau, self.gumbel, hard=self.config.hard), batch)
            objective = kd + self.config.beta * self.cost(tau).float()
            self._check(objective, step, f"the objective (KD {kd.item():.4g})")
            objective.backward()
        self.arch_optimizer.step()
        if not self.config.alternating:
            self.weight_optimizer.step()
        return objective.item(), kd.item()

    @contextlib.contextmanager
    def _frozen_weights(self) -> Iterator[None]:
        """Skip the super-student's weight gradients during an architecture-only backward pass."""
        parameters = list(self.supernet.parameters())
        for parameter in parameters:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in parameters:
                parameter.requires_grad_(True)

    def _check(self, loss: Tensor, step: int, what: str) -> None:
        if not torch.isfinite(loss):
            raise SearchDiverged(
                f"{what} became {loss.item()} at step {step + 1} of {self.config.steps} "
                f"(beta={self.config.beta}, seed={self.config.seed}, weight_lr={self.config.weight_lr}, "
                f"arch_lr={self.config.arch_lr}); lower the learning rates"
            )

    @torch.inference_mode()
    def accuracy(self, spec: StudentSpec, dataset: datasets.Dataset, pad_id: int) -> float:
        """Accuracy of the super-student at ``spec``'s one-hot architecture (dropout off)."""
        weights = self.supernet.weights_for(spec)
        self.supernet.eval()
        labels = labels_of(dataset)
        correct = 0
        for indices, batch in evaluation_batches(dataset, EVAL_BATCH_SIZE, pad_id):
            inputs = {name: batch[name].to(self.device) for name in MODEL_INPUTS}
            predictions = self.supernet(weights, **inputs).argmax(dim=-1).cpu()
            correct += int((predictions == labels[indices]).sum())
        self.supernet.train()
        return correct / len(dataset)


def search_architecture(
    teacher: PreTrainedModel,
    train_set: datasets.Dataset,
    validation_set: datasets.Dataset,
    teacher_logits: Tensor,
    *,
    pad_id: int,
    config: DNASConfig,
    device: torch.device | str = "cpu",
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> SearchOutcome:
    """Search a student of ``teacher`` (left unchanged) on the tokenized ``train_set``; see the module docstring.

    ``teacher_logits`` are the cached teacher logits row-aligned with ``train_set``. Every ``config.report_every``
    steps and after the last one, ``on_report`` gets the report also kept in the history: ``step``, ``tau``,
    ``loss`` and ``kd_loss`` (means over the steps since the previous report), ``relative_loss`` (``loss`` over the
    first report's), ``expected_flops_ratio`` (expected FLOPs at temperature 1 over the teacher's), ``spec`` (the
    derived StudentSpec as JSON), ``derived_flops_ratio``, ``validation_accuracy`` (super-student at ``spec``) and
    ``final``.
    """
    started = time.perf_counter()
    device = torch.device(device)
    if tuple(teacher_logits.shape) != (len(train_set), teacher.config.num_labels):
        raise ValueError(
            f"teacher_logits has shape {tuple(teacher_logits.shape)}, expected "
            f"{(len(train_set), teacher.config.num_labels)} (one row per train_set row)"
        )
    if len(validation_set) == 0:
        raise ValueError("validation_set is empty; the derived architecture could not be scored")
    scored = validation_set
    if config.validation_rows is not None and len(validation_set) > config.validation_rows:
        scored = validation_set.select(range(config.validation_rows))
    torch.manual_seed(config.seed)
    search = _Search(teacher, train_set, teacher_logits.float(), pad_id, config, device)
    history: list[dict[str, Any]] = []
    window: list[tuple[float, float]] = []
    for step in range(config.steps):
        window.append(search.step(step))
        last = step == config.steps - 1
        if (step + 1) % config.report_every and not last:
            continue
        spec = search.supernet.derive(search.arch)
        loss = sum(objective for objective, _ in window) / len(window)
        with torch.no_grad():
            expected = float(search.cost(1.0))
        report = {
            "step": step + 1,
            "tau": config.tau(step),
            "loss": loss,
            "kd_loss": sum(kd for _, kd in window) / len(window),
            "relative_loss": loss / history[0]["loss"] if history and history[0]["loss"] else 1.0,
            "expected_flops_ratio": expected,
            "spec": spec.model_dump_json(),
            "derived_flops_ratio": search.supernet.student_flops(spec) / search.supernet.teacher_flops,
            "validation_accuracy": search.accuracy(spec, scored, pad_id),
            "final": last,
        }
        window.clear()
        history.append(report)
        if on_report is not None:
            on_report(report)
    final = history[-1]
    return SearchOutcome(
        spec=StudentSpec.model_validate_json(final["spec"]),
        history=tuple(history),
        arch_logits=search.arch.to_lists(),
        expected_flops_ratio=final["expected_flops_ratio"],
        derived_flops_ratio=final["derived_flops_ratio"],
        validation_accuracy=final["validation_accuracy"],
        seconds=time.perf_counter() - started,
    )


def search_with_evaluator(
    evaluator: StudentEvaluator,
    config: DNASConfig,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> SearchOutcome:
    """:func:`search_architecture` on an evaluator's teacher, tokenized sets and cached teacher logits."""
    sets = evaluator.tokenized(config.max_length)
    return search_architecture(
        evaluator.teacher_model,
        sets["train"],
        sets["validation"],
        evaluator.teacher_logits_for(sets["train"]),
        pad_id=evaluator.pad_id,
        config=config,
        device=evaluator.device,
        on_report=on_report,
    )
