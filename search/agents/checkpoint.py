"""Agent checkpoints: a versioned JSON state with the ledger's length and the generator's state, written atomically.

A checkpoint is checked on load against the run's ledger: it must not claim more evaluations than the ledger holds
(the ledger is written first, so it can only be ahead, after a crash between the two writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from distilsearch.kdlib.core.atomic import write_json_atomic
from distilsearch.search.budget import BudgetedEvaluator


class CheckpointError(ValueError):
    """An agent checkpoint that cannot be used: unreadable, of another version, or ahead of the ledger."""


def load_state(
    path: Path, version: int, budgeted: BudgetedEvaluator, required: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when absent), checked for its version, its ``required`` fields and against
    the ledger's length; :class:`CheckpointError` (naming ``path``) when it cannot be used."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"agent state {path} is unreadable ({error}); restore it or start a new run") from None
    if not isinstance(state, dict) or not isinstance(state.get("evaluations"), int):
        raise CheckpointError(f"agent state {path} is not a checkpoint (no evaluation count); start a new run")
    if state.get("version") != version:
        raise CheckpointError(f"{path}: state version {state.get('version')!r} is not {version}")
    missing = [name for name in ("rng", *required) if name not in state]
    if missing:
        raise CheckpointError(f"agent state {path} lacks {', '.join(missing)}; start a new run")
    if len(budgeted) < state["evaluations"]:
        raise CheckpointError(
            f"{path} was written after {state['evaluations']} evaluations but the ledger holds {len(budgeted)}; "
            "resume with the BudgetedEvaluator's history_path in the same run directory"
        )
    return state


def save_state(path: Path, version: int, budgeted: BudgetedEvaluator, rng: np.random.Generator, **fields: Any) -> None:
    """Write a checkpoint: ``fields``, the ledger's length and the generator's state, atomically as JSON."""
    state = {"version": version, **fields, "evaluations": len(budgeted), "rng": rng.bit_generator.state}
    write_json_atomic(path, state)
