"""Selection discipline: nothing an agent sees depends on test labels.

The toy task is built twice, once with every test label (the test split and the OOD test halves) flipped. Teachers,
distillations and agents run for real on both; every agent-visible value -- the ledger order, rewards, blinded
results, the environment's ``info`` -- must be identical, while the reported test accuracy does change (so the test
can fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import toy_sentiment_frames
from ray_helpers import FAST_LATENCY, TOY_RECIPE

from distilsearch.envs.fidelity import Fidelity, rung
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.envs.student_search import StudentSearchEnv
from distilsearch.kdlib.data.splits import split_halves
from distilsearch.kdlib.data.tasks import TASKS, TaskDefinition, load_task, register_task
from distilsearch.kdlib.training.teacher import get_teacher
from distilsearch.search.agents import make_agent
from distilsearch.search.budget import BudgetedEvaluator

TASK = "toy-flippable"
TINY = Fidelity("tiny", max_steps=8)
SPACE = SearchSpace(
    TeacherShape(num_hidden_layers=4, hidden_size=32, num_attention_heads=4, intermediate_size=64),
    {"num_layers": [1, 2], "ffn_size": [32, 64], "alpha": [0.5, 0.9]},
    {"hidden_size": 32, "num_heads": 4, "max_steps": 8, "batch_size": 16, "max_length": 16, "lr": 1e-3},
)
AGENTS = {
    "random": {},
    "evolution": {"population_size": 2, "sample_size": 2},
    "ppo": {"candidates_per_rollout": 2, "minibatches": 1, "n_epochs": 1},
}


def _flipped(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=1 - frame["label"])


def _frames(flip: bool):
    def build(ood_limit: int | None, progress: bool):
        splits, ood, notes = toy_sentiment_frames(ood_limit, progress)
        if not flip:
            return splits, ood, notes
        splits = splits | {"test": _flipped(splits["test"])}
        flipped_ood = {}
        for name, frame in ood.items():
            _, test = split_halves(frame, ("text",))
            in_test = frame["text"].isin(set(test["text"]))
            flipped_ood[name] = frame.assign(label=frame["label"].where(~in_test, 1 - frame["label"]))
        return splits, flipped_ood, notes

    return build


def _agent_view(flip: bool, home: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Everything the agents saw on the toy task (test labels flipped or not), plus the reported test accuracies."""
    monkeypatch.setenv("DISTILSEARCH_HOME", str(home))
    register_task(TaskDefinition(TASK, "toy", ("text",), ("negative", "positive"), _frames(flip)))
    try:
        teacher = get_teacher(TASK, TOY_RECIPE, base_dir=tiny_bert_dir, device="cpu", progress=False)
        task = load_task(TASK, progress=False)
        seen: dict = {"test": [], "ood_test": []}
        for name, options in AGENTS.items():
            evaluator = LiveEvaluator(
                task, teacher=teacher, fidelity=TINY, device="cpu", latency=FAST_LATENCY, progress=False
            )
            budgeted = BudgetedEvaluator(evaluator, 3, history_path=home / name / "ledger.jsonl")
            make_agent(name, **options).run(budgeted, SPACE, home / name, seed=1)
            seen[name] = [
                (entry.candidate.content_hash(), entry.fidelity, entry.reward, _selection(entry.result))
                for entry in budgeted.history
            ]
            seen["test"] += [result.accuracy for result in budgeted.results()]
            seen["ood_test"] += [result.mean_ood_accuracy for result in budgeted.results()]
        rungs = BudgetedEvaluator(evaluator, 20, unit="steps")
        at_rung = rungs.evaluate(SPACE.decode((1, 0, 0)), rung(4))
        seen["rung"] = (_selection(at_rung), rungs.spent)
        env = StudentSearchEnv(evaluator, SPACE)
        env.reset(seed=0)
        info: dict = {}
        for action in (1, 0, 1):
            _, reward, _, _, info = env.step(action)
        kept = {key: value for key, value in info.items() if key not in VARYING_INFO and not key.startswith(TIMED)}
        kept["objectives"] = np.delete(info["objectives"], 2)  # the measured latency varies run to run
        seen["env"] = (reward, json.dumps(kept, sort_keys=True, default=lambda value: value.tolist()))
        return seen
    finally:
        TASKS.pop(TASK, None)


VARYING_INFO = {"provenance", "train_seconds", "eval_seconds", "curve_seconds", "simulated_seconds", "simulated_time"}
TIMED = ("latency_ms/", "teacher_latency_ms/", "speedup/")


def _selection(result) -> dict:
    """The selection fields of a blinded result, minus the wall-clock timings (which vary run to run)."""
    data = result.model_dump(mode="json", exclude={"provenance", "latency", "train_seconds", "eval_seconds"})
    data["learning_curve"] = [
        (p["step"], p["validation_accuracy"], p["ood_dev_accuracy"]) for p in data["learning_curve"]
    ]
    data.pop("curve_seconds")
    return data


def test_flipping_test_labels_changes_nothing_an_agent_sees(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _agent_view(False, tmp_path / "original", tiny_bert_dir, monkeypatch)
    flipped = _agent_view(True, tmp_path / "flipped", tiny_bert_dir, monkeypatch)
    for name in (*AGENTS, "rung", "env"):
        assert original[name] == flipped[name], name
    assert all(entry[3]["accuracy"] is None for name in AGENTS for entry in original[name])
    # The reports do read the flipped labels: test accuracy a becomes 1 - a.
    assert flipped["test"] == pytest.approx([1 - value for value in original["test"]])
    assert original["ood_test"] != flipped["ood_test"]
