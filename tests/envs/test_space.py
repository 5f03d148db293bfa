import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig

from distilsearch.envs.space import Constraint, SearchSpace, TeacherShape
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

MINILM = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
TEACHER = TeacherShape(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64)
DIMENSIONS = {
    "num_layers": [1, 2, 3, 4, 5],
    "hidden_size": [16, 24, 32],
    "num_heads": [2, 3, 4],
    "ffn_size": [32, 64],
    "init": ["teacher", "random"],
    "weight_bits": [32, 2],
    "alpha": [0.5, 0.9],
}
TERNARY = Constraint({"init": ["random"]}, {"weight_bits": [2]}, "ternary students need teacher init")


def small_space(**changes: object) -> SearchSpace:
    settings_ = {"dimensions": DIMENSIONS, "fixed": {"max_steps": 100}, "constraints": [TERNARY]} | changes
    return SearchSpace(TEACHER, **settings_)


def test_default_space_follows_the_teacher() -> None:
    space = SearchSpace.default_for(MINILM)
    assert space.dimensions["num_layers"] == (1, 2, 3, 4, 5, 6)
    assert space.dimensions["hidden_size"] == (96, 192, 288, 384)
    assert space.dimensions["num_heads"] == (1, 2, 3, 4, 6, 12)
    assert space.dimensions["ffn_size"] == (384, 768, 1152, 1536)
    assert {"layer_selection", "weight_bits", "alpha", "temperature", "layer_mapping"} <= set(space.names)
    assert space.fixed == {"max_steps": 2000, "lr": 2e-4, "batch_size": 32, "max_length": 64, "intermediate_share": 0.0}
    assert "init" not in space.names  # random init never left the majority rate at search budgets
    assert {name: getattr(KDConfig(), name) for name in ("lr", "batch_size", "max_length")} == {
        name: space.fixed[name] for name in ("lr", "batch_size", "max_length")
    }
    assert space.num_valid() == int(np.prod(space.sizes))
    base = SearchSpace.default_for(BertConfig())
    assert base.dimensions["hidden_size"] == (192, 384, 576, 768)
    rng = np.random.default_rng(0)
    for _ in range(20):
        candidate = space.decode(space.sample(rng))
        assert candidate.kd.max_steps == 2000 and candidate.spec.validate_against(MINILM)


def test_yaml_round_trip_keeps_order_and_hash(tmp_path: Path) -> None:
    space = small_space()
    text = space.to_yaml(tmp_path / "space.yaml")
    again = SearchSpace.from_yaml(tmp_path / "space.yaml")
    assert again == space and again.space_hash() == space.space_hash() and again.to_yaml() == text
    assert again.names == space.names and again.constraints == space.constraints
    default = SearchSpace.default_for(MINILM)
    default.to_yaml(tmp_path / "default.yaml")
    assert SearchSpace.from_yaml(tmp_path / "default.yaml").space_hash() == default.space_hash()


def test_space_pickles_for_worker_processes() -> None:
    space = small_space()
    again = pickle.loads(pickle.dumps(space))
    assert (
        again == space and again.is_valid((0, 0, 1, 0, 0, 0, 0)).reason == space.is_valid((0, 0, 1, 0, 0, 0, 0)).reason
    )


def test_space_hash_tracks_content_and_order() -> None:
    assert small_space().space_hash() == small_space().space_hash()
    reordered = dict(reversed(list(DIMENSIONS.items())))
    assert small_space(dimensions=reordered).space_hash() != small_space().space_hash()
    assert small_space(fixed={"max_steps": 200}).space_hash() != small_space().space_hash()
    assert small_space(constraints=[]).space_hash() != small_space().space_hash()
    assert small_space(dimensions=reordered) != small_space()


def test_valid_count_matches_brute_force_and_enumeration() -> None:
    space = small_space()
    brute = [c for c in itertools.product(*(range(n) for n in space.sizes)) if space.is_valid(c)]
    assert sorted(space.enumerate_valid()) == brute
    assert space.num_valid() == len(brute) == 4 * 7 * 2 * 3 * 2


def test_encode_decode_and_onehot_round_trip_every_valid_point() -> None:
    space = small_space()
    for choices in space.enumerate_valid():
        candidate = space.decode(choices)
        assert space.encode(candidate) == choices
        assert space.encode(Candidate.model_validate_json(candidate.model_dump_json())) == choices
        vector = space.to_onehot(choices)
        assert vector.dtype == np.float32 and vector.sum() == len(space.names)
        assert space.from_onehot(vector) == choices


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_default_space_round_trips_random_points(seed: int) -> None:
    space = SearchSpace.default_for(MINILM)
    choices = space.sample(np.random.default_rng(seed))
    assert space.encode(space.decode(choices)) == choices


def test_encode_rejects_candidates_outside_the_space() -> None:
    space = small_space()
    spec = StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64)
    with pytest.raises(ValueError, match=r"alpha=0\.7, not one of the choices \(0\.5, 0\.9\)"):
        space.encode(Candidate(spec=spec, kd=KDConfig(alpha=0.7, max_steps=100)))
    with pytest.raises(ValueError, match="differs from this space's fixed/default fields: max_steps=None"):
        space.encode(Candidate(spec=spec))
    with pytest.raises(ValueError, match="expected a flat vector of length 19"):
        space.from_onehot(np.zeros(3))


def test_masks_follow_teacher_divisibility_and_constraints() -> None:
    space = small_space()
    masks = space.validity_mask([])
    assert masks[0].tolist() == [True, True, True, True, False]
    assert all(mask.all() for mask in masks[1:])
    assert space.validity_mask([0, 0])[2].tolist() == [True, False, True]
    assert space.validity_mask({"num_heads": 1})[1].tolist() == [False, True, False]
    assert space.validity_mask({"init": 1})[5].tolist() == [True, False]
    assert space.validity_mask({"weight_bits": 1})[4].tolist() == [True, False]
    with pytest.raises(ValueError, match="unknown dimensions"):
        space.validity_mask({"depth": 1})
    with pytest.raises(ValueError, match=r"choice 9 for hidden_size is not an index in 0\.\.2"):
        space.validity_mask([0, 9])


def test_is_valid_names_the_rule() -> None:
    space = small_space()
    assert space.is_valid([0, 0, 0, 0, 0, 0, 0]) and space.is_valid([0, 0, 0, 0, 0, 0, 0]).reason is None
    cases = {
        (4, 0, 0, 0, 0, 0, 0): "num_layers=5 exceeds the teacher's num_hidden_layers=4",
        (0, 0, 1, 0, 0, 0, 0): "hidden_size=16 is not divisible by num_heads=3",
        (0, 0, 0, 0, 1, 1, 0): "weight_bits=2 is forbidden when init='random': ternary students need teacher init",
        (0, 0, 0): "expected 7 choices",
        (0, 0, 0, 0, 0, 0, 2): "choice 2 for alpha is not an index in 0..1",
    }
    for choices, reason in cases.items():
        validity = space.is_valid(choices)
        assert not validity and reason in validity.reason
    with pytest.raises(ValueError, match="hidden_size=16 is not divisible by num_heads=3"):
        space.decode((0, 0, 1, 0, 0, 0, 0))
    assert space.explain([0, 0, 1]) == "hidden_size=16 is not divisible by num_heads=3"
    assert space.explain([0, 0]) is None


def test_the_retention_levers_are_dimensions_and_a_general_stage_needs_an_intermediate_loss() -> None:
    levers = {
        "general_distillation_steps": [0, 50],
        "hidden_weight": [0.0, 1.0],
        "general_corpus": ["general-en", "task"],
        "transfer_ratio": [0.0, 0.25],
        "augmentation": ["none", "substitute", "mask"],
    }
    sizes = {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "ffn_size": 64, "max_steps": 200}
    space = SearchSpace(TEACHER, levers, sizes)
    brute = [c for c in itertools.product(*(range(n) for n in space.sizes)) if space.is_valid(c)]
    assert sorted(space.enumerate_valid()) == brute and space.num_valid() == 3 * 2 * 2 * 3
    validity = space.is_valid([1, 0, 0, 0, 0])
    assert not validity and "general_distillation_steps=50 needs an intermediate loss" in validity.reason
    chosen = space.decode([1, 1, 1, 1, 1]).kd
    assert (chosen.general_distillation_steps, chosen.general_corpus, chosen.transfer_ratio) == (50, "task", 0.25)
    assert chosen.augmentation == "substitute"
    assert space.validity_mask([1])[1].tolist() == [False, True] and space.validity_mask([0])[1].tolist() == [True] * 2
    fixed = sizes | {"hidden_weight": 1.0, "general_distillation_steps": 20}
    fixed_only = SearchSpace(
        TEACHER, {"num_layers": [1, 2]}, {name: v for name, v in fixed.items() if name != "num_layers"}
    )
    assert fixed_only.num_valid() == 2
    with pytest.raises(ValueError, match="fixed fields: general_distillation_steps=20 needs an intermediate loss"):
        SearchSpace(
            TEACHER,
            {"num_layers": [1, 2]},
            {"hidden_size": 32, "num_heads": 4, "ffn_size": 64, "general_distillation_steps": 20},
        )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_masked_choices_never_dead_end(data: st.DataObject) -> None:
    space = small_space()
    chosen: list[int] = []
    for d in range(len(space.names)):
        allowed = np.flatnonzero(space.validity_mask(chosen)[d]).tolist()
        assert allowed, f"dead end after {chosen}"
        chosen.append(data.draw(st.sampled_from(allowed)))
    assert space.is_valid(chosen)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dimensions": {"depth": [1]}}, "'depth' is not a searchable StudentSpec/KDConfig field"),
        ({"dimensions": DIMENSIONS | {"alpha": [0.5, 1.5]}}, "1.5 is not a valid alpha"),
        ({"dimensions": DIMENSIONS | {"alpha": [0.5, 0.5]}}, "choice 0.5 is listed twice"),
        ({"dimensions": DIMENSIONS | {"alpha": []}}, "choices must be a non-empty list"),
        ({"dimensions": DIMENSIONS | {"layer_selection": ["explicit"]}}, "layer_selection='explicit'"),
        ({"dimensions": DIMENSIONS | {"layers": [(0,)]}}, "'layers' is not a searchable"),
        ({"dimensions": {"num_layers": [1]}}, r"sizes \['hidden_size', 'num_heads', 'ffn_size'\]"),
        ({"dimensions": DIMENSIONS | {"num_layers": [5, 6]}}, "no choice in"),
        ({"fixed": {"alpha": 0.5}}, "'alpha' is both a dimension and a fixed field"),
        ({"fixed": {"max_steps": 0}}, "0 is not a valid max_steps"),
        ({"constraints": [Constraint({"depth": [1]}, {"init": ["random"]}, "x")]}, "names 'depth'"),
        ({"constraints": [Constraint({"init": ["other"]}, {"alpha": [0.5]}, "x")]}, "'other' is not a valid init"),
        ({"constraints": [Constraint({"alpha": [0.7]}, {"init": ["random"]}, "x")]}, "alpha=0.7 is not one of"),
        ({"constraints": [Constraint({}, {"hidden_size": [16, 24, 32]}, "x")]}, "no choice in (16, 24, 32) is valid"),
        ({"constraints": [Constraint({"init": ["teacher", "random"]}, {"weight_bits": [32, 2]}, "x")]}, "is empty"),
    ],
)
def test_bad_spaces_are_rejected_with_the_value(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        small_space(**changes)


def test_fixed_sizes_are_checked_against_the_teacher() -> None:
    dimensions = {"num_layers": [1, 2], "alpha": [0.5]}
    with pytest.raises(ValueError, match="ffn_size=128 exceeds the teacher's intermediate_size=64"):
        SearchSpace(TEACHER, dimensions, {"hidden_size": 32, "num_heads": 4, "ffn_size": 128})
    with pytest.raises(ValueError, match="hidden_size=32 is not divisible by num_heads=3"):
        SearchSpace(TEACHER, dimensions, {"hidden_size": 32, "num_heads": 3, "ffn_size": 64})
    with pytest.raises(ValueError, match="unknown keys"):
        SearchSpace.from_dict({"teacher": {}, "dimensions": {}, "extra": 1})
