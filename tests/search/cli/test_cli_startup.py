"""The command line starts light: importing it, ``--help`` and ``tasks`` load no torch, transformers, Ray or SB3.

Each check runs in a fresh interpreter, since this test process has long imported them. Timing belongs in
``benchmarks/cli_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "ray", "stable_baselines3")
REPORT_HEAVY = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
INVOKE = (
    "import json, sys; from typer.testing import CliRunner; from distilsearch.search.cli.main import app; "
    "result = CliRunner().invoke(app, sys.argv[1:]); "
    "print(json.dumps({'exit_code': result.exit_code, 'stdout': result.stdout})); " + REPORT_HEAVY
)


def python(code: str, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=os.environ | environment,
    )


def test_importing_the_cli_loads_no_heavy_library() -> None:
    finished = python(f"import json, sys; import distilsearch.search.cli.main; {REPORT_HEAVY}")
    assert json.loads(finished.stdout) == []


@pytest.mark.parametrize(
    "argv",
    [["--help"], *([command, "--help"] for command in ("distill", "teacher", "search", "store")), ["tasks", "--json"]],
)
def test_help_and_tasks_load_no_heavy_library(argv: list[str]) -> None:
    result_line, heavy_line = python(INVOKE, *argv).stdout.splitlines()
    result = json.loads(result_line)
    assert result["exit_code"] == 0, result["stdout"]
    assert json.loads(heavy_line) == []
    if argv[0] == "tasks":
        assert "rt-polarity" in {row["task"] for row in json.loads(result["stdout"])}


def test_library_progress_bars_are_quiet_off_a_terminal_unless_the_user_chose() -> None:
    code = (
        "import os; from distilsearch.search.cli.main import QUIET_PROGRESS_VARIABLES, quiet_library_progress; "
        "quiet_library_progress(); print(*(os.environ.get(name) for name in QUIET_PROGRESS_VARIABLES))"
    )
    clean = {name: value for name, value in os.environ.items() if "DISABLE_PROGRESS_BARS" not in name}
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=clean
    )
    assert finished.stdout.split() == ["1", "1"]
    assert python(code, HF_HUB_DISABLE_PROGRESS_BARS="0").stdout.split()[0] == "0"
