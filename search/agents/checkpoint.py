"""Agent checkpoints: a versioned JSON state with the ledger's length and the generator's state, written atomically.

A checkpoint is checked on load against the run's ledger: it must not claim more evaluations than the ledger holds
(the ledger is written first, so it can only be ahead, after a crash between the two writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kdlib.atomic import write_json_atomic
from search.budget import BudgetedEvaluator


def load_state(path: Path, version: int, budgeted: BudgetedEvaluator) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when absent), checked for its version and against the ledger's length."""
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("version") != version:
        raise ValueError(f"{path}: state version {state.get('version')!r} is not {version}")
    if len(budgeted) < state["evaluations"]:
        raise ValueError(
            f"{path} was written after {state['evaluations']} evaluations but the ledger holds {len(budgeted)}; "
            "resume with the BudgetedEvaluator's history_path in the same run directory"
        )
    return state


def save_state(path: Path, version: int, budgeted: BudgetedEvaluator, rng: np.random.Generator, **fields: Any) -> None:
    """Write a checkpoint: ``fields``, the ledger's length and the generator's state, atomically as JSON."""
    state = {"version": version, **fields, "evaluations": len(budgeted), "rng": rng.bit_generator.state}
    write_json_atomic(path, state)
