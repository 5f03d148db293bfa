"""PNG plots of search runs (matplotlib's Agg canvas, no display needed): frontiers and hypervolume curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from distilsearch.envs.surrogate import is_predicted
from distilsearch.kdlib.students.candidate import EvalResult
from distilsearch.search.pareto import Objective, frontier, get_objective, majority_value, usable

FIGURE_SIZE = (7.5, 5.0)
DPI = 120


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(alpha=0.3)
    return figure, axes


def _colour(index: int) -> tuple[float, ...]:
    return matplotlib.colormaps["tab10"](index % 10)


def _axis_label(name: str) -> str:
    objective = get_objective(name)
    return f"{objective.label}, {'higher' if objective.direction == 'up' else 'lower'} is better"


def _save(figure: Figure, axes: Axes, path: str | Path, empty: bool, empty_text: str) -> Path:
    if empty:
        axes.text(0.5, 0.5, empty_text, ha="center", va="center", transform=axes.transAxes, color="grey")
        axes.set_xticks([])
        axes.set_yticks([])
    elif axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path


def _scatter(
    axes: Axes,
    shown: Sequence[EvalResult],
    objectives: tuple[Objective, Objective],
    colour: tuple[float, ...],
    predicted: bool,
    *,
    on_front: bool,
    label: str | None = None,
) -> None:
    """Dots of ``shown``: measured ones filled, a surrogate's predictions hollow; frontier points large, outlined."""
    if not shown:
        return
    x, y = objectives
    if on_front:
        style = {"s": 42, "zorder": 3, "linewidths": 1.2 if predicted else 0.6}
        style |= (
            {"facecolors": "white", "edgecolors": colour} if predicted else {"color": colour, "edgecolors": "black"}
        )
    else:
        style = {"s": 16, "alpha": 0.5 if predicted else 0.25, "linewidths": 0.8 if predicted else 0}
        style |= {"facecolors": "none", "edgecolors": colour} if predicted else {"color": colour}
    axes.scatter([x.read(r) for r in shown], [y.read(r) for r in shown], label=label, **style)


def frontier_figure(
    runs: Mapping[str, Sequence[EvalResult]],
    teacher: tuple[float, float] | None = None,
    x: str = "latency",
    y: str = "accuracy",
    title: str | None = None,
) -> tuple[Figure, Axes, bool]:
    """Draw every run's evaluations in the ``x``-``y`` objective plane (see :func:`plot_frontier`); return the figure,
    its axes and whether nothing was drawn."""
    x_objective, y_objective = get_objective(x), get_objective(y)
    if x_objective.name == y_objective.name:
        raise ValueError(f"x={x!r} and y={y!r} must be different objectives")
    names = (x_objective.name, y_objective.name)
    figure, axes = _figure()
    plotted = 0
    for index, (run, results) in enumerate(runs.items()):
        colour = _colour(index)
        points = usable(results, names)
        front = frontier(points, names)
        for predicted in (False, True):
            shown = [r for r in points if is_predicted(r) == predicted]
            _scatter(axes, shown, (x_objective, y_objective), colour, predicted, on_front=False)
        front_x, front_y = [x_objective.read(r) for r in front], [y_objective.read(r) for r in front]
        axes.step(front_x, front_y, where="post", color=colour, linewidth=1.5)
        label = f"{run}: {len(front)} on the frontier of {len(points)}"
        if any(is_predicted(r) for r in points):
            label += f" ({sum(map(is_predicted, points))} predicted (surrogate), hollow)"
        measured_front = [r for r in front if not is_predicted(r)]
        _scatter(axes, measured_front, (x_objective, y_objective), colour, False, on_front=True, label=label)
        predicted_front = [r for r in front if is_predicted(r)]
        second_label = None if measured_front else label
        _scatter(axes, predicted_front, (x_objective, y_objective), colour, True, on_front=True, label=second_label)
        plotted += len(points)
    if teacher is not None:
        axes.scatter(*teacher, marker="*", s=260, color="gold", edgecolors="black", zorder=4, label="teacher")
    everything = [result for results in runs.values() for result in results]
    for name, draw in ((y_objective.name, axes.axhline), (x_objective.name, axes.axvline)):
        majority = majority_value(everything, name)
        if majority is not None:
            draw(majority, color="grey", linestyle="--", linewidth=1, label=f"majority-label rate ({majority:.3f})")
    axes.set_xlabel(_axis_label(x_objective.name))
    axes.set_ylabel(_axis_label(y_objective.name))
    axes.set_title(title or f"Pareto frontier: {y_objective.name} vs {x_objective.name}")
    return figure, axes, plotted == 0 and teacher is None


def plot_frontier(
    runs: Mapping[str, Sequence[EvalResult]],
    path: str | Path,
    teacher: tuple[float, float] | None = None,
    x: str = "latency",
    y: str = "accuracy",
    title: str | None = None,
) -> Path:
    """Write a PNG of every run's evaluations in the ``x``-``y`` objective plane and return its path.

    All usable evaluations are faint dots; each run's 2-D frontier over (``x``, ``y``) is drawn as bold points
    joined by the staircase it dominates, one colour per run. A surrogate's predictions are hollow and counted as
    "predicted (surrogate)" in the run's legend entry. ``teacher`` (natural ``(x, y)`` units) is a star. An accuracy
    axis marks the majority-label rate recorded in the results (students at or below it are not usable).
    """
    figure, axes, empty = frontier_figure(runs, teacher, x, y, title)
    return _save(figure, axes, path, empty, "no usable evaluations")


def plot_hypervolume(traces: Mapping[str, Sequence[float]], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of each run's hypervolume against the number of evaluations (one line per run, ending in a dot)."""
    figure, axes = _figure()
    for index, (run, trace) in enumerate(traces.items()):
        axes.plot(
            range(1, len(trace) + 1),
            trace,
            drawstyle="steps-post",
            color=_colour(index),
            linewidth=1.8,
            marker="o",
            markevery=[len(trace) - 1] if trace else [],
            label=run,
        )
    axes.set_xlabel("evaluations")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("hypervolume")
    axes.set_title(title or "hypervolume during the search")
    return _save(figure, axes, path, not any(traces.values()), "no evaluations")
