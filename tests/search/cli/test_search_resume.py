"""A live search killed with SIGKILL midway resumes with the same command: nothing evaluated twice, same budget; in
this process and on Ray workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[2]
ENTRY = (
    "import sys; from ray_helpers import register_toy_task; register_toy_task(); "
    "from distilsearch.search.cli.main import main; sys.argv[0] = 'distilsearch'; main()"
)
BUDGET = 4


def command(run: Path, base: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        ENTRY,
        "search",
        "--task",
        "toy-sentiment",
        "--base",
        str(base),
        "--backend",
        "live",
        "--agent",
        "random",
        "--budget",
        str(BUDGET),
        "--out",
        str(run),
        "--seed",
        "3",
        *extra,
    ]


def environment() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}


def ledger(run: Path) -> list[dict]:
    path = run / "evaluations.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()[1:] if line.strip()]


def distillations(run: Path) -> list[int]:
    """The distillation count logged by each finished process."""
    text = (run / "search.log").read_text()
    return [int(count) for count in re.findall(r"distillations in this process: (\d+)", text)]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_midway_then_resume(tiny_bert_dir: Path, tmp_path: Path, workers: int) -> None:
    run = tmp_path / "run"
    extra = ("--workers", str(workers))
    first = subprocess.Popen(
        command(run, tiny_bert_dir, *extra),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while len(ledger(run)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, first.stderr.read() if first.stderr else ""
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    completed_before_kill = len(ledger(run))
    assert 2 <= completed_before_kill < BUDGET
    second = subprocess.run(
        command(run, tiny_bert_dir, *extra, "--retry-failed"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    entries = ledger(run)
    hashes = [json.dumps(entry["candidate"], sort_keys=True) for entry in entries]
    assert len(entries) == BUDGET and len(set(hashes)) == BUDGET
    assert distillations(run) == [BUDGET - completed_before_kill]
    assert (run / "frontier.csv").is_file() and (run / "frontier.png").is_file()
