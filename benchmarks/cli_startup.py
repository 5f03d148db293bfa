"""Wall time of ``distilsearch --help`` and ``distilsearch tasks``: how fast the command line answers.

Each command runs ``--runs`` times in a fresh process (interleaved, after one discarded warm-up round), beside the
bare interpreter start for reference; the median, fastest and slowest run are reported, with the load average before
and after (the machine is shared) and the slowest imports of ``distilsearch.search.cli.main`` (``python -X
importtime``).

    .venv/bin/python -m benchmarks.cli_startup [--runs 7] [--baseline REV]

``--baseline REV`` also times the command line of git revision ``REV`` (any revision with the ``distilsearch``
namespace, e.g. the one before the CLI was made lazy) in the same interleaved rounds: REV is checked out into a
temporary worktree whose folders are exposed as ``distilsearch.*`` on ``PYTHONPATH`` ahead of the installed package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import RESULTS, command_line, markdown_table

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SLOWEST_IMPORTS = 10


def cli_executable() -> str:
    """The ``distilsearch`` console script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("distilsearch")
    found = str(beside) if beside.is_file() else shutil.which("distilsearch")
    if found is None:
        raise SystemExit("no distilsearch console script beside the interpreter or on PATH; install the package")
    return found


def wall_seconds(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from start to exit of ``argv``, output discarded; a failing command stops the benchmark."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=os.environ | OFFLINE | (env or {}))
    return time.perf_counter() - started


@contextlib.contextmanager
def baseline_path(revision: str) -> Iterator[str]:
    """A ``PYTHONPATH`` entry whose ``distilsearch`` namespace holds git revision ``revision``'s three layers."""
    repository = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="cli-baseline-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach", str(tree), revision], check=True)
        try:
            namespace = Path(scratch) / "path" / "distilsearch"
            namespace.mkdir(parents=True)
            for layer in ("kdlib", "envs", "search"):
                (namespace / layer).symlink_to(tree / layer)
            yield str(namespace.parent)
        finally:
            subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force", str(tree)], check=True)


def slowest_imports(count: int) -> list[tuple[float, str]]:
    """The ``count`` imports with the largest cumulative time (seconds, module) when importing the CLI."""
    finished = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import distilsearch.search.cli.main"],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | OFFLINE,
    )
    rows = []
    for line in finished.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[1].strip().isdigit():
            rows.append((int(fields[1]) / 1e6, fields[2].strip()))
    return sorted(rows, reverse=True)[:count]


def measure(
    runs: int, baseline: str | None, revision: str | None
) -> tuple[dict[str, list[float]], tuple[float, ...], tuple[float, ...]]:
    """Interleaved wall times of every command (and of the baseline's, when given) with the load before and after."""
    cli = cli_executable()
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass (interpreter start)": ([sys.executable, "-c", "pass"], {}),
        "distilsearch --help": ([cli, "--help"], {}),
        "distilsearch tasks": ([cli, "tasks"], {}),
    }
    if baseline is not None:
        old = [sys.executable, "-c", "from distilsearch.search.cli.main import main; main()"]
        for command in ("--help", "tasks"):
            commands[f"distilsearch {command} at {revision}"] = ([*old, command], {"PYTHONPATH": baseline})
    load_before = os.getloadavg()
    for argv, env in commands.values():
        wall_seconds(argv, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            times[name].append(wall_seconds(argv, env))
    return times, load_before, os.getloadavg()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command")
    parser.add_argument("--baseline", metavar="REV", help="also time the command line of this git revision")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        baseline = stack.enter_context(baseline_path(args.baseline)) if args.baseline else None
        times, load_before, load_after = measure(args.runs, baseline, args.baseline)
    rows = [
        [f"`{name}`", f"{statistics.median(runs):.2f}", f"{min(runs):.2f}-{max(runs):.2f}"]
        for name, runs in times.items()
    ]
    imports = [[f"`{module}`", f"{seconds:.3f}"] for seconds, module in slowest_imports(SLOWEST_IMPORTS)]
    report = "\n\n".join(
        [
            "# CLI start-up time",
            f"Command: `{command_line()}` ({args.runs} interleaved runs per command after a warm-up round; "
            "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1).",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min).",
            markdown_table(["command", "wall s (median)", "range"], rows),
            "Slowest imports of `distilsearch.search.cli.main` (cumulative, one `python -X importtime` run):",
            markdown_table(["module", "s"], imports),
        ]
    )
    out = RESULTS / "cli_startup.md"
    out.write_text(report + "\n", encoding="utf-8")
    print(report)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
