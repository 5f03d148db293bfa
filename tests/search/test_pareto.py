import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from distilsearch.envs.surrogate import SURROGATE_KEY
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.search.pareto import (
    OBJECTIVES,
    default_reference,
    frontier,
    frontier_table,
    get_objective,
    hypervolume,
    hypervolume_trace,
    non_dominated,
    objective_matrix,
    objective_names,
    reference_point,
    teacher_value,
    usable,
)
from distilsearch.search.plots import frontier_figure, plot_frontier, plot_hypervolume

TEACHER_MS = 10.0


def latency(batch: int, seq_len: int, ms: float) -> LatencyPoint:
    return LatencyPoint(
        batch=batch,
        seq_len=seq_len,
        median_ms=ms,
        p10_ms=ms,
        p90_ms=ms,
        teacher_median_ms=TEACHER_MS * batch,
        speedup=TEACHER_MS * batch / ms,
        theoretical_speedup=2.0,
    )


def result(
    accuracy: float | None,
    ms: float | None,
    *,
    seed: int = 0,
    status: str = "ok",
    layers: int = 2,
    params: int | None = 1_000_000,
    ood: dict[str, float] | None = None,
) -> EvalResult:
    """A result whose selection metrics are ``accuracy`` (validation) and ``ood`` (OOD dev halves); its test metrics
    are 0.1 lower (teacher: 0.95 test, 0.85 OOD test), so an objective reading the wrong split is caught."""
    candidate = Candidate(
        spec=StudentSpec(num_layers=layers, hidden_size=32, num_heads=4, ffn_size=64), kd=KDConfig(seed=seed)
    )
    if status != "ok":
        return EvalResult(candidate=candidate, status=status, error="diverged")
    return EvalResult(
        candidate=candidate,
        status="ok",
        validation_accuracy=accuracy,
        teacher_validation_accuracy=0.9,
        ood_dev_accuracy=ood or {},
        teacher_ood_dev_accuracy={name: 0.8 for name in ood or {}},
        accuracy=None if accuracy is None else accuracy - 0.1,
        teacher_accuracy=0.95,
        ood_accuracy={name: value - 0.1 for name, value in (ood or {}).items()},
        teacher_ood_accuracy={name: 0.85 for name in ood or {}},
        latency=[] if ms is None else [latency(1, 64, ms), latency(32, 128, 4 * ms)],
        params_total=params,
        size_bytes=None if params is None else 4 * params,
    )


# --- non-dominated filtering -------------------------------------------------------------------------------------


def test_non_dominated_2d_front_and_dominated_points() -> None:
    points = [(1, 3), (2, 2), (3, 1), (3, 3), (2, 4)]
    assert non_dominated(points).tolist() == [0, 1, 2]


def test_non_dominated_3d() -> None:
    points = [(1, 2, 3), (3, 2, 1), (2, 2, 2), (3, 3, 3), (1, 2, 4)]
    assert non_dominated(points).tolist() == [0, 1, 2]


def test_single_point_is_its_own_front() -> None:
    assert non_dominated([(5.0, 5.0)]).tolist() == [0]
    assert non_dominated(np.array([[1.0, 2.0, 3.0]])).tolist() == [0]


def test_ties_in_one_objective() -> None:
    # equal first objective: the better second one dominates; equal in one and traded in none -> one survivor
    assert non_dominated([(1, 3), (1, 2)]).tolist() == [1]
    # a tie on one axis does not make incomparable points dominate each other
    assert non_dominated([(1, 3), (2, 3), (2, 1)]).tolist() == [0, 2]


def test_exact_duplicates_are_all_kept() -> None:
    assert non_dominated([(1, 3), (2, 2), (1, 3), (2, 2), (3, 3)]).tolist() == [0, 1, 2, 3]
    assert non_dominated([(4, 4), (4, 4)]).tolist() == [0, 1]


def test_all_dominated_by_one_point() -> None:
    assert non_dominated([(3, 3), (1, 1), (2, 2), (1, 2), (2, 1)]).tolist() == [1]


def test_empty_input_gives_no_indices_and_zero_volume() -> None:
    assert non_dominated(np.empty((0, 2))).tolist() == []
    assert hypervolume(np.empty((0, 2)), (4, 4)) == 0.0


@pytest.mark.parametrize(
    ("points", "message"),
    [([1.0, 2.0], "2-D"), ([(1.0, math.nan)], "finite"), ([(1.0, math.inf), (0.0, 0.0)], "rows [0]")],
)
def test_bad_points_are_clear_errors(points: list, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        non_dominated(points)


# --- hypervolume ---------------------------------------------------------------------------------------------------


def test_hypervolume_2d_staircase() -> None:
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(1, 3), (2, 2)], (4, 4)) == pytest.approx(5.0)


def test_hypervolume_3d() -> None:
    assert hypervolume([(1, 1, 1)], (2, 2, 2)) == pytest.approx(1.0)
    # boxes 4 and 2 overlapping in a unit cube
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(5.0)
    # boxes 6 and 6 overlapping in [3,4]x[2,4]x[3,4] = 2
    assert hypervolume([(1, 2, 3), (3, 2, 1)], (4, 4, 4)) == pytest.approx(10.0)


def test_hypervolume_single_point_duplicates_and_dominated_points() -> None:
    assert hypervolume([(1, 3)], (4, 4)) == pytest.approx(3.0)
    assert hypervolume([(1, 3), (1, 3), (2, 2), (3, 3)], (4, 4)) == pytest.approx(5.0)


def test_points_outside_the_reference_add_nothing() -> None:
    assert hypervolume([(4, 1), (5, 0)], (4, 4)) == 0.0
    assert hypervolume([(1, 3), (5, 0)], (4, 4)) == pytest.approx(3.0)


def test_hypervolume_rejects_a_mismatched_reference() -> None:
    with pytest.raises(ValueError, match=r"reference=\[4.0\] has 1"):
        hypervolume([(1, 3)], (4,))
    with pytest.raises(ValueError, match="finite"):
        hypervolume([(1, 3)], (4, math.nan))


coordinates = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(coordinates, coordinates, coordinates), min_size=1, max_size=12))
def test_front_properties(points: list[tuple[float, float, float]]) -> None:
    array = np.array(points)
    front = non_dominated(array)
    for index in range(len(array)):
        dominated = any(
            (array[other] <= array[index]).all() and (array[other] < array[index]).any() for other in range(len(array))
        )
        assert (index in front) == (not dominated)
    reference = (11.0, 11.0, 11.0)
    assert hypervolume(array[front], reference) == pytest.approx(hypervolume(array, reference))


# --- objectives ----------------------------------------------------------------------------------------------------


def test_objective_registry_and_directions() -> None:
    assert {name: o.direction for name, o in OBJECTIVES.items()} == {
        "accuracy": "up",
        "ood_accuracy": "up",
        "test_accuracy": "up",
        "ood_test_accuracy": "up",
        "latency": "down",
        "speedup": "up",
        "params": "down",
        "size": "down",
    }
    assert "validation" in get_objective("accuracy").label and "dev" in get_objective("ood_accuracy").label
    assert "post hoc" in get_objective("test_accuracy").label
    assert get_objective("latency@32x128").point == (32, 128)
    assert get_objective("latency@1x64").name == "latency"


def test_unknown_objective_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown objective 'speed'.*accuracy, ood_accuracy, test_accuracy, ood_test_accuracy, latency, "
        "speedup, params, size",
    ):
        get_objective("speed")
    with pytest.raises(ValueError, match="unknown objective 'latency@0x64'"):
        get_objective("latency@0x64")


def test_objective_names_parses_and_rejects_repeats() -> None:
    assert objective_names(" accuracy, latency@32x128 ,params") == ("accuracy", "latency@32x128", "params")
    with pytest.raises(ValueError, match="repeats latency"):
        objective_names("latency,accuracy,latency@1x64")
    with pytest.raises(ValueError, match="names no objective"):
        objective_names(" , ")


def test_objective_matrix_is_minimisation_form() -> None:
    results = [result(0.8, 2.0, params=5, ood={"a": 0.6, "b": 0.7})]
    matrix = objective_matrix(results, ["accuracy", "latency", "ood_accuracy", "params", "size", "latency@32x128"])
    assert matrix.shape == (1, 6) and matrix[0].tolist() == pytest.approx([-0.8, 2.0, -0.65, 5.0, 20.0, 8.0])
    # the selection objectives read validation and OOD dev; the post-hoc ones the test split and OOD test halves
    assert objective_matrix(results, ["test_accuracy", "ood_test_accuracy"])[0].tolist() == pytest.approx([-0.7, -0.55])
    blinded = [r.blinded() for r in results]
    assert objective_matrix(blinded, ["accuracy", "ood_accuracy"])[0].tolist() == pytest.approx([-0.8, -0.65])
    assert objective_matrix(blinded, ["test_accuracy"]).shape == (0, 1)


def test_only_ok_results_with_every_objective_take_part() -> None:
    results = [
        result(0.8, 2.0, seed=1),
        result(None, None, seed=2, status="failed"),
        result(None, None, seed=3, status="invalid"),
        result(0.7, None, seed=4),
        result(0.6, 1.0, seed=5),
    ]
    assert [r.candidate.kd.seed for r in usable(results, ["accuracy", "latency"])] == [1, 5]
    assert objective_matrix(results, ["accuracy", "latency"]).tolist() == [[-0.8, 2.0], [-0.6, 1.0]]
    assert objective_matrix(results, ["ood_accuracy"]).shape == (0, 1)


def test_names_must_be_a_sequence_of_names() -> None:
    with pytest.raises(TypeError, match="not a string"):
        objective_matrix([], "accuracy")
    with pytest.raises(ValueError, match="at least one"):
        objective_matrix([], [])


def test_direction_decides_the_frontier() -> None:
    fast_bad, slow_good, slow_bad = result(0.6, 1.0, seed=1), result(0.9, 5.0, seed=2), result(0.5, 6.0, seed=3)
    results = [fast_bad, slow_good, slow_bad]
    assert frontier(results, ["accuracy", "latency"]) == [slow_good, fast_bad]
    assert frontier(results, ["latency", "accuracy"]) == [fast_bad, slow_good]
    assert frontier(results, ["accuracy"]) == [slow_good]


# --- reference point and trace -------------------------------------------------------------------------------------


def test_default_reference() -> None:
    results = [result(0.8, 2.0, params=1_000), result(0.7, 1.0, seed=1, params=2_000, ood={"a": 0.5})]
    names = ["accuracy", "ood_accuracy", "latency", "latency@32x128", "params", "size", "speedup"]
    assert default_reference(results, names) == {
        "accuracy": 0.0,
        "ood_accuracy": 0.0,
        "speedup": 1.0,
        "latency": TEACHER_MS,
        "latency@32x128": 32 * TEACHER_MS,
        "params": 2_200.0,
        "size": 8_800.0,
    }
    assert default_reference(results, ["accuracy", "latency"], {"latency@1x64": 3.0, "accuracy": 0.5}) == {
        "accuracy": 0.5,
        "latency": 3.0,
    }


def test_default_reference_without_data_is_a_clear_error() -> None:
    failed = [result(None, None, status="failed")]
    with pytest.raises(ValueError, match="none of the 1 evaluations records the teacher's latency"):
        default_reference(failed, ["accuracy", "latency"])
    with pytest.raises(ValueError, match="reference for params"):
        default_reference(failed, ["accuracy", "params"])
    assert default_reference(failed, ["accuracy", "latency"], {"latency": 5.0}) == {"accuracy": 0.0, "latency": 5.0}


def test_reference_point_negates_maximised_objectives() -> None:
    reference = {"accuracy": 0.5, "latency@1x64": 10.0, "params": 7.0}
    assert reference_point(["accuracy", "latency"], reference).tolist() == [-0.5, 10.0]
    with pytest.raises(ValueError, match="lacks size"):
        reference_point(["accuracy", "size"], reference)
    with pytest.raises(ValueError, match="accuracy=nan must be a finite number"):
        reference_point(["accuracy"], {"accuracy": math.nan})
    with pytest.raises(ValueError, match="latency='fast' must be a finite number"):
        default_reference([], ["accuracy", "latency"], {"latency": "fast"})


def test_teacher_value() -> None:
    results = [result(None, None, status="failed"), result(0.8, 2.0, ood={"a": 0.5, "b": 0.6})]
    assert teacher_value(results, "accuracy") == 0.9
    assert teacher_value(results, "ood_accuracy") == pytest.approx(0.8)
    assert teacher_value(results, "test_accuracy") == 0.95
    assert teacher_value(results, "ood_test_accuracy") == pytest.approx(0.85)
    assert teacher_value(results, "latency@32x128") == 32 * TEACHER_MS
    assert teacher_value(results, "params") is None
    assert teacher_value(results, "speedup") == 1.0 and teacher_value(results[:1], "speedup") is None


def test_speedup_objective_is_robust_to_a_slower_machine() -> None:
    # The same two students measured on a quiet machine and on one 1.5x slower (teacher and student alike).
    quiet = [result(0.8, 2.5), result(0.7, 1.25, seed=1)]
    slow = [
        r.model_copy(
            update={
                "latency": [
                    p.model_copy(
                        update={"median_ms": 1.5 * p.median_ms, "teacher_median_ms": 1.5 * p.teacher_median_ms}
                    )
                    for p in r.latency
                ]
            }
        )
        for r in quiet
    ]
    names = ["accuracy", "speedup"]
    for results in (quiet, slow):
        reference = default_reference(results, names)
        assert reference == {"accuracy": 0.0, "speedup": 1.0}
        # speed-ups 4 and 8 over the floor 1: 0.8 * (4 - 1) + 0.7 * (8 - 4)
        assert hypervolume_trace(results, names, reference)[-1] == pytest.approx(0.8 * 3 + 0.7 * 4)
    assert hypervolume_trace(quiet, ["accuracy", "latency"], {"accuracy": 0.0, "latency": 10.0})[-1] != pytest.approx(
        hypervolume_trace(slow, ["accuracy", "latency"], {"accuracy": 0.0, "latency": 10.0})[-1]
    )


def test_trace_hand_computed_with_failures_and_dominated_points() -> None:
    results = [
        result(0.5, 5.0, seed=1),
        result(None, None, seed=2, status="failed"),
        result(0.6, 8.0, seed=3),
        result(0.4, 6.0, seed=4),  # dominated
        result(0.9, 12.0, seed=5),  # slower than the teacher: outside the reference box
        result(0.7, None, seed=6),  # no latency measured
        result(0.6, 4.0, seed=7),
    ]
    trace = hypervolume_trace(results, ["accuracy", "latency"], {"accuracy": 0.0, "latency": 10.0})
    assert trace == pytest.approx([2.5, 2.5, 2.7, 2.7, 2.7, 2.7, 3.6])


def test_trace_of_nothing_usable_is_zero() -> None:
    failed = [result(None, None, seed=i, status="failed") for i in range(3)]
    assert hypervolume_trace(failed, ["accuracy", "latency"], {"accuracy": 0, "latency": 1}) == [0.0, 0.0, 0.0]
    assert hypervolume_trace([], ["accuracy", "latency"], {"accuracy": 0, "latency": 1}) == []


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.tuples(st.floats(0.0, 1.0), st.floats(0.1, 12.0), st.integers(1_000, 3_000))),
        max_size=15,
    )
)
def test_trace_is_monotone_and_ends_at_the_total(rows: list[tuple[float, float, int] | None]) -> None:
    results = [
        result(None, None, seed=i, status="failed") if row is None else result(row[0], row[1], seed=i, params=row[2])
        for i, row in enumerate(rows)
    ]
    names = ["accuracy", "latency", "params"]
    reference = {"accuracy": 0.0, "latency": TEACHER_MS, "params": 2_500}
    trace = hypervolume_trace(results, names, reference)
    assert len(trace) == len(results)
    assert all(later >= earlier for earlier, later in itertools.pairwise(trace))
    total = hypervolume(objective_matrix(results, names), reference_point(names, reference))
    assert (trace[-1] if trace else 0.0) == pytest.approx(total)


# --- frontier table ------------------------------------------------------------------------------------------------


def test_frontier_table_has_every_metric_sorted_by_the_first_objective() -> None:
    results = [
        result(0.6, 1.0, seed=1),
        result(0.9, 5.0, seed=2, ood={"a": 0.7}),
        result(0.5, 6.0, seed=3),
        result(None, None, seed=4, status="failed"),
    ]
    table = frontier_table(results, ["latency", "accuracy"])
    assert table["candidate_hash"].tolist() == [r.candidate.content_hash() for r in results[:2]]
    assert table["candidate"].tolist() == [results[0].candidate.summary()] * 2
    assert list(table.columns[:4]) == ["candidate", "candidate_hash", "latency", "accuracy"]
    for column in (
        "retention",
        "validation_retention",
        "params_total",
        "size_bytes",
        "latency_ms/32x128",
        "speedup/1x64",
        "ood_accuracy/a",
        "ood_dev_accuracy/a",
    ):
        assert column in table.columns
    assert "status" not in table.columns and "error" not in table.columns
    assert table["latency"].tolist() == [1.0, 5.0]
    ranked = frontier_table(results, ["accuracy", "latency"])
    # ranked and shown by validation accuracy, with the test accuracy beside it under its own name
    assert ranked["accuracy"].tolist() == [0.9, 0.6]
    assert ranked["test_accuracy"].tolist() == pytest.approx([0.8, 0.5])


def test_frontier_table_keeps_duplicates_and_handles_nothing_usable() -> None:
    twins = [result(0.8, 2.0, seed=1), result(0.8, 2.0, seed=2), result(0.7, 3.0, seed=3)]
    table = frontier_table(twins, ["accuracy", "latency"])
    assert len(table) == 2 and table["candidate_hash"].is_unique
    empty = frontier_table([result(None, None, status="failed")], ["accuracy", "latency"])
    assert len(empty) == 0 and list(empty.columns) == ["candidate", "candidate_hash", "accuracy", "latency"]


# --- plots ---------------------------------------------------------------------------------------------------------


def check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    return image


def test_plot_frontier_writes_a_png(tmp_path: Path) -> None:
    runs = {
        "a": [result(0.6, 1.0, seed=1), result(0.9, 5.0, seed=2), result(0.5, 6.0, seed=3)],
        "b": [result(0.7, 2.0, seed=4), result(None, None, seed=5, status="failed")],
    }
    path = plot_frontier(runs, tmp_path / "frontier.png", teacher=(TEACHER_MS, 0.9))
    image = check_png(path)
    assert image[..., :3].std() > 0.05  # something besides the white background was drawn
    with pytest.raises(ValueError, match="different objectives"):
        plot_frontier(runs, tmp_path / "same.png", x="latency@1x64", y="latency")


def test_plot_frontier_marks_surrogate_predictions_hollow_and_says_so(tmp_path: Path) -> None:
    measured = [result(0.6, 1.0, seed=1), result(0.9, 5.0, seed=2)]
    predicted = [
        r.model_copy(update={"provenance": r.provenance | {SURROGATE_KEY: {"model": "ExtraTreesRegressor"}}})
        for r in (result(0.8, 2.0, seed=3), result(0.5, 3.0, seed=4))
    ]
    _, axes, empty = frontier_figure({"surrogate": measured + predicted, "live": measured})
    labels = axes.get_legend_handles_labels()[1]
    assert not empty
    assert "surrogate: 3 on the frontier of 4 (2 predicted (surrogate), hollow)" in labels
    assert "live: 2 on the frontier of 2" in labels
    hollow = [c for c in axes.collections if len(c.get_offsets()) and not c.get_facecolors().any()]
    assert sorted(tuple(p) for c in hollow for p in c.get_offsets()) == [(2.0, 0.8), (3.0, 0.5)]
    check_png(plot_frontier({"surrogate": measured + predicted}, tmp_path / "frontier.png"))


def test_plots_of_empty_runs_still_write(tmp_path: Path) -> None:
    check_png(plot_frontier({"a": []}, tmp_path / "frontier.png"))
    check_png(plot_hypervolume({"a": []}, tmp_path / "hv.png"))


def test_plot_hypervolume_writes_a_png(tmp_path: Path) -> None:
    path = plot_hypervolume({"a": [0.0, 1.0, 1.0, 2.5], "b": [0.5]}, tmp_path / "hv.png", title="hv")
    check_png(path)
