"""The one place that names the files of a search run folder.

A run folder holds: ``config.yaml`` (the settings it was started with), ``store.sqlite`` (every evaluation, the
evaluation store), ``evaluations.jsonl`` (the ledger: the run's distinct requests in order, with cost and fidelity),
``search.log``, ``agent.json`` (the agent's identity, checked on resume) and the agent's own state file (below),
``frontier.csv`` / ``frontier.png`` / ``hypervolume.png`` (written at the end of every session), ``students/``
(exported students), the lock ``.lock`` and its holder ``.lock.holder``; PPO adds ``policy-<sha256>.safetensors``,
``tensorboard/`` and ``logs/``; DNAS adds ``dnas/<sweep>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
STORE = "store.sqlite"
LEDGER = "evaluations.jsonl"
LOG = "search.log"
AGENT_MANIFEST = "agent.json"
FRONTIER_CSV = "frontier.csv"
FRONTIER_PNG = "frontier.png"
HYPERVOLUME_PNG = "hypervolume.png"
STUDENTS = "students"
LOCK = ".lock"
LOCK_HOLDER = ".lock.holder"
AGENT_STATES = {
    "evolution": "evolution.json",
    "successive-halving": "successive_halving.json",
    "hyperband": "hyperband.json",
    "mo-asha": "mo_asha.json",
    "ppo": "policy.json",
    "dnas": "dnas.json",
}
PPO_LEGACY_MODEL = "model.zip"
DNAS_FOLDER = "dnas"
# What marks a folder as a run folder (never a destination for exports).
MARKERS = (CONFIG, STORE, LEDGER)
# What a start writes before any evaluation: a folder holding only these has spent nothing.
START_FILES = frozenset({CONFIG, LOG, LEDGER, STORE, f"{STORE}-wal", f"{STORE}-shm", LOCK, LOCK_HOLDER})


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def store(self) -> Path:
        return self.root / STORE

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def frontier_csv(self) -> Path:
        return self.root / FRONTIER_CSV

    @property
    def frontier_png(self) -> Path:
        return self.root / FRONTIER_PNG

    @property
    def hypervolume_png(self) -> Path:
        return self.root / HYPERVOLUME_PNG

    def student(self, rank: int) -> Path:
        """Where ``export`` saves the rank-``rank`` frontier student by default."""
        return self.root / STUDENTS / f"rank-{rank}"


class ResumeMismatch(ValueError):
    """A run folder was started with other settings than the ones given now (one message for every check)."""

    def __init__(self, run_dir: Path, differences: list[str]) -> None:
        self.run_dir = Path(run_dir)
        self.differences = tuple(differences)
        super().__init__(
            f"run folder {run_dir} was started with other settings ({'; '.join(differences)}); use another run "
            "folder (--out), or the same settings to resume"
        )


def setting_differences(started: dict, now: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """``name: then -> now`` for every setting (not in ``ignore``) whose value differs, sorted by name."""
    return [
        f"{name}: {started.get(name)!r} -> {now.get(name)!r}"
        for name in sorted(started.keys() | now.keys())
        if name not in ignore and started.get(name) != now.get(name)
    ]
