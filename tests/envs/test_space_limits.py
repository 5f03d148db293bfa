"""Deployment limits (min_speedup, max_params, max_size_mb) of a SearchSpace: exact masks, analytic values that match
real cut students, YAML, errors before training, the env constructors and `distilsearch search` flags."""

import dataclasses
import itertools
import json
import math
import struct
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from toy_table import TOY_SPACE, TOY_TASK, write_toy_table
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from typer.testing import CliRunner

import envs  # noqa: F401  (registers the environments)
from distilsearch.envs.limits import Limits, bert_config, measure
from distilsearch.envs.space import Constraint, SearchSpace, TeacherShape
from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.kdlib.measure.flops import theoretical_speedup
from distilsearch.kdlib.measure.footprint import bert_parameter_count, bert_weight_bytes, count_parameters, size_on_disk
from distilsearch.kdlib.students.cutting import cut_student, trim_vocabulary
from distilsearch.kdlib.students.quantization import quantized_size_bytes
from distilsearch.kdlib.students.specs import StudentSpec
from distilsearch.search.cli.main import app

TEACHER = TeacherShape(
    num_hidden_layers=4,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=100,
    max_position_embeddings=128,
    num_labels=3,
)
DIMENSIONS = {
    "num_layers": [1, 2, 3, 4],
    "hidden_size": [8, 16, 32],
    "num_heads": [1, 2, 4],
    "ffn_size": [16, 32, 64],
    "init": ["teacher", "random"],
    "weight_bits": [32, 8, 2],
}
TERNARY = Constraint({"init": ["random"]}, {"weight_bits": [2]}, "ternary students need teacher init")
SIZE_FIELDS = ("num_layers", "hidden_size", "ffn_size", "weight_bits")


def space(limits: Limits | dict | None = None) -> SearchSpace:
    return SearchSpace(TEACHER, DIMENSIONS, {"max_steps": 10}, [TERNARY], limits)


def oracle(values: dict) -> dict[str, float]:
    """Speed-up, parameters and MB of a real (untrained) model with these sizes, measured with kdlib."""
    teacher_config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, num_labels=3,
    )  # fmt: skip
    model = _model(values["num_layers"], values["hidden_size"], values["ffn_size"])
    bits = values["weight_bits"]
    size = quantized_size_bytes(model, bits) if bits != 32 else 4 * count_parameters(model).total
    return {
        "min_speedup": theoretical_speedup(teacher_config, model.config, 1, 64),
        "max_params": count_parameters(model).total,
        "max_size_mb": size / 1e6,
    }


_MODELS: dict[tuple[int, int, int], BertForSequenceClassification] = {}


def _model(layers: int, hidden: int, ffn: int) -> BertForSequenceClassification:
    key = (layers, hidden, ffn)
    if key not in _MODELS:
        config = BertConfig(
            vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=1, intermediate_size=ffn,
            max_position_embeddings=128, num_labels=3,
        )  # fmt: skip
        _MODELS[key] = BertForSequenceClassification(config)
    return _MODELS[key]


def meets(measured: dict[str, float], limits: dict[str, float]) -> bool:
    return all(
        measured[name] >= bound if name == "min_speedup" else measured[name] <= bound for name, bound in limits.items()
    )


def brute_force(limits: dict[str, float]) -> list[tuple[int, ...]]:
    """Every choice vector valid without limits whose real model meets ``limits``."""
    free = space()
    valid = []
    for choices in itertools.product(*(range(n) for n in free.sizes)):
        if free.is_valid(choices) and meets(oracle(free.values(choices)), limits):
            valid.append(choices)
    return valid


def quantile(name: str, q: float) -> float:
    free = space()
    return float(np.quantile([oracle(free.values(c))[name] for c in free.enumerate_valid()], q))


LIMIT_CASES = {
    "speed-up": lambda: {"min_speedup": quantile("min_speedup", 0.5)},
    "params": lambda: {"max_params": int(quantile("max_params", 0.4))},
    "size": lambda: {"max_size_mb": quantile("max_size_mb", 0.3)},
    "all three": lambda: {
        "min_speedup": quantile("min_speedup", 0.3),
        "max_params": int(quantile("max_params", 0.8)),
        "max_size_mb": quantile("max_size_mb", 0.6),
    },
}


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_limits_keep_exactly_the_candidates_whose_real_models_meet_them(case: str) -> None:
    limits = LIMIT_CASES[case]()
    limited = space(limits)
    expected = brute_force(limits)
    assert 0 < len(expected) < space().num_valid()
    assert sorted(limited.enumerate_valid()) == expected
    assert limited.num_valid() == len(expected)
    every = itertools.product(*(range(n) for n in limited.sizes))
    assert [c for c in every if limited.is_valid(c)] == expected


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_masks_under_limits_are_exact(case: str) -> None:
    limits = LIMIT_CASES[case]()
    limited = space(limits)
    valid = np.asarray(brute_force(limits))
    rng = np.random.default_rng(0)
    every = itertools.product(*(range(n) for n in limited.sizes))
    partials = sorted({c[:k] for c in every for k in range(len(limited.sizes))})
    partials = [list(prefix) for prefix in partials]
    partials += [[int(rng.integers(n)) if rng.random() < 0.5 else None for n in limited.sizes] for _ in range(300)]
    for partial in partials:
        partial = partial + [None] * (len(limited.sizes) - len(partial))
        consistent = np.ones(len(valid), dtype=bool)
        for d, choice in enumerate(partial):
            if choice is not None:
                consistent &= valid[:, d] == choice
        if not consistent.any():
            assert limited.explain(partial) is not None, partial
            continue
        masks = limited.validity_mask(partial)
        for d, size in enumerate(limited.sizes):
            keep = np.ones(len(valid), dtype=bool)
            for other, choice in enumerate(partial):
                if other != d and choice is not None:
                    keep &= valid[:, other] == choice
            assert masks[d].tolist() == [bool((valid[keep, d] == c).any()) for c in range(size)], (partial, d)
    for _ in range(50):
        sampled = limited.sample(rng)
        assert limited.is_valid(sampled) and meets(oracle(limited.values(sampled)), limits)


SPECS = [
    {"num_layers": 2, "hidden_size": 16, "num_heads": 2, "ffn_size": 32},
    {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "ffn_size": 16, "init": "random"},
    {"num_layers": 3, "hidden_size": 24, "num_heads": 3, "ffn_size": 64, "head_selection": "position"},
    {"num_layers": 4, "hidden_size": 32, "num_heads": 4, "ffn_size": 64},
]


def cut(teacher: BertForSequenceClassification, **spec: object) -> BertForSequenceClassification:
    settings = {"head_selection": "position", "ffn_selection": "position", "hidden_selection": "position"} | spec
    return cut_student(teacher, StudentSpec(**settings))


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: "-".join(str(v) for v in spec.values()))
def test_analytic_params_and_speedup_equal_the_cut_student(tiny_teacher, spec: dict) -> None:
    shape = TeacherShape.from_config(tiny_teacher.config)
    student = cut(tiny_teacher, **spec)
    values = spec | {"weight_bits": 32}
    assert measure("max_params", shape, values) == count_parameters(student).total
    assert bert_parameter_count(student.config) == count_parameters(student).total
    flops = theoretical_speedup(tiny_teacher.config, student.config, 1, 64)
    assert measure("min_speedup", shape, values) == pytest.approx(flops, rel=1e-12)


@pytest.mark.parametrize("bits", [8, 2])
@pytest.mark.parametrize("spec", SPECS[:3], ids=["2L", "1L", "3L"])
def test_analytic_size_equals_the_packed_size(tiny_teacher, spec: dict, bits: int) -> None:
    shape = TeacherShape.from_config(tiny_teacher.config)
    student = cut(tiny_teacher, **spec)
    assert bert_weight_bytes(student.config, bits) == quantized_size_bytes(student, bits)
    assert measure("max_size_mb", shape, spec | {"weight_bits": bits}) == quantized_size_bytes(student, bits) / 1e6


@pytest.mark.parametrize("spec", SPECS[:2], ids=["2L", "1L"])
def test_analytic_fp32_size_is_the_safetensors_data(tiny_teacher, spec: dict, tmp_path: Path) -> None:
    """Tolerance: exactly the file minus its 8-byte length and JSON header, which the analytic size leaves out."""
    student = cut(tiny_teacher, **spec)
    student.save_pretrained(tmp_path)
    (weights,) = tmp_path.glob("*.safetensors")
    header = struct.unpack("<Q", weights.read_bytes()[:8])[0]
    assert size_on_disk(tmp_path) - 8 - header == bert_weight_bytes(student.config, 32)
    assert header < 200 * len(json.loads(weights.read_bytes()[8 : 8 + header]))


def test_trim_vocab_students_are_counted_with_the_full_vocabulary(tiny_teacher, tiny_bert_dir: Path) -> None:
    shape = TeacherShape.from_config(tiny_teacher.config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    student = cut(tiny_teacher, **SPECS[0])
    trimmed, _ = trim_vocabulary(student, tokenizer, tokenizer("a great film")["input_ids"])
    analytic = measure("max_params", shape, SPECS[0] | {"weight_bits": 32})
    assert analytic == count_parameters(student).total > count_parameters(trimmed).total
    sizes = {"num_layers": [1, 2], "hidden_size": [16], "num_heads": [2], "ffn_size": [32], "trim_vocab": [False, True]}
    assert count_parameters(trimmed).total <= analytic - 1
    limited = SearchSpace(shape, sizes, limits={"max_params": int(analytic) - 1})
    assert sorted(limited.enumerate_valid()) == [(0, 0, 0, 0, 0), (0, 0, 0, 0, 1)]  # 2 layers excluded, trimmed or not


def test_yaml_round_trip_and_hash_include_the_limits(tmp_path: Path) -> None:
    limited = space({"min_speedup": 2, "max_params": 20000.0, "max_size_mb": 0.1})
    assert limited.to_dict()["limits"] == {"min_speedup": 2.0, "max_params": 20000, "max_size_mb": 0.1}
    text = limited.to_yaml(tmp_path / "space.yaml")
    assert "limits: {min_speedup: 2.0, max_params: 20000, max_size_mb: 0.1}" in text
    again = SearchSpace.from_yaml(tmp_path / "space.yaml")
    assert again == limited and again.space_hash() == limited.space_hash() and again.to_yaml() == text
    assert again.limits == Limits(2.0, 20000, 0.1) and again.teacher == TEACHER
    assert space({"min_speedup": 2.0, "max_params": 20000}).space_hash() != limited.space_hash()
    assert space().space_hash() != limited.space_hash()
    assert space().with_limits(limited.limits) == limited
    assert limited.with_limits({"min_speedup": 1.5}).limits == Limits(1.5, 20000, 0.1)


def test_yaml_written_before_limits_still_loads(tmp_path: Path) -> None:
    old = space().to_dict()
    del old["limits"]
    old["teacher"] = {name: old["teacher"][name] for name in list(old["teacher"])[:4]}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    loaded = SearchSpace.from_yaml(tmp_path / "old.yaml")
    assert loaded.teacher.vocab_size == 30522 and loaded.teacher.num_labels == 2 and loaded.limits == Limits()
    assert loaded.space_hash() == SearchSpace.from_yaml(tmp_path / "old.yaml").space_hash()


def test_default_space_takes_limits_and_keeps_only_candidates_that_meet_them() -> None:
    minilm = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    limited = SearchSpace.default_for(minilm, limits={"min_speedup": 5, "max_size_mb": 20})
    assert (
        limited.teacher.vocab_size == minilm.vocab_size
        and 0 < limited.num_valid() < SearchSpace.default_for(minilm).num_valid()
    )
    rng = np.random.default_rng(1)
    for _ in range(30):
        values = limited.values(limited.sample(rng))
        config = bert_config(limited.teacher, values["num_layers"], values["hidden_size"], values["ffn_size"], 1)
        assert theoretical_speedup(minilm, config, 1, 64) >= 5
        assert bert_weight_bytes(config, values["weight_bits"]) <= 20e6


def test_a_limit_no_candidate_meets_is_an_error_naming_the_best_value() -> None:
    fastest = max(oracle(space().values(c))["min_speedup"] for c in space().enumerate_valid())
    with pytest.raises(
        ValueError, match=r"no candidate meets min_speedup=1e\+09 \(--min-speedup\): the fastest"
    ) as info:
        space({"min_speedup": 1e9})
    assert f"reaches {fastest:.4g}x FLOPs speed-up" in str(info.value)
    smallest = min(oracle(space().values(c))["max_params"] for c in space().enumerate_valid())
    with pytest.raises(
        ValueError, match=f"max_params=10 \\(--max-params\\): the smallest in the space has {smallest:,}"
    ):
        space({"max_params": 10})
    with pytest.raises(ValueError, match=r"max_size_mb=1e-06 \(--max-size-mb\): the smallest in the space has"):
        space({"max_size_mb": 1e-6})
    deep = TeacherShape(num_hidden_layers=12, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    shallow_and_wide = Constraint({"num_layers": [1]}, {"hidden_size": [8]}, "no shallow and narrow students")
    dims, fixed_sizes = {"num_layers": [1, 12], "hidden_size": [8, 32]}, {"num_heads": 4, "ffn_size": 16}
    apart = SearchSpace(deep, dims, fixed_sizes, [shallow_and_wide], {"min_speedup": 12})
    assert [apart.values(c) for c in apart.enumerate_valid()] == [{"num_layers": 1, "hidden_size": 32}]
    apart = SearchSpace(deep, dims, fixed_sizes, [shallow_and_wide], {"max_params": 300_000})
    assert [apart.values(c) for c in apart.enumerate_valid()] == [{"num_layers": 12, "hidden_size": 8}]
    with pytest.raises(ValueError, match=r"min_speedup=12 .* and max_params=300000 .* together; alone, the fastest"):
        SearchSpace(deep, dims, fixed_sizes, [shallow_and_wide], {"min_speedup": 12, "max_params": 300_000})
    fixed = {"num_layers": 4, "hidden_size": 32, "num_heads": 4, "ffn_size": 64}
    with pytest.raises(ValueError, match=r"min_speedup=2 \(--min-speedup\): the fixed sizes give 1x FLOPs"):
        SearchSpace(TEACHER, {"alpha": [0.5, 0.9]}, fixed, limits={"min_speedup": 2})
    short = dataclasses.replace(TEACHER, max_position_embeddings=32)
    with pytest.raises(ValueError, match="measured on 64 tokens, but the teacher's max_position_embeddings=32"):
        SearchSpace(short, DIMENSIONS, limits={"min_speedup": 2})


@pytest.mark.parametrize("name", ["min_speedup", "max_params", "max_size_mb"])
@pytest.mark.parametrize("value", [-1, 0, math.nan, math.inf, "3", True, [3]])
def test_a_bad_limit_value_is_an_error_naming_it(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{name}={value!r}".replace("[", r"\[").replace("]", r"\]")):
        space({name: value})


def test_limits_reject_unknown_keys_and_fractional_params() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['speedup'\]"):
        Limits.from_dict({"speedup": 3})
    with pytest.raises(ValueError, match=r"max_params=1\.5 must be a positive integer"):
        Limits(max_params=1.5)
    with pytest.raises(ValueError, match="limits must be a mapping"):
        SearchSpace.from_dict(space().to_dict() | {"limits": [3]})


@pytest.mark.parametrize("env_id", ["distilsearch/StudentSearch-v0", "distilsearch/StudentSearchOneShot-v0"])
def test_env_constructor_applies_limits(toy_table_evaluator, env_id: str) -> None:
    limits = {"min_speedup": 2.5, "max_size_mb": 3.0}
    env = gym.make(env_id, evaluator=toy_table_evaluator, space=TOY_SPACE, limits=limits).unwrapped
    assert env.space == TOY_SPACE.with_limits(limits) and 0 < env.space.num_valid() < TOY_SPACE.num_valid()
    rng = np.random.default_rng(0)
    for _ in range(8):
        env.reset(seed=0)
        done, info = False, {}
        while not done:
            mask = env.action_masks()
            if isinstance(env.action_space, gym.spaces.Discrete):
                action = int(rng.choice(np.flatnonzero(mask)))
            else:
                action = np.asarray(env.space.sample(rng))
            _, _, done, _, info = env.step(action)
        values = env.space.values(info["choices"])
        assert info["invalid_reason"] is None
        assert measure("min_speedup", TOY_SPACE.teacher, values) >= 2.5
        assert measure("max_size_mb", TOY_SPACE.teacher, values) <= 3.0
    if isinstance(env.action_space, gym.spaces.MultiDiscrete):
        assert env.action_masks().tolist() == np.concatenate(env.space.validity_mask([])).tolist()


runner = CliRunner()


@pytest.fixture
def toy_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setitem(TASKS, TOY_TASK, dataclasses.replace(TASKS["rt-polarity"], name=TOY_TASK))
    space_file = tmp_path / "space.yaml"
    TOY_SPACE.to_yaml(space_file)
    return write_toy_table(tmp_path / "toy.csv"), space_file


def search_command(table: Path, space_file: Path, run: Path, *limits: str) -> list[str]:
    options = ["--backend", "table", "--table", str(table), "--space", str(space_file), "--agent", "random"]
    return ["search", *options, "--budget", "3", "--out", str(run), "--task", TOY_TASK, *limits]


def test_cli_unreachable_limit_exits_2_naming_it(toy_files: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, search_command(*toy_files, tmp_path / "run", "--min-speedup", "1e9"))
    assert result.exit_code == 2
    assert "no candidate meets min_speedup=1e+09 (--min-speedup): the fastest in the space reaches" in result.output
    assert not (tmp_path / "run" / "evaluations.jsonl").exists()


@pytest.mark.parametrize(("flag", "value"), [("--max-params", "-5"), ("--min-speedup", "nan"), ("--max-size-mb", "0")])
def test_cli_bad_limit_exits_2_before_the_run_folder(
    toy_files: tuple[Path, Path], tmp_path: Path, flag: str, value: str
) -> None:
    result = runner.invoke(app, search_command(*toy_files, tmp_path / "run", flag, value))
    assert result.exit_code == 2 and f"{flag.removeprefix('--').replace('-', '_')}=" in result.output
    assert not (tmp_path / "run").exists()


def test_cli_search_stays_inside_the_limits_and_refuses_a_resume_with_others(
    toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    first = runner.invoke(app, search_command(*toy_files, run, "--min-speedup", "2.5", "--max-params", "1100000"))
    assert first.exit_code == 0, first.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["min_speedup"], saved["max_params"], saved["max_size_mb"]) == (2.5, 1100000, None)
    entries = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()[1:]]
    assert len(entries) == 3
    limited = TOY_SPACE.with_limits({"min_speedup": 2.5, "max_params": 1100000})
    for entry in entries:
        candidate = entry["candidate"] if "candidate" in entry else entry["result"]["candidate"]
        values = {**candidate["spec"], **candidate["kd"]}
        assert measure("min_speedup", limited.teacher, values) >= 2.5
        assert measure("max_params", limited.teacher, values) <= 1100000
    other = runner.invoke(app, search_command(*toy_files, run, "--min-speedup", "3", "--max-params", "1100000"))
    assert other.exit_code == 2 and "min_speedup: 2.5 -> 3.0" in other.output
