"""The leaderboard's report: standings per agent and budget, PPO against random, a markdown page and a PNG.

Standings (per agent and budget, over seeds): the median and interquartile range (25th to 75th percentile) of the
final hypervolume as a share of the bench's optimum, and the evaluations a run needed to reach 90 % and 95 % of the
optimum, as a median over seeds in which a run that never reached it counts as never (the median is "not reached"
when fewer than half did) next to how many did. Beside them, the exact expectation of uniform random search
(:meth:`~distilsearch.envs.bench_research.BenchResearch.expected_hypervolume` over the space's candidates; the
candidates an incomplete table answers by prediction add no volume, as in the agents' scores).

PPO against random: one-sided Mann-Whitney U tests of the seeds' final shares in both directions; an agent "beats"
the other at a budget when its test gives p < 0.05, else the page says there is no significant difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import mannwhitneyu

from distilsearch.envs.bench_research import get_pair, reward_metric
from distilsearch.kdlib.core.atomic import write_text_atomic
from distilsearch.search.leaderboard import NOT_ON_A_TABLE, PAIR, RECORDS, Leaderboard, Record

REPORT = "leaderboard.md"
PLOT = "leaderboard.png"
THRESHOLDS = (0.90, 0.95)
SIGNIFICANCE = 0.05
CHALLENGERS = ("ppo", "maskable-ppo")
BASELINE = "random"


def reached(trace: Sequence[tuple[float, float]], target: float) -> float | None:
    """The evaluations spent when ``trace`` first reached ``target`` volume, or None when it never did."""
    return next((spent for spent, volume in trace if volume >= target * (1 - 1e-12)), None)


def share_at(trace: Sequence[tuple[float, float]], spent: float, optimum: float) -> float:
    """The hypervolume share a run held once it had spent ``spent`` evaluations (0 before its first)."""
    volumes = [volume for x, volume in trace if x <= spent + 1e-9]
    return (volumes[-1] if volumes else 0.0) / optimum


@dataclass(frozen=True)
class Standing:
    """One agent at one budget, over its seeds: final shares and evaluations to each threshold."""

    agent: str
    budget: int
    shares: list[float]
    reach: dict[float, list[float | None]]

    @property
    def quartiles(self) -> tuple[float, float, float]:
        q25, median, q75 = np.percentile(self.shares, [25, 50, 75])
        return float(q25), float(median), float(q75)

    def evaluations_to(self, threshold: float) -> tuple[float | None, int]:
        """The median evaluations to ``threshold`` (None: not reached in at least half the runs), and how many did."""
        values = [math.inf if value is None else value for value in self.reach[threshold]]
        median = float(np.median(values))
        return (None if math.isinf(median) else median), sum(value is not None for value in self.reach[threshold])


def standings(board: Leaderboard) -> list[Standing]:
    """One :class:`Standing` per agent run and budget, in plan order."""
    optimum = board.bench.optimum
    grouped: dict[tuple[str, int], list[Record]] = {}
    for record in board.records:
        grouped.setdefault((record.agent, record.budget), []).append(record)
    return [
        Standing(
            agent,
            budget,
            [share_at(r.trace, budget, optimum) for r in runs],
            {t: [reached(r.trace, t * optimum) for r in runs] for t in THRESHOLDS},
        )
        for (agent, budget), runs in grouped.items()
    ]


@dataclass(frozen=True)
class Comparison:
    """A challenger against the baseline at one budget: medians, one-sided p-values and the verdict."""

    agent: str
    budget: int
    median: float
    baseline_median: float
    p_better: float
    p_worse: float

    @property
    def verdict(self) -> str:
        if self.p_better < SIGNIFICANCE:
            return f"{self.agent} beats {BASELINE}"
        if self.p_worse < SIGNIFICANCE:
            return f"{BASELINE} beats {self.agent}"
        return "no significant difference"


def comparisons(rows: Sequence[Standing]) -> list[Comparison]:
    """Each challenger (:data:`CHALLENGERS`) against :data:`BASELINE` at every budget both ran."""
    by_key = {(row.agent, row.budget): row for row in rows}
    found = []
    for row in rows:
        baseline = by_key.get((BASELINE, row.budget))
        if row.agent in CHALLENGERS and baseline is not None:
            better = mannwhitneyu(row.shares, baseline.shares, alternative="greater").pvalue
            worse = mannwhitneyu(row.shares, baseline.shares, alternative="less").pvalue
            found.append(
                Comparison(row.agent, row.budget, row.quartiles[1], baseline.quartiles[1], float(better), float(worse))
            )
    return found


def random_expectation(board: Leaderboard, k: int) -> float:
    """The exact expected share of uniform random search with ``k`` evaluations over the space's candidates."""
    research = board.bench.research
    return research.expected_hypervolume(PAIR, k, population=research.candidates) / board.bench.optimum


def _reach_cell(row: Standing, threshold: float) -> str:
    median, count = row.evaluations_to(threshold)
    shown = "not reached" if median is None else f"{median:.1f}"
    return f"{shown} ({count}/{len(row.shares)})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (a report should not name one machine's
    home), else as it is."""
    resolved = path.resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(path)


def _intro(board: Leaderboard) -> list[str]:
    bench, research = board.bench, board.bench.research
    first, second = get_pair(PAIR)
    front = research.front(PAIR)
    lines = ["# KD-Bench leaderboard", ""]
    if not bench.complete:
        lines += [
            f"**The table holds {research.rows} of {research.candidates} candidates; missing ones answered by the "
            "surrogate.** Its predictions are shown to the agents and add no volume; the optimum, the front and the "
            "exact expectations are those of the rows present. Rerun when the build completes.",
            "",
        ]
    return [
        *lines,
        f"Bench: `{_shown(bench.table.path)}` (space {bench.table.space_hash}), {research.candidates} candidates, "
        f"{research.rows} measured rows. Scored on {first.label} ({first.direction}) vs {second.label} "
        f"({second.direction}), reference point {front.reference}: the bench's true front holds {len(front.members)} "
        f"students, hypervolume {front.hypervolume:.6g}.",
        f"Agents optimise `{board.reward.name}`: {reward_metric(board.reward)} (MO-ASHA ranks its own Pareto fronts). "
        "A budget of k evaluations is k full trainings; multi-fidelity agents pay in training steps "
        f"({bench.full_steps} per evaluation), so their evaluations may be fractional.",
        f"Seeds 0..{board.seeds - 1}; runs in `{RECORDS}` (new this time: {board.ran}).",
        "",
    ]


def _standings(board: Leaderboard, rows: Sequence[Standing]) -> list[str]:
    body = []
    for row in rows:
        q25, median, q75 = row.quartiles
        reach = [_reach_cell(row, t) for t in THRESHOLDS]
        body.append([row.agent, str(row.budget), str(len(row.shares)), f"{median:.3f}", f"{q25:.3f}-{q75:.3f}", *reach])
    for budget in board.budgets:
        expected = random_expectation(board, budget)
        body.append(["uniform random (exact expectation)", str(budget), "-", f"{expected:.3f}", "-", "-", "-"])
    reach_header = [f"evaluations to {t:.0%} (reached)" for t in THRESHOLDS]
    return [
        "## Hypervolume share of the bench optimum",
        "",
        *_table(["agent", "budget", "runs", "median share", "IQR", *reach_header], body),
        "",
        f"![hypervolume share per agent and budget]({PLOT})",
        "",
    ]


def _comparisons(compared: Sequence[Comparison]) -> list[str]:
    if not compared:
        return ["## Does PPO beat random?", "", "Not compared: the leaderboard ran no PPO agent beside random.", ""]
    header = ["agent", "budget", "its median", "random median", "p (agent > random)", "p (random > agent)", "verdict"]
    body = []
    for c in compared:
        medians = [f"{c.median:.3f}", f"{c.baseline_median:.3f}"]
        body.append([c.agent, str(c.budget), *medians, f"{c.p_better:.3g}", f"{c.p_worse:.3g}", c.verdict])
    return [
        "## Does PPO beat random?",
        "",
        *_table(header, body),
        "",
        f"One-sided Mann-Whitney U tests over the seeds' final shares; 'beats' needs p < {SIGNIFICANCE}.",
        "",
    ]


def _research(board: Leaderboard) -> list[str]:
    research = board.bench.research
    body = []
    for name, optimum in research.reward_optima().items():
        if isinstance(optimum, str):
            body.append([name, f"not scored: {optimum}", "-", "-", "-", *("-" for _ in board.budgets)])
            continue
        best_of = [f"{research.expected_best_of(optimum.reward, k):.4f}" for k in board.budgets]
        mean = research.random_expectation(optimum.reward)
        body.append(
            [name, optimum.metric, f"{optimum.value:.4f}", optimum.candidate.summary(), f"{mean:.4f}", *best_of]
        )
    header = ["reward", "reads", "optimum", "best candidate", "random candidate (mean)"]
    return [
        "## Bench research (exact, from the table)",
        "",
        *_table([*header, *(f"random best of {k}" for k in board.budgets)], body),
        "",
    ]


def markdown(board: Leaderboard, rows: Sequence[Standing], compared: Sequence[Comparison]) -> str:
    """The leaderboard page: the bench and settings, standings, PPO against random, agents not run, bench research."""
    not_run = {**NOT_ON_A_TABLE, **board.skipped}
    skipped = [f"- `{name}`: {reason}." for name, reason in not_run.items()]
    sections = [
        _intro(board),
        _standings(board, rows),
        _comparisons(compared),
        ["## Agents not run", "", *skipped, ""],
        _research(board),
    ]
    return "\n".join(line for section in sections for line in section)


def plot(board: Leaderboard, rows: Sequence[Standing], path: Path) -> Path:
    """Two panels: median share with IQR per agent and budget; median share against evaluations at the largest
    budget (IQR band), each beside the exact random expectation."""
    figure = Figure(figsize=(12.0, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    agents = list(dict.fromkeys(row.agent for row in rows))
    budgets = board.budgets
    largest = max(budgets)
    width = 0.8 / max(len(agents), 1)
    colours = matplotlib.colormaps["tab10"]
    by_key = {(row.agent, row.budget): row for row in rows}
    for index, agent in enumerate(agents):
        xs, medians, low, high = [], [], [], []
        for position, budget in enumerate(budgets):
            if (agent, budget) in by_key:
                q25, median, q75 = by_key[agent, budget].quartiles
                xs.append(position - 0.4 + width * (index + 0.5))
                medians.append(median)
                low.append(median - q25)
                high.append(q75 - median)
        left.errorbar(xs, medians, yerr=[low, high], fmt="o", capsize=3, color=colours(index % 10), label=agent)
    left.plot(
        range(len(budgets)),
        [random_expectation(board, b) for b in budgets],
        "k_",
        markersize=20,
        label="uniform random (exact)",
    )
    left.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    left.set_xlabel("budget (evaluations)")
    left.set_ylabel("hypervolume share of the bench optimum")
    left.set_title("final share: median and IQR over seeds")
    firsts = [r.trace[0][0] for r in board.records if r.budget == largest and r.trace]
    grid = np.geomspace(min([1.0, *firsts]), largest, 400)
    for index, agent in enumerate(agents):
        runs = [r for r in board.records if r.agent == agent and r.budget == largest]
        if runs:
            curves = np.array([[share_at(r.trace, x, board.bench.optimum) for x in grid] for r in runs])
            q25, median, q75 = np.percentile(curves, [25, 50, 75], axis=0)
            right.plot(grid, median, color=colours(index % 10), label=agent, drawstyle="steps-post")
            right.fill_between(grid, q25, q75, color=colours(index % 10), alpha=0.2, step="post")
    draws = np.arange(1, largest + 1)
    right.plot(draws, [random_expectation(board, int(k)) for k in draws], "k--", label="uniform random (exact)")
    for threshold in THRESHOLDS:
        right.axhline(threshold, color="grey", linewidth=0.8, linestyle=":")
    right.set_xscale("log")
    right.set_xlabel("evaluations spent (log scale)")
    right.set_ylabel("hypervolume share of the bench optimum")
    right.set_title(f"budget {largest}: median and IQR over seeds")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=120)
    return path


def write_report(board: Leaderboard, out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/leaderboard.md`` and ``OUT/leaderboard.png``; return both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = standings(board)
    image = plot(board, rows, out / PLOT)
    page = out / REPORT
    write_text_atomic(page, markdown(board, rows, comparisons(rows)))
    return page, image
