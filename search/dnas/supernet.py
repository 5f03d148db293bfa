"""A weight-sharing super-student for differentiable architecture search (after AdaBERT, Chen et al., IJCAI 2020).

The super-student is a copy of the teacher (a stock ``*ForSequenceClassification`` of a supported family: BERT,
RoBERTa, XLM-RoBERTa, ELECTRA with ``embedding_size == hidden_size``) whose sub-structures are
switched by relaxed categorical choices, held as logits in :class:`ArchParameters`:

* **depth** -- one categorical over :attr:`ArchChoices.depths`. A depth ``d`` keeps the teacher layers
  :func:`~distilsearch.kdlib.students.layer_map.select_teacher_layers` picks for ``layer_selection``; the logits are
  the mixture ``sum_d w_d * head(h_d)`` of the classifier head applied to the encoder output after each candidate depth
  (:func:`~distilsearch.kdlib.students.families.sequence_logits`: BERT's pooler and classifier, or a RoBERTa/ELECTRA
  head). With ``"first"`` one forward pass yields every depth (prefixes share their layers); other selections run one
  pass per depth choice.
* **heads** -- per teacher layer, a categorical over :attr:`ArchChoices.heads` (head counts). Heads are ranked by
  ``head_selection`` (teacher importance or position) and a forward pre-hook on the attention output projection
  scales head ``a``'s context by ``sum_k w_k * [rank(a) < k]``: the probability that the chosen count keeps it.
* **FFN width** -- per teacher layer, a categorical over :attr:`ArchChoices.ffn_sizes`; a forward hook on the
  intermediate activation scales neuron ``n`` by ``sum_f w_f * [rank(n) < f]`` (ranked by ``ffn_selection``).

Rankings follow :func:`kdlib.students.cutting.plan_cut` exactly (``importance`` is what
:func:`~distilsearch.kdlib.students.importance. compute_importance` gives on the same calibration batch), so at a
one-hot architecture the super-student computes what :func:`~distilsearch.kdlib.students.cutting.cut_student` builds for
:meth:`SuperNet.derive`'s spec, before any training.

The hidden size is not searched: masking residual dimensions cannot reproduce the LayerNorm statistics of a
narrower student, so every derived student keeps the teacher's hidden size.

Cost model: :meth:`SuperNet.flops_of` is :func:`kdlib.measure.flops.bert_flops` (linear in the layer count and the FFN
width) with the expected FFN width of each layer and the probability that each layer is kept. In every supported
family the attention width is the hidden size whatever the head count, so at the teacher's hidden size the head count
costs no FLOPs: heads are chosen by the distillation loss alone.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from distilsearch.kdlib.measure.flops import bert_flops
from distilsearch.kdlib.students.cutting import student_config
from distilsearch.kdlib.students.families import encoder_layers, family_of, sequence_logits
from distilsearch.kdlib.students.importance import Importance
from distilsearch.kdlib.students.layer_map import select_teacher_layers
from distilsearch.kdlib.students.specs import Selection, StudentSpec

SEARCHABLE_SELECTIONS = ("uniform", "first", "last", "alternate")
DEFAULT_FFN_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _sorted_sizes(name: str, values: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(values)
    if not sizes:
        raise ValueError(f"{name} must list at least one size, got {sizes}")
    for value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={sizes} must hold positive ints, got {value!r}")
    if list(sizes) != sorted(set(sizes)):
        raise ValueError(f"{name}={sizes} must be strictly increasing (sorted, no duplicates)")
    return sizes


@dataclass(frozen=True)
class ArchChoices:
    """The candidate depths, head counts and FFN widths of a search (each strictly increasing)."""

    depths: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("depths", "heads", "ffn_sizes"):
            object.__setattr__(self, name, _sorted_sizes(name, getattr(self, name)))

    @classmethod
    def for_teacher(
        cls, config: PretrainedConfig, ffn_fractions: Sequence[float] = DEFAULT_FFN_FRACTIONS
    ) -> ArchChoices:
        """Every depth, every head count that divides the hidden size, and FFN widths at ``ffn_fractions``."""
        heads = tuple(k for k in range(1, config.num_attention_heads + 1) if config.hidden_size % k == 0)
        for fraction in ffn_fractions:
            if not 0 < fraction <= 1:
                raise ValueError(f"ffn_fractions={tuple(ffn_fractions)} must lie in (0, 1], got {fraction!r}")
        ffn = sorted({max(1, round(config.intermediate_size * fraction)) for fraction in ffn_fractions})
        return cls(tuple(range(1, config.num_hidden_layers + 1)), heads, tuple(ffn))

    def check(self, config: PretrainedConfig) -> ArchChoices:
        """Raise ``ValueError`` naming the first choice this teacher cannot provide; return ``self``."""
        limits = (
            ("depths", self.depths, config.num_hidden_layers, "num_hidden_layers"),
            ("heads", self.heads, config.num_attention_heads, "num_attention_heads"),
            ("ffn_sizes", self.ffn_sizes, config.intermediate_size, "intermediate_size"),
        )
        for name, values, limit, field in limits:
            if values[-1] > limit:
                raise ValueError(f"{name}={values} exceeds the teacher's {field}={limit}")
        odd = [k for k in self.heads if config.hidden_size % k]
        if odd:
            raise ValueError(
                f"heads={self.heads}: {odd} do not divide the teacher's hidden_size={config.hidden_size}, "
                "which every derived student keeps"
            )
        return self


@dataclass(frozen=True)
class ArchWeights:
    """Relaxed (or one-hot) choice weights: ``depth`` ``(D,)``, ``heads`` ``(L, K)``, ``ffn`` ``(L, F)``.

    ``L`` is the teacher's layer count; each row sums to one.
    """

    depth: Tensor
    heads: Tensor
    ffn: Tensor


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature):
        raise ValueError(f"temperature={temperature!r} must be a finite number > 0")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    return float(temperature)


def _last_argmax(logits: Tensor) -> Tensor:
    """Index of the largest entry along the last dimension; ties go to the highest index (the largest size)."""
    return logits.shape[-1] - 1 - torch.argmax(logits.flip(-1), dim=-1)


class ArchParameters(nn.Module):
    """The architecture logits, initialised to zero (uniform choices)."""

    def __init__(self, num_layers: int, choices: ArchChoices) -> None:
        super().__init__()
        self.depth = nn.Parameter(torch.zeros(len(choices.depths)))
        self.heads = nn.Parameter(torch.zeros(num_layers, len(choices.heads)))
        self.ffn = nn.Parameter(torch.zeros(num_layers, len(choices.ffn_sizes)))

    def probabilities(self, temperature: float = 1.0) -> ArchWeights:
        """``softmax(logits / temperature)`` per choice: the sampling distribution at 1, the argmax as it nears 0."""
        tau = _check_temperature(temperature)
        return ArchWeights(*(torch.softmax(logits / tau, dim=-1) for logits in (self.depth, self.heads, self.ffn)))

    def sample(self, temperature: float, generator: torch.Generator, *, hard: bool = False) -> ArchWeights:
        """Gumbel-softmax draws (noise from ``generator``, a CPU generator); ``hard``: one-hot, straight-through."""
        tau = _check_temperature(temperature)

        def relaxed(logits: Tensor) -> Tensor:
            uniform = torch.rand(logits.shape, generator=generator).clamp(1e-10, 1.0 - 1e-7)
            gumbel = -torch.log(-torch.log(uniform)).to(device=logits.device, dtype=logits.dtype)
            soft = torch.softmax((logits + gumbel) / tau, dim=-1)
            if not hard:
                return soft
            one_hot = nn.functional.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
            return one_hot - soft.detach() + soft

        return ArchWeights(relaxed(self.depth), relaxed(self.heads), relaxed(self.ffn))

    def choice_indices(self) -> tuple[int, list[int], list[int]]:
        """The argmax depth index and per-layer head and FFN indices (ties to the largest size)."""
        with torch.no_grad():
            return (
                int(_last_argmax(self.depth)),
                _last_argmax(self.heads).tolist(),
                _last_argmax(self.ffn).tolist(),
            )

    def to_lists(self) -> dict[str, list]:
        """The logits as plain nested lists (for reports and JSON)."""
        return {name: getattr(self, name).detach().cpu().tolist() for name in ("depth", "heads", "ffn")}


def _ranks(scores: Tensor | None, count: int) -> Tensor:
    """Rank of each index (0 = kept first): by descending score, ties to the lower index; by position without."""
    if scores is None:
        return torch.arange(count)
    order = torch.argsort(scores, descending=True, stable=True)
    ranks = torch.empty(count, dtype=torch.long)
    ranks[order] = torch.arange(count)
    return ranks


def _keep_masks(ranks: Tensor, sizes: Sequence[int]) -> Tensor:
    """``(choices, units)``: 1 where a unit is among the ``size`` best-ranked ones."""
    return (ranks.unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)).float()


class SuperNet(nn.Module):
    """The teacher as a masked super-student over ``choices`` (see the module docstring).

    ``importance`` is required when ``head_selection`` or ``ffn_selection`` is ``"importance"``. ``flops_point`` is
    the ``(batch, seq_len)`` FLOPs are counted at (that of :attr:`kdlib.students.candidate.EvalResult.flops`). The
    teacher is copied, never changed; the copy starts in train mode.
    """

    def __init__(
        self,
        teacher: PreTrainedModel,
        choices: ArchChoices,
        *,
        importance: Importance | None = None,
        layer_selection: str = "first",
        head_selection: Selection = "importance",
        ffn_selection: Selection = "importance",
        flops_point: tuple[int, int] = (1, 64),
    ) -> None:
        super().__init__()
        config = teacher.config
        family_of(config, name="teacher")
        self.choices = choices.check(config)
        if layer_selection not in SEARCHABLE_SELECTIONS:
            raise ValueError(f"layer_selection={layer_selection!r} must be one of {SEARCHABLE_SELECTIONS}")
        for name, value in (("head_selection", head_selection), ("ffn_selection", ffn_selection)):
            if value not in ("importance", "position"):
                raise ValueError(f"{name}={value!r} must be 'importance' or 'position'")
            if value == "importance" and importance is None:
                raise ValueError(f"{name}='importance' needs the teacher's importance scores (importance=None)")
        self.teacher_config = config
        self.layer_selection = layer_selection
        self.head_selection: Selection = head_selection
        self.ffn_selection: Selection = ffn_selection
        self.flops_point = flops_point
        self.model = copy.deepcopy(teacher).train()
        layers, heads = config.num_hidden_layers, config.num_attention_heads
        self.head_size = config.hidden_size // heads
        self.depth_layers = tuple(
            select_teacher_layers(layer_selection, depth, layers) for depth in self.choices.depths
        )
        head_scores = importance.heads if head_selection == "importance" else None
        ffn_scores = importance.ffn if ffn_selection == "importance" else None
        self.register_buffer(
            "head_masks",
            torch.stack(
                [
                    _keep_masks(_ranks(None if head_scores is None else head_scores[layer], heads), self.choices.heads)
                    for layer in range(layers)
                ]
            ),
            persistent=False,
        )
        self.register_buffer(
            "ffn_masks",
            torch.stack(
                [
                    _keep_masks(
                        _ranks(None if ffn_scores is None else ffn_scores[layer], config.intermediate_size),
                        self.choices.ffn_sizes,
                    )
                    for layer in range(layers)
                ]
            ),
            persistent=False,
        )
        membership = torch.zeros(len(self.choices.depths), layers, dtype=torch.float64)
        for index, kept in enumerate(self.depth_layers):
            membership[index, list(kept)] = 1.0
        self.register_buffer("depth_membership", membership, persistent=False)
        sizes = torch.tensor(self.choices.ffn_sizes, dtype=torch.float64)
        self.register_buffer("ffn_size_values", sizes, persistent=False)
        one_layer = copy.deepcopy(config)
        one_layer.num_hidden_layers, one_layer.intermediate_size = 1, 1
        unit = bert_flops(one_layer, *flops_point)
        self.ffn_flops_per_neuron = unit.feed_forward
        self.attention_flops = unit.encoder - unit.feed_forward
        self.head_flops = unit.pooler + unit.classifier
        self.teacher_flops = bert_flops(config, *flops_point).total

    def new_arch_parameters(self) -> ArchParameters:
        """Fresh (uniform) architecture logits shaped for this super-student, on its device."""
        device = self.head_masks.device
        return ArchParameters(self.teacher_config.num_hidden_layers, self.choices).to(device)

    # ---- forward ------------------------------------------------------------------------------------------------

    def _scale_heads(self, weights: ArchWeights, layer: int, _module: nn.Module, args: tuple) -> tuple:
        gate = (weights.heads[layer] @ self.head_masks[layer]).repeat_interleave(self.head_size)
        return (args[0] * gate.to(args[0].dtype), *args[1:])

    def _scale_ffn(self, weights: ArchWeights, layer: int, _module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        return output * (weights.ffn[layer] @ self.ffn_masks[layer]).to(output.dtype)

    @contextlib.contextmanager
    def _masked(self, weights: ArchWeights) -> Iterator[None]:
        hooks = []
        for layer, module in enumerate(encoder_layers(self.model)):
            hooks.append(
                module.attention.output.dense.register_forward_pre_hook(partial(self._scale_heads, weights, layer))
            )
            hooks.append(module.intermediate.register_forward_hook(partial(self._scale_ffn, weights, layer)))
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @contextlib.contextmanager
    def _encoder_layers(self, indices: Sequence[int]) -> Iterator[None]:
        """Run only the teacher layers ``indices`` (in order) while the context is open."""
        encoder = self.model.base_model.encoder
        full = encoder.layer
        encoder.layer = nn.ModuleList(full[index] for index in indices)
        try:
            yield
        finally:
            encoder.layer = full

    def _logits_by_depth(self, inputs: Mapping[str, Tensor]) -> list[Tensor]:
        encoder = self.model.base_model
        if self.layer_selection == "first":
            with self._encoder_layers(range(self.choices.depths[-1])):
                hidden = encoder(**inputs, output_hidden_states=True).hidden_states
            outputs = [hidden[depth] for depth in self.choices.depths]
        else:
            outputs = []
            for kept in self.depth_layers:
                with self._encoder_layers(kept):
                    outputs.append(encoder(**inputs).last_hidden_state)
        return [sequence_logits(self.model, output) for output in outputs]

    def forward(self, weights: ArchWeights, **inputs: Tensor) -> Tensor:
        """Classifier logits of the super-student under ``weights`` (inputs as for the teacher: ids, masks)."""
        unknown = set(inputs) - set(MODEL_INPUTS)
        if unknown:
            raise ValueError(f"unexpected inputs {sorted(unknown)}; SuperNet takes {MODEL_INPUTS}")
        with self._masked(weights):
            logits = self._logits_by_depth(inputs)
        return torch.einsum("d,dbc->bc", weights.depth.to(logits[0].dtype), torch.stack(logits))

    # ---- cost ---------------------------------------------------------------------------------------------------

    def flops_of(self, weights: ArchWeights) -> Tensor:
        """Expected FLOPs (float64, differentiable) of the student ``weights`` describe, at :attr:`flops_point`.

        At one-hot weights of a spec (:meth:`weights_for`) this equals ``bert_flops`` of that student's config.
        """
        ffn_width = weights.ffn.double() @ self.ffn_size_values
        layer_cost = self.attention_flops + self.ffn_flops_per_neuron * ffn_width
        return weights.depth.double() @ (self.depth_membership @ layer_cost) + self.head_flops

    def expected_flops(self, arch: ArchParameters, temperature: float = 1.0) -> Tensor:
        """FLOPs expected under ``arch.probabilities(temperature)`` (exact expectation at 1, argmax cost near 0)."""
        return self.flops_of(arch.probabilities(temperature))

    # ---- derived students -----------------------------------------------------------------------------------------

    def derive(self, arch: ArchParameters) -> StudentSpec:
        """The concrete student of the argmax choices (ties to the larger size).

        StudentSpec has one head count and one FFN width for all layers, so over the layers the chosen depth keeps:
        ``num_heads`` is the largest per-layer head count (heads cost no FLOPs, so no head any layer chose is lost);
        ``ffn_size`` is the FFN choice nearest the mean per-layer width (ties to the larger), which keeps the FFN
        FLOPs nearest the searched ones. Heads and neurons are selected as the super-student masked them.
        """
        depth_index, head_indices, ffn_indices = arch.choice_indices()
        kept = self.depth_layers[depth_index]
        num_heads = max(self.choices.heads[head_indices[layer]] for layer in kept)
        mean_ffn = sum(self.choices.ffn_sizes[ffn_indices[layer]] for layer in kept) / len(kept)
        ffn_size = min(reversed(self.choices.ffn_sizes), key=lambda size: abs(size - mean_ffn))
        return StudentSpec(
            num_layers=self.choices.depths[depth_index],
            hidden_size=self.teacher_config.hidden_size,
            num_heads=num_heads,
            ffn_size=ffn_size,
            layer_selection=self.layer_selection,
            head_selection=self.head_selection,
            ffn_selection=self.ffn_selection,
        )

    def weights_for(self, spec: StudentSpec) -> ArchWeights:
        """One-hot weights selecting ``spec`` (same head count and FFN width in every layer)."""
        expected = {
            "hidden_size": self.teacher_config.hidden_size,
            "layer_selection": self.layer_selection,
            "head_selection": self.head_selection,
            "ffn_selection": self.ffn_selection,
        }
        for name, value in expected.items():
            if getattr(spec, name) != value:
                raise ValueError(f"spec has {name}={getattr(spec, name)!r}; this super-student uses {value!r}")
        indices = []
        for name, value, options in (
            ("num_layers", spec.num_layers, self.choices.depths),
            ("num_heads", spec.num_heads, self.choices.heads),
            ("ffn_size", spec.ffn_size, self.choices.ffn_sizes),
        ):
            if value not in options:
                raise ValueError(f"spec has {name}={value}, not one of the searched choices {options}")
            indices.append(options.index(value))
        layers = self.teacher_config.num_hidden_layers
        device = self.head_masks.device

        def one_hot(index: int, size: int, rows: int | None = None) -> Tensor:
            row = nn.functional.one_hot(torch.tensor(index), size).float().to(device)
            return row if rows is None else row.expand(rows, size).clone()

        return ArchWeights(
            one_hot(indices[0], len(self.choices.depths)),
            one_hot(indices[1], len(self.choices.heads), layers),
            one_hot(indices[2], len(self.choices.ffn_sizes), layers),
        )

    def student_flops(self, spec: StudentSpec) -> int:
        """``bert_flops(...).total`` of the student ``spec`` describes, at :attr:`flops_point`."""
        return bert_flops(student_config(self.teacher_config, spec), *self.flops_point).total
