"""Distil a (BERT-family) classifier student from its teacher: staged training (TinyBERT / MobileBERT), early-stopped.

Stages, in order (each its own AdamW with a linear warm-up over ``WARMUP_SHARE`` of the stage and decay to 0):

1. ``general`` -- ``general_distillation_steps`` steps of intermediate losses on every mapped layer; labels unused.
2. task intermediate -- intermediate losses only, when any of ``embedding/hidden/attention/value_relation_weight``
   is > 0: ``intermediate`` trains the whole student at once; with ``progressive=True`` the phase is split into
   one block per student hidden-state index that has a loss, bottom-up (``progressive-embeddings`` for index 0,
   then ``progressive-layer-<l>``): block ``l`` trains only the module producing ``hidden_states[l]`` (the
   embeddings, or encoder layer ``l - 1``) and its projection, everything else frozen (MobileBERT).
3. ``prediction`` -- ``alpha * soft + (1 - alpha) * hard`` per example (+ ``cosine_weight`` * DistilBERT's cosine
   loss between the last hidden states), training the whole student. With ``intermediate_share=0`` there is no
   intermediate phase and the intermediate losses are added to this stage instead (joint training, as DistilBERT
   trains its losses together), so the classifier learns from the first step. Only here do validated weights count
   as the best.

Budget. ``B = max_steps``, or ``ceil(epochs * ceil(len(train_set) / batch_size))`` when ``max_steps`` is None, is
the total over all stages. The general stage takes exactly ``G = general_distillation_steps`` (``G < B``
required); the intermediate phase takes ``floor(intermediate_share * (B - G))`` (none without intermediate
losses; ``KDConfig.intermediate_share``, TinyBERT's two stages at the default 0.5), split evenly over progressive
blocks (the lower blocks take the remainder; blocks left with 0 steps are skipped); the prediction stage takes the
rest, at least one step. Early stopping can end the prediction stage sooner. Batches come from one seeded stream of
length-grouped epochs that continues across stages; with a ``general_set`` (a general corpus, as TinyBERT and MiniLM
distil on), the general stage draws from a stream of its own over that set.

Losses are the terms of :data:`distilsearch.kdlib.training.kd_terms.KD_TERMS` that the config's weights turn on: each
declares its student hidden-state indices, features, projection and phase, and every stage computes and combines its
terms in registry order (a registered term joins the layer choice, stages, teacher features and total without a change
here). The built-in terms (:mod:`kdlib.training.losses`) follow :func:`kdlib.students.layer_map.intermediate_layer_map`:
embedding loss on pair ``(0, 0)`` through W_0; hidden-state and attention losses averaged over the mapped layers (so a
weight means the same for any depth), attention heads aligned by ``attention_loss``; MiniLM's value relation on the last
layers' value vectors with :func:`distilsearch.kdlib.training.losses.shared_head_count` relation heads. The projections
W_h (one ``HiddenProjection`` map per student layer with a hidden-state, embedding or cosine loss) train with the
student and are discarded. Attention maps are Hugging Face's post-softmax probabilities, which include attention dropout
in the student's train mode.

Teacher. Cached ``teacher_logits`` (row-aligned with ``train_set``) serve every prediction-stage step unless an online
teacher forward is needed anyway: augmented batches (see :mod:`kdlib.data.augmentation`), a term reading other teacher
features than logits (the cosine loss), or no cache. Intermediate stages always run the teacher, under
``torch.inference_mode``. ``DistillationOutcome.teacher_forward_batches`` counts the forwards. With ``augmentation``
set, every stage replaces a random half (``kdlib.data.augmentation.AUGMENTED_SHARE``) of each batch's rows by augmented
copies (seeded); in the prediction stage those rows are trained on the teacher's soft targets alone.

Learning curve. At every checkpoint of :func:`curve_checkpoints` (geometric steps 25, 50, 100, ... and the last step
trained) the student is scored on the validation set and on ``curve_sets`` (the OOD dev halves); the points land in
``DistillationOutcome.learning_curve`` with the training seconds so far (evaluation time excluded), and
``curve_seconds`` is the time those checkpoints took. ``stop_after=r`` ends training after ``r`` steps of the planned
schedule (a learning-curve rung: the schedule, warm-up and decay are those of the whole budget, so the first ``r``
steps are exactly those of a full run).

Temperature per step and example comes from :func:`kdlib.training.temperature.temperatures` over the prediction stage.
A NaN or infinite loss ends training with ``status="failed"`` (no exception); the student keeps its best
validated weights, or the weights before the failing step when no evaluation had run.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import datasets
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.std import tqdm
from transformers import PreTrainedModel, get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from distilsearch.kdlib.core.device import autocast
from distilsearch.kdlib.core.progress import progress_bar
from distilsearch.kdlib.data.augmentation import Substitutions, augment_batch
from distilsearch.kdlib.data.batching import Batch, DynamicPadding
from distilsearch.kdlib.measure.scoring import accuracy, labels_of, predict_logits
from distilsearch.kdlib.students.candidate import CurvePoint
from distilsearch.kdlib.students.families import embeddings, encoder_layers, family_of
from distilsearch.kdlib.students.layer_map import intermediate_layer_map
from distilsearch.kdlib.students.specs import KDConfig
from distilsearch.kdlib.students.vocabulary import MappedInputs
from distilsearch.kdlib.training.finetune import TrainingDivergedError
from distilsearch.kdlib.training.kd_terms import KD_TERMS, Feature, Features, KDTerm, TermInputs, enabled_terms
from distilsearch.kdlib.training.losses import HiddenProjection, combine_losses, shared_head_count
from distilsearch.kdlib.training.temperature import temperatures

WARMUP_SHARE = 0.1
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
FIRST_CHECKPOINT = 25

StageKind = Literal["general", "intermediate", "prediction"]


@dataclass(frozen=True)
class Stage:
    """One stage of the plan: its name, kind, step count and (progressive blocks) the hidden-state index trained."""

    name: str
    kind: StageKind
    steps: int
    layer: int | None = None


@dataclass
class DistillationOutcome:
    """What a distillation run did. ``validation_history`` holds ``(global step, accuracy)`` pairs of the prediction
    stage's evaluations; ``learning_curve`` the checkpoints (see the module docstring)."""

    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0
    stage_steps: dict[str, int] = field(default_factory=dict)
    validation_history: list[tuple[int, float]] = field(default_factory=list)
    best_validation_accuracy: float | None = None
    teacher_forward_batches: int = 0
    learning_curve: list[CurvePoint] = field(default_factory=list)
    curve_seconds: float = 0.0
    evaluation_seconds: float = 0.0


def curve_checkpoints(total_steps: int, first: int = FIRST_CHECKPOINT) -> tuple[int, ...]:
    """Geometric checkpoints ``first, 2 first, 4 first, ...`` below ``total_steps``, then ``total_steps``."""
    if total_steps < 1 or first < 1:
        raise ValueError(f"total_steps={total_steps} and first={first} must be >= 1")
    steps = []
    step = first
    while step < total_steps:
        steps.append(step)
        step *= 2
    return (*steps, total_steps)


def intermediate_layers(config: KDConfig, num_student_layers: int) -> tuple[int, ...]:
    """Student hidden-state indices that carry an intermediate loss under ``config`` (increasing)."""
    terms = enabled_terms(config, "intermediate")
    return tuple(sorted({layer for term in terms for layer in term.layers(num_student_layers)}))


def _intermediate_weights() -> str:
    """The weight fields of the registered intermediate terms, comma-separated."""
    return ", ".join(str(term.weight_field) for term in KD_TERMS.values() if term.phase == "intermediate")


def budget_steps(config: KDConfig, train_size: int) -> int:
    """The total step budget ``B``: ``max_steps``, else ``ceil(epochs * steps per epoch)``."""
    if train_size < 1:
        raise ValueError(f"train_size must be >= 1, got {train_size}")
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * math.ceil(train_size / config.batch_size)))


def plan_stages(config: KDConfig, *, num_student_layers: int, train_size: int) -> tuple[Stage, ...]:
    """The stages of a run and their step counts (see the module docstring for the rules)."""
    total = budget_steps(config, train_size)
    layers = intermediate_layers(config, num_student_layers)
    general = config.general_distillation_steps
    if general and not layers:
        raise ValueError(
            f"general_distillation_steps={general} needs an intermediate loss: set one of {_intermediate_weights()} > 0"
        )
    if config.progressive and not layers:
        raise ValueError(f"progressive=True needs an intermediate loss: set one of {_intermediate_weights()} > 0")
    if config.progressive and config.intermediate_share == 0:
        raise ValueError("progressive=True trains an intermediate phase: set intermediate_share > 0")
    if general >= total:
        raise ValueError(
            f"general_distillation_steps={general} leaves no step of the {total}-step budget for task distillation"
        )
    stages = [Stage("general", "general", general)] if general else []
    intermediate = math.floor(config.intermediate_share * (total - general)) if layers else 0
    if config.progressive:
        share, extra = divmod(intermediate, len(layers))
        for position, layer in enumerate(layers):
            name = "progressive-embeddings" if layer == 0 else f"progressive-layer-{layer}"
            steps = share + (1 if position < extra else 0)
            if steps:
                stages.append(Stage(name, "intermediate", steps, layer))
    elif intermediate:
        stages.append(Stage("intermediate", "intermediate", intermediate))
    stages.append(Stage("prediction", "prediction", total - general - intermediate))
    return tuple(stages)


@dataclass(frozen=True)
class _Terms:
    """The registry terms a stage computes (in registry order), each with its student hidden-state indices."""

    chosen: tuple[tuple[KDTerm, tuple[int, ...]], ...]

    @property
    def features(self) -> frozenset[Feature]:
        return frozenset(feature for term, _ in self.chosen for feature in term.features)

    @property
    def prediction(self) -> bool:
        """Whether this is a prediction stage (it computes the prediction-phase terms)."""
        return any(term.phase == "prediction" for term, _ in self.chosen)

    @property
    def projected(self) -> tuple[int, ...]:
        """The indices whose W_h the stage uses."""
        return tuple(sorted({layer for term, layers in self.chosen if term.projected for layer in layers}))

    def layers_reading(self, feature: Feature) -> tuple[int, ...]:
        """The student indices at which some term reads ``feature``."""
        return tuple(sorted({layer for term, layers in self.chosen if feature in term.features for layer in layers}))


def _stage_terms(stage: Stage, config: KDConfig, num_student_layers: int) -> _Terms:
    """Intermediate terms in the general and intermediate stages (a progressive block keeps those using its index);
    prediction terms in the prediction stage, joined by the intermediate terms when ``intermediate_share == 0``."""
    phases = {"intermediate"} if stage.kind != "prediction" else {"prediction"}
    if stage.kind == "prediction" and config.intermediate_share == 0:
        phases.add("intermediate")
    chosen = []
    for term in enabled_terms(config):
        layers = term.layers(num_student_layers)
        if term.phase == "intermediate" and stage.layer is not None:
            layers = tuple(layer for layer in layers if layer == stage.layer)
        if term.phase in phases and (layers or term.phase == "prediction"):
            chosen.append((term, layers))
    return _Terms(tuple(chosen))


@contextlib.contextmanager
def _captured_values(model: PreTrainedModel, enabled: bool) -> Iterator[list[Tensor]]:
    """Collect the last encoder layer's value projections ``(batch, seq, width)`` during forwards."""
    captured: list[Tensor] = []
    if not enabled:
        yield captured
        return
    value = encoder_layers(model)[-1].attention.self.value
    handle = value.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        yield captured
    finally:
        handle.remove()


def _row_batches(dataset: datasets.Dataset, batch_size: int, pad_id: int, seed: int) -> Iterator[Batch]:
    """Endless length-grouped batches (the order of :func:`kdlib.data.batching.training_batches`, epoch after epoch),
    each with ``rows``: the dataset row of every example."""
    lengths = [len(ids) for ids in dataset.with_format(None)["input_ids"]]
    collate = DynamicPadding(pad_id)
    for epoch in itertools.count():
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([dataset[row] for row in rows])
            batch["rows"] = torch.tensor(rows, dtype=torch.long)
            yield batch


def _concatenated(task: Batch, transfer: Batch, pad_id: int) -> Batch:
    """One batch of ``task``'s rows then ``transfer``'s, padded to the longer; transfer rows keep their indices in
    ``transfer_rows``, are flagged in ``unlabelled`` and get the placeholder label 0 (their hard loss is unused)."""
    width = max(task["input_ids"].shape[1], transfer["input_ids"].shape[1])
    merged: Batch = {}
    for column, value in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        parts = [nn.functional.pad(b[column], (0, width - b[column].shape[1]), value=value) for b in (task, transfer)]
        merged[column] = torch.cat(parts)
    merged["labels"] = torch.cat([task["labels"], torch.zeros_like(transfer["labels"])])
    merged["rows"] = task["rows"]
    merged["transfer_rows"] = transfer["rows"]
    merged["unlabelled"] = torch.cat(
        [torch.zeros(len(task["rows"]), dtype=torch.bool), torch.ones(len(transfer["rows"]), dtype=torch.bool)]
    )
    return merged


def transfer_rows_per_batch(batch_size: int, ratio: float) -> int:
    """How many of a batch's rows come from the transfer set: ``round(ratio * batch_size)``, at least 1 and at most
    ``batch_size - 1`` (0 when ``ratio`` is 0)."""
    if ratio == 0:
        return 0
    return min(batch_size - 1, max(1, round(ratio * batch_size)))


def _mixed_batches(
    train_set: datasets.Dataset, transfer_set: datasets.Dataset, batch_size: int, ratio: float, pad_id: int, seed: int
) -> Iterator[Batch]:
    """Endless batches of ``batch_size`` rows, :func:`transfer_rows_per_batch` of them from ``transfer_set`` and the
    rest from ``train_set``, each set in its own seeded length-grouped stream."""
    from_transfer = transfer_rows_per_batch(batch_size, ratio)
    task = _row_batches(train_set, batch_size - from_transfer, pad_id, seed)
    transfer = _row_batches(transfer_set, from_transfer, pad_id, seed + 1)
    for task_batch, transfer_batch in zip(task, transfer, strict=True):
        yield _concatenated(task_batch, transfer_batch, pad_id)


def _check_transfer(
    config: KDConfig, transfer_set: datasets.Dataset | None, transfer_logits: Tensor | None, labels: int
) -> None:
    if config.transfer_ratio == 0:
        return
    if transfer_set is None or len(transfer_set) == 0:
        raise ValueError(f"transfer_ratio={config.transfer_ratio} needs a non-empty transfer_set")
    if config.batch_size < 2:
        raise ValueError(f"transfer_ratio={config.transfer_ratio} needs batch_size >= 2, got {config.batch_size}")
    if transfer_logits is not None and tuple(transfer_logits.shape) != (len(transfer_set), labels):
        raise ValueError(
            f"transfer_logits has shape {tuple(transfer_logits.shape)}, expected {(len(transfer_set), labels)}"
        )


def _check_inputs(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    train_set: datasets.Dataset,
    validation_set: datasets.Dataset,
    config: KDConfig,
    teacher_logits: Tensor | None,
    input_id_map: Tensor | None,
    mask_token_id: int | None,
    eval_every: int | None,
) -> None:
    family_of(teacher.config, name="teacher")
    family_of(student.config, name="student")
    if len(train_set) == 0 or len(validation_set) == 0:
        raise ValueError(
            f"train_set ({len(train_set)} rows) and validation_set ({len(validation_set)}) must not be empty"
        )
    labels = teacher.config.num_labels
    if student.config.num_labels != labels:
        raise ValueError(f"student has num_labels={student.config.num_labels}, the teacher {labels}")
    if teacher_logits is not None and tuple(teacher_logits.shape) != (len(train_set), labels):
        raise ValueError(
            f"teacher_logits has shape {tuple(teacher_logits.shape)}, expected {(len(train_set), labels)} "
            "(one row per train_set row)"
        )
    readers = [term.name for term in enabled_terms(config) if "attention" in term.features]
    for name, model in (("teacher", teacher), ("student", student)):
        if readers and model.config._attn_implementation != "eager":
            raise ValueError(
                f"{name} uses attn_implementation={model.config._attn_implementation!r}; the {readers[0]} loss "
                "needs 'eager' attention to read attention maps"
            )
    if config.augmentation == "mask" and mask_token_id is None:
        raise ValueError("mask_token_id=None: augmentation='mask' needs the teacher's [MASK] token id")
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive int or None, got {eval_every!r}")
    if input_id_map is not None:
        if not isinstance(input_id_map, Tensor) or input_id_map.dim() != 1 or input_id_map.is_floating_point():
            raise ValueError(f"input_id_map must be a 1-D integer tensor, got {input_id_map!r}")
        if input_id_map.numel() < teacher.config.vocab_size:
            raise ValueError(
                f"input_id_map has {input_id_map.numel()} entries; it needs one per teacher token id "
                f"({teacher.config.vocab_size})"
            )
        student_vocab = student.config.vocab_size
        if not bool(((input_id_map >= 0) & (input_id_map < student_vocab)).all()):
            raise ValueError(f"input_id_map must map into the student's token ids 0..{student_vocab - 1}")


class _Distillation:
    """The state of one run: models, projections, batch stream, counters and best weights."""

    def __init__(
        self,
        teacher: PreTrainedModel,
        student: PreTrainedModel,
        config: KDConfig,
        teacher_logits: Tensor | None,
        pad_id: int,
        device: torch.device,
        input_id_map: Tensor | None,
        mask_token_id: int | None,
        transfer_logits: Tensor | None = None,
    ) -> None:
        self.teacher = teacher.to(device).eval()
        self.student = student.to(device).train()
        self.config = config
        self.cached_logits = teacher_logits
        self.transfer_logits = transfer_logits
        self.substitutions: Substitutions | None = None
        self.pad_id = pad_id
        self.device = device
        self.input_id_map = None if input_id_map is None else input_id_map.long().to(device)
        self.mask_token_id = mask_token_id
        self.num_layers = student.config.num_hidden_layers
        terms = enabled_terms(config)
        self.layer_map: dict[int, int] = {}
        if any(term.layers(self.num_layers) for term in terms):
            teacher_layers = teacher.config.num_hidden_layers
            self.layer_map = dict(intermediate_layer_map(config.layer_mapping, self.num_layers, teacher_layers))
        projected = {layer for term in terms if term.projected for layer in term.layers(self.num_layers)}
        self.projection = (
            HiddenProjection(student.config.hidden_size, teacher.config.hidden_size, sorted(projected)).to(device)
            if projected
            else None
        )
        self.relation_heads = shared_head_count(student.config.num_attention_heads, teacher.config.num_attention_heads)
        self.augment_generator = torch.Generator().manual_seed(config.seed)
        self.outcome = DistillationOutcome()
        self.best_state: dict[str, Tensor] | None = None
        self.started = time.perf_counter()
        self.checkpoints: frozenset[int] = frozenset()
        self.curve_sets: dict[str, datasets.Dataset] = {}

    def student_view(self) -> nn.Module:
        """The student as it reads teacher token ids (for evaluation on the teacher-tokenized sets)."""
        return self.student if self.input_id_map is None else MappedInputs(self.student, self.input_id_map)

    def trainable(self, stage: Stage, terms: _Terms) -> list[nn.Parameter]:
        """The parameters a stage trains; the student's others are frozen for its duration."""
        if stage.layer is None:
            modules: list[nn.Module] = [self.student]
        elif stage.layer == 0:
            modules = [embeddings(self.student)]
        else:
            modules = [encoder_layers(self.student)[stage.layer - 1]]
        if self.projection is not None:
            modules += [self.projection[layer] for layer in terms.projected]
        return [parameter for module in modules for parameter in module.parameters()]

    def optimizer(self, stage: Stage, parameters: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, LambdaLR]:
        named = {id(parameter): name for name, parameter in self.student.named_parameters()}
        decay, no_decay = [], []
        for parameter in parameters:
            is_norm = "LayerNorm" in named.get(id(parameter), "")
            (no_decay if parameter.ndim < 2 or is_norm else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.config.lr,
        )
        scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_SHARE * stage.steps), stage.steps)
        return optimizer, scheduler

    def needs_teacher(self, terms: _Terms) -> bool:
        """Whether the teacher runs: for any feature besides logits, and for logits unless cached ones serve (for the
        transfer rows too, when the batches hold some)."""
        if terms.features - {"logits"}:
            return True
        missing_transfer = self.config.transfer_ratio > 0 and self.transfer_logits is None
        return self.config.augmentation != "none" or self.cached_logits is None or missing_transfer

    def cached_teacher_logits(self, batch: Batch) -> Tensor:
        """The cached teacher logits of a batch's rows: its task rows, then its transfer rows."""
        logits = self.cached_logits[batch["rows"].cpu()]
        if "transfer_rows" in batch:
            logits = torch.cat([logits, self.transfer_logits[batch["transfer_rows"].cpu()]])
        return logits.to(self.device)

    def teacher_features(self, inputs: Batch, terms: _Terms) -> Features:
        """Teacher logits and the features ``terms`` read, as ordinary (autograd-safe) float32 tensors."""
        hidden_needed = sorted({self.layer_map[layer] for layer in terms.layers_reading("hidden")})
        attention_needed = sorted({self.layer_map[layer] for layer in terms.layers_reading("attention")})
        with (
            torch.inference_mode(),
            _captured_values(self.teacher, "values" in terms.features) as values,
            autocast(self.device),
        ):
            output = self.teacher(
                **inputs, output_hidden_states=bool(hidden_needed), output_attentions=bool(attention_needed)
            )
        self.outcome.teacher_forward_batches += 1
        return Features(
            logits=output.logits.float().clone(),
            hidden={index: output.hidden_states[index].float().clone() for index in hidden_needed},
            attention={index: output.attentions[index - 1].float().clone() for index in attention_needed},
            values=values[0].float().clone() if values else None,
        )

    def loss(self, batch: Batch, terms: _Terms, step_in_stage: int, stage_steps: int) -> Tensor:
        """The stage's weighted total loss on ``batch`` (augmented first when the config asks for it)."""
        augmented = batch.get("unlabelled", torch.zeros(batch["input_ids"].shape[0], dtype=torch.bool))
        if self.config.augmentation != "none":
            batch, changed = augment_batch(
                batch,
                self.config.augmentation,
                generator=self.augment_generator,
                pad_id=self.pad_id,
                mask_token_id=self.mask_token_id,
                substitutions=self.substitutions,
            )
            augmented = augmented | changed
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        augmented = augmented.to(self.device)
        inputs = {name: batch[name] for name in INPUT_COLUMNS}
        if self.needs_teacher(terms):
            teacher = self.teacher_features(inputs, terms)
        else:
            teacher = Features(logits=self.cached_teacher_logits(batch))
        student_inputs = dict(inputs)
        if self.input_id_map is not None:
            student_inputs["input_ids"] = self.input_id_map[inputs["input_ids"]]
        with _captured_values(self.student, "values" in terms.features) as values, autocast(self.device):
            output = self.student(
                **student_inputs,
                output_hidden_states="hidden" in terms.features,
                output_attentions="attention" in terms.features,
            )
        student = Features(
            logits=output.logits,
            hidden=dict(enumerate(output.hidden_states or ())),
            attention=dict(enumerate(output.attentions or (), start=1)),
            values=values[0] if values else None,
        )
        temperature = None
        if terms.prediction:
            temperature = temperatures(
                self.config.temperature_schedule,
                self.config.temperature,
                teacher.logits,
                step=step_in_stage,
                total_steps=stage_steps,
            )
        losses, weights = self.term_losses(student, teacher, terms, batch, augmented, temperature)
        total, _ = combine_losses(losses, weights)
        return total

    def term_losses(
        self,
        student: Features,
        teacher: Features,
        terms: _Terms,
        batch: Batch,
        augmented: Tensor,
        temperature: Tensor | None,
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Every term of the stage on its layer pairs, in registry order, with its weight."""
        losses: dict[str, Tensor] = {}
        weights: dict[str, float] = {}
        for term, layers in terms.chosen:
            inputs = TermInputs(
                student=student,
                teacher=teacher,
                pairs=tuple((layer, self.layer_map[layer]) for layer in layers),
                mask=batch["attention_mask"],
                config=self.config,
                projection=self.projection,
                relation_heads=self.relation_heads,
                labels=batch["labels"],
                augmented=augmented,
                temperature=temperature,
            )
            losses[term.name] = term.loss(inputs)
            weights[term.name] = term.weight(self.config)
        return losses, weights

    def accuracy_on(self, dataset: datasets.Dataset) -> float:
        logits = predict_logits(self.student_view(), dataset, pad_id=self.pad_id, device=self.device)
        self.student.train()
        return accuracy(logits, labels_of(dataset))

    def evaluate(self, validation_set: datasets.Dataset, step: int, *, select: bool, checkpoint: bool) -> float:
        """Validation accuracy now; ``select``: keep the weights when best so far (prediction stage);
        ``checkpoint``: also score the curve sets and add a learning-curve point."""
        started = time.perf_counter()
        value = self.accuracy_on(validation_set)
        if select:
            self.outcome.validation_history.append((step, value))
            best = self.outcome.best_validation_accuracy
            if best is None or value > best:
                self.outcome.best_validation_accuracy = value
                self.best_state = {name: tensor.detach().clone() for name, tensor in self.student.state_dict().items()}
        if checkpoint:
            training = started - self.started - self.outcome.evaluation_seconds
            dev = {name: self.accuracy_on(data) for name, data in self.curve_sets.items()}
            self.outcome.learning_curve.append(
                CurvePoint(step=step, validation_accuracy=value, ood_dev_accuracy=dev, train_seconds=training)
            )
            self.outcome.curve_seconds += time.perf_counter() - started
        self.outcome.evaluation_seconds += time.perf_counter() - started
        return value


def distill(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    train_set: datasets.Dataset,
    validation_set: datasets.Dataset,
    config: KDConfig,
    *,
    teacher_logits: Tensor | None,
    pad_id: int,
    device: torch.device,
    input_id_map: Tensor | None = None,
    mask_token_id: int | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    description: str = "distilling",
    on_stage_end: Callable[[Stage, PreTrainedModel], None] | None = None,
    curve_sets: dict[str, datasets.Dataset] | None = None,
    curve_steps: Sequence[int] | None = None,
    stop_after: int | None = None,
    general_set: datasets.Dataset | None = None,
    transfer_set: datasets.Dataset | None = None,
    transfer_logits: Tensor | None = None,
    substitutions: Substitutions | None = None,
) -> DistillationOutcome:
    """Train ``student`` in place from ``teacher`` on the tokenized ``train_set``; return what happened.

    ``teacher`` and ``student`` are ``*ForSequenceClassification`` models of a supported family (eager attention when
    ``attention_weight > 0``); the teacher is only run, never changed. Both read the batch's token ids, which
    are the teacher's: ``input_id_map[t]`` is the student's id for teacher id ``t`` (trimmed vocabularies).
    ``teacher_logits`` are the cached teacher logits row-aligned with ``train_set`` (see
    :func:`distilsearch.kdlib.training.teacher_outputs.teacher_logits`), or None to compute them online. ``pad_id`` and
    ``mask_token_id`` are teacher token ids. Validation accuracy is measured every ``eval_every`` prediction
    steps (default: once per epoch of ``train_set``) and at the stage's end; the student ends with the best
    validated weights. ``on_stage_end(stage, student)`` is called after every completed stage.

    The learning curve is measured at ``curve_steps`` (default :func:`curve_checkpoints` of the steps trained) on
    the validation set and ``curve_sets``; ``stop_after`` ends training after that many steps of the plan.
    ``general_set`` (tokenized, teacher token ids; labels unread) feeds the ``general`` stage instead of
    ``train_set``, e.g. :func:`~distilsearch.kdlib.data.general_corpus.tokenized_general_corpus`; the task stages
    then start at the beginning of ``train_set``'s stream. With ``config.transfer_ratio`` > 0, ``transfer_set``
    (tokenized, teacher token ids; e.g. :func:`~distilsearch.kdlib.data.transfer_sets.tokenized_transfer_set`)
    supplies that share of every task-stage batch, learnt from soft targets only: ``transfer_logits`` (row-aligned)
    when cached, else the teacher runs online. ``augmentation="substitute"`` needs ``substitutions``
    (:func:`~distilsearch.kdlib.data.augmentation.word_neighbours` of the teacher).
    """
    started = time.perf_counter()
    _check_inputs(
        teacher, student, train_set, validation_set, config, teacher_logits, input_id_map, mask_token_id, eval_every
    )
    stages = plan_stages(config, num_student_layers=student.config.num_hidden_layers, train_size=len(train_set))
    eval_every = eval_every or math.ceil(len(train_set) / config.batch_size)
    planned = sum(stage.steps for stage in stages)
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be a positive int or None, got {stop_after!r}")
    limit = planned if stop_after is None else min(stop_after, planned)
    torch.manual_seed(config.seed)
    if config.augmentation == "substitute" and substitutions is None:
        raise ValueError("augmentation='substitute' needs substitutions (word_neighbours of the teacher's embeddings)")
    run = _Distillation(
        teacher, student, config, teacher_logits, pad_id, device, input_id_map, mask_token_id, transfer_logits
    )
    run.substitutions = substitutions
    run.curve_sets = dict(curve_sets or {})
    chosen = curve_checkpoints(limit) if curve_steps is None else tuple(curve_steps)
    run.checkpoints = frozenset(step for step in chosen if 1 <= step <= limit) | {limit}
    if general_set is not None and len(general_set) == 0:
        raise ValueError("general_set must not be empty")
    _check_transfer(config, transfer_set, transfer_logits, teacher.config.num_labels)
    if config.transfer_ratio > 0:
        batches = _mixed_batches(train_set, transfer_set, config.batch_size, config.transfer_ratio, pad_id, config.seed)
    else:
        batches = _row_batches(train_set, config.batch_size, pad_id, config.seed)
    general = batches if general_set is None else _row_batches(general_set, config.batch_size, pad_id, config.seed)
    bar = progress_bar(total=limit, desc=description, unit="step", disable=not progress)
    try:
        for stage in stages:
            if run.outcome.steps >= limit:
                break
            bar.set_description(f"{description} [{stage.name}]")
            source = general if stage.kind == "general" else batches
            _run_stage(run, stage, source, validation_set, eval_every, bar, limit)
            cut = run.outcome.steps >= limit and run.outcome.stage_steps[stage.name] < stage.steps
            if on_stage_end is not None and not cut:
                on_stage_end(stage, run.student)
    except TrainingDivergedError as error:
        run.outcome.status = "failed"
        run.outcome.error = str(error)
    finally:
        bar.close()
    if run.best_state is not None:
        run.student.load_state_dict(run.best_state)
    run.student.eval()
    run.outcome.seconds = time.perf_counter() - started
    return run.outcome


def _run_stage(
    run: _Distillation,
    stage: Stage,
    batches: Iterator[Batch],
    validation_set: datasets.Dataset,
    eval_every: int,
    bar: tqdm,
    limit: int,
) -> None:
    """Train one stage, ending early after ``limit`` steps in all; raise TrainingDivergedError on a non-finite
    loss."""
    terms = _stage_terms(stage, run.config, run.num_layers)
    parameters = run.trainable(stage, terms)
    trained = {id(parameter) for parameter in parameters}
    frozen = [p for p in run.student.parameters() if p.requires_grad and id(p) not in trained]
    for parameter in frozen:
        parameter.requires_grad_(False)
    optimizer, scheduler = run.optimizer(stage, parameters)
    run.outcome.stage_steps[stage.name] = 0
    since_best = 0
    try:
        for step in range(stage.steps):
            loss = run.loss(next(batches), terms, step, stage.steps)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingDivergedError(
                    f"loss became {loss_value} at step {run.outcome.steps} (stage {stage.name})"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            run.outcome.steps += 1
            run.outcome.stage_steps[stage.name] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            done = run.outcome.steps
            periodic = terms.prediction and ((step + 1) % eval_every == 0 or step + 1 == stage.steps)
            if periodic or done in run.checkpoints:
                best_before = run.outcome.best_validation_accuracy
                value = run.evaluate(validation_set, done, select=terms.prediction, checkpoint=done in run.checkpoints)
                bar.set_postfix(loss=f"{loss_value:.4f}", val_acc=f"{value:.3f}")
                if periodic:
                    since_best = 0 if best_before is None or value > best_before else since_best + 1
                    patience = run.config.early_stopping_patience
                    if patience is not None and since_best >= patience:
                        break
            if done >= limit:
                break
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
