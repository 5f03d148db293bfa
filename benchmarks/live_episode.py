"""One live episode of distilsearch/StudentSearch-v0 on the real rt-polarity teacher at the lowest fidelity.

Random masked actions choose a student and a KD recipe one decision at a time; the terminal step distils and
measures it for real (``LiveEvaluator``, fidelity ``low``). Reports the wall time of the episode and of the
evaluation, the candidate, its metrics and the reward. Writes ``results/live_episode.md``.

    .venv/bin/python -m benchmarks.live_episode [--seed 0] [--fidelity low]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the environment ids)
from benchmarks.common import RESULTS, command_line, environment_line
from distilsearch.envs.live import LiveEvaluator
from distilsearch.envs.rewards import WeightedReward
from distilsearch.envs.space import DEFAULT_FIXED, SearchSpace
from distilsearch.envs.store import EvaluationStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fidelity", default="low")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distilsearch-live-") as scratch:
        store = EvaluationStore(Path(scratch) / "store.sqlite")
        evaluator = LiveEvaluator("rt-polarity", fidelity=args.fidelity, store=store, progress=True)
        ready = time.perf_counter()
        space = SearchSpace.default_for(
            evaluator.student_evaluator.teacher_config, fixed=DEFAULT_FIXED | {"max_length": 64}
        )
        env = gym.make("distilsearch/StudentSearch-v0", evaluator=evaluator, space=space, reward=WeightedReward())
        rng = np.random.default_rng(args.seed)
        env.reset(seed=args.seed)
        episode_started = time.perf_counter()
        decisions, terminated, reward, info = 0, False, 0.0, {}
        while not terminated:
            mask = env.unwrapped.action_masks()
            action = int(rng.choice(np.flatnonzero(mask)))
            _, reward, terminated, _, info = env.step(action)
            decisions += 1
        episode_seconds = time.perf_counter() - episode_started
    total = time.perf_counter() - started
    metrics = {key: info[key] for key in ("status", "accuracy", "mean_ood_accuracy", "retention") if key in info}
    report = "\n\n".join(
        [
            "# A live StudentSearch-v0 episode on the rt-polarity teacher",
            f"Command: `{command_line()}`.",
            environment_line(),
            f"Fidelity `{args.fidelity}`; {decisions} decisions (random among the masked-valid choices, "
            f"seed {args.seed}).",
            f"Episode wall time: **{episode_seconds:.1f} s** (the terminal step distils and measures the student); "
            f"set-up (teacher from cache, data, tokenization): {ready - started:.1f} s; total {total:.1f} s.",
            f"Reward ({type(env.unwrapped.reward).__name__}): {float(reward):.4f}.",
            f"Candidate: `{info.get('candidate')}`",
            f"Metrics: `{json.dumps(metrics)}`; objectives: `{info.get('objectives')}`.",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "live_episode.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
