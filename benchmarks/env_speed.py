"""Raw environment steps per second of distilsearch/StudentSearch-v0 and distilsearch/StudentSearchOneShot-v0 on the
table backend, with random valid actions (sampled before timing; the sequential env picks uniformly among the
masked-valid choices at each step, reading ``action_masks()`` as MaskablePPO does).

The benchmark table is SYNTHETIC: made-up metrics for every valid candidate of a small space, written to a temporary
folder; only the speed of the environment is measured. Every candidate is stepped through once before timing, so the
numbers are for warm caches (decoded candidates, masks, table lookups), the regime of a long search; a first visit
of a candidate costs more (decoding, hashing, reading its table row).

    .venv/bin/python benchmarks/env_speed.py [--seconds 3] [--out results/env_speed.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the environment ids)
from distilsearch.envs.evaluators import TableEvaluator, write_table
from distilsearch.envs.rewards import MnasNetReward
from distilsearch.envs.space import SearchSpace, TeacherShape
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint

SPACE = SearchSpace(
    TeacherShape(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    {
        "num_layers": [1, 2, 3, 4, 5, 6],
        "hidden_size": [96, 192, 288, 384],
        "num_heads": [4, 6, 8, 12],
        "ffn_size": [384, 768, 1536],
        "init": ["teacher", "random"],
        "weight_bits": [32, 8],
        "alpha": [0.5, 0.9],
        "temperature": [1.0, 4.0],
    },
    {"max_steps": 2000},
)
POOL = 4096


def synthetic_result(candidate: Candidate) -> EvalResult:
    """SYNTHETIC metrics (not a measurement): accuracy and latency grow with the encoder size."""
    spec = candidate.spec
    share = spec.num_layers * spec.hidden_size * (spec.hidden_size + spec.ffn_size) / (6 * 384 * (384 + 1536))
    ms = 0.5 + 9.5 * share
    point = LatencyPoint(
        batch=1,
        seq_len=64,
        median_ms=ms,
        p10_ms=ms,
        p90_ms=ms,
        teacher_median_ms=10.0,
        speedup=10.0 / ms,
        theoretical_speedup=1.0 / share,
    )
    accuracy = 0.7 + 0.15 * share**0.3
    return EvalResult(
        candidate=candidate,
        status="ok",
        accuracy=accuracy,
        teacher_accuracy=0.86,
        ood_accuracy={"ood": accuracy - 0.1},
        teacher_ood_accuracy={"ood": 0.76},
        latency=[point],
        params_total=int(share * 22_000_000),
    )


def rate(run: Callable[[int], int], seconds: float) -> tuple[int, float]:
    """Call ``run(batch)`` (returns steps taken) until ``seconds`` have passed; (steps, elapsed)."""
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        steps += run(1000)
    return steps, elapsed


def one_shot_runner(env: gym.Env, actions: list[np.ndarray]) -> Callable[[int], int]:
    cursor = [0]

    def run(batch: int) -> int:
        for _ in range(batch):
            env.reset()
            env.step(actions[cursor[0] % len(actions)])
            cursor[0] += 1
        return batch

    return run


def sequential_runner(env: gym.Env, draws: np.ndarray) -> Callable[[int], int]:
    masks = env.get_wrapper_attr("action_masks")
    cursor = [0]

    def run(batch: int) -> int:
        steps = 0
        while steps < batch:
            env.reset()
            terminated = False
            while not terminated:
                allowed = np.flatnonzero(masks())
                action = int(allowed[int(draws[cursor[0] % len(draws)] * len(allowed))])
                cursor[0] += 1
                terminated = env.step(action)[2]
                steps += 1
        return steps

    return run


def first_visits(env: gym.Env) -> tuple[int, float]:
    """Step every valid candidate once (decision by decision for the sequential env), filling every cache;
    (steps, elapsed) of that cold pass."""
    sequential = isinstance(env.action_space, gym.spaces.Discrete)
    masks = env.get_wrapper_attr("action_masks")
    steps, start = 0, time.perf_counter()
    for choices in SPACE.enumerate_valid():
        env.reset()
        if sequential:
            for choice in choices:
                masks()
                env.step(choice)
            steps += len(choices)
        else:
            env.step(np.asarray(choices, dtype=np.int64))
            steps += 1
    return steps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration")
    parser.add_argument("--out", type=Path, default=Path("results/env_speed.md"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reward = MnasNetReward(target_latency_ms=5.0)
    actions = [np.asarray(SPACE.sample(rng), dtype=np.int64) for _ in range(POOL)]
    draws = rng.random(POOL * len(SPACE.names))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        results = [synthetic_result(SPACE.decode(choices)) for choices in SPACE.enumerate_valid()]
        path = write_table(
            results, Path(folder) / "synthetic.parquet", task="synthetic", teacher_key="synthetic", fidelity="synthetic"
        )
        for env_id, runner in (
            ("distilsearch/StudentSearchOneShot-v0", lambda env: one_shot_runner(env, actions)),
            ("distilsearch/StudentSearch-v0", lambda env: sequential_runner(env, draws)),
        ):
            made = gym.make(env_id, evaluator=TableEvaluator(path), space=SPACE, reward=reward)
            made.reset(seed=0)
            timings = [("gym.make, cold: first visit of every candidate", *first_visits(made))]
            for label, env in (("raw env.unwrapped, warm", made.unwrapped), ("gym.make, warm", made)):
                timings.append((label, *rate(runner(env), args.seconds)))
            for label, steps, elapsed in timings:
                rows.append((env_id, label, steps, elapsed, steps / elapsed))
                print(f"{env_id:34s} {label:48s} {steps / elapsed:10,.0f} steps/s ({steps} in {elapsed:.2f} s)")
    lines = [
        "# Environment speed (table backend)",
        "",
        f"Command: `{Path(sys.executable).name} benchmarks/env_speed.py --seconds {args.seconds:g}`; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}.",
        f"Synthetic table of {len(results)} candidates (every valid point of an {len(SPACE.names)}-dimension space). "
        "Cold: a fresh env and table step through every candidate once. Warm: random valid actions afterwards.",
        "",
        "| environment | interface | steps | seconds | steps/s |",
        "| --- | --- | ---: | ---: | ---: |",
        *(
            f"| `{env_id}` | {label} | {steps} | {elapsed:.2f} | {per:,.0f} |"
            for env_id, label, steps, elapsed, per in rows
        ),
        "",
        "A one-shot step is a whole episode (reset + step); a sequential step is one decision "
        "(action_masks + step, plus a reset every episode).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
