"""Continual-learning metrics against hand-computed values, and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from lcia.evaluation.metrics import (
    METRICS,
    avg_acc,
    bootstrap_differences,
    bootstrap_metrics,
    bwt,
    compute_metrics,
    forgetting,
    fwt,
    maa,
    new_acc,
)

# Rows: 0 = untrained, j = after tasks 1..j. Columns: tasks 1..3. Notation below is 1-based: A[row][task].
A1 = [
    [0.1, 0.2, 0.0],
    [0.8, 0.3, 0.1],
    [0.9, 0.6, 0.2],  # task 1 still improves after task 2: its best earlier score is in row 2
    [0.5, 0.4, 0.7],
]
A1_EXPECTED = {
    # (A[3][1] + A[3][2] + A[3][3]) / 3 = (0.5 + 0.4 + 0.7) / 3 = 1.6 / 3
    "Avg.ACC": 1.6 / 3,
    # (A[1][1] + A[2][2] + A[3][3]) / 3 = (0.8 + 0.6 + 0.7) / 3 = 0.7
    "New.ACC": 0.7,
    # (0.8 / 1 + (0.9 + 0.6) / 2 + (0.5 + 0.4 + 0.7) / 3) / 3 = (0.8 + 0.75 + 1.6 / 3) / 3
    "MAA": (0.8 + 0.75 + 1.6 / 3) / 3,
    # ((A[3][1] - A[1][1]) + (A[3][2] - A[2][2])) / 2 = ((0.5 - 0.8) + (0.4 - 0.6)) / 2 = -0.25
    "BWT": -0.25,
    # ((max(A[1][1], A[2][1]) - A[3][1]) + (A[2][2] - A[3][2])) / 2 = ((0.9 - 0.5) + (0.6 - 0.4)) / 2 = 0.3
    "Forgetting": 0.3,
    # ((A[1][2] - A[0][2]) + (A[2][3] - A[0][3])) / 2 = ((0.3 - 0.2) + (0.2 - 0.0)) / 2 = 0.15
    "FWT": 0.15,
}

A2 = [
    [0.5, 0.9, 0.3],
    [0.4, 0.95, 0.1],  # task 2 scores high before it is trained: must not enter Forgetting's max
    [0.2, 0.6, 0.4],
    [0.6, 0.5, 0.8],  # task 1 ends above its best earlier score: negative forgetting
]
A2_EXPECTED = {
    # (0.6 + 0.5 + 0.8) / 3 = 1.9 / 3
    "Avg.ACC": 1.9 / 3,
    # (A[1][1] + A[2][2] + A[3][3]) / 3 = (0.4 + 0.6 + 0.8) / 3 = 0.6
    "New.ACC": 0.6,
    # (0.4 / 1 + (0.2 + 0.6) / 2 + (0.6 + 0.5 + 0.8) / 3) / 3 = (0.4 + 0.4 + 1.9 / 3) / 3
    "MAA": (0.4 + 0.4 + 1.9 / 3) / 3,
    # ((0.6 - 0.4) + (0.5 - 0.6)) / 2 = (0.2 - 0.1) / 2 = 0.05
    "BWT": 0.05,
    # task 1: max(A[1][1], A[2][1]) - A[3][1] = max(0.4, 0.2) - 0.6 = -0.2 (row 3 is not in the max)
    # task 2: A[2][2] - A[3][2] = 0.6 - 0.5 = 0.1 (rows 0 and 1, before learning task 2, are not in the max)
    # (-0.2 + 0.1) / 2 = -0.05
    "Forgetting": -0.05,
    # ((A[1][2] - A[0][2]) + (A[2][3] - A[0][3])) / 2 = ((0.95 - 0.9) + (0.4 - 0.3)) / 2 = 0.075
    "FWT": 0.075,
}

FUNCTIONS = {"Avg.ACC": avg_acc, "New.ACC": new_acc, "MAA": maa, "BWT": bwt, "Forgetting": forgetting, "FWT": fwt}


@pytest.mark.parametrize("A, expected", [(A1, A1_EXPECTED), (A2, A2_EXPECTED)], ids=["A1", "A2"])
def test_metrics_match_hand_computation(A, expected):
    got = compute_metrics(A)
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
        assert FUNCTIONS[name](A) == pytest.approx(value, abs=1e-12), name


def _loop_metrics(A):
    """The DESIGN.md formulas written as plain loops over 1-based indices, as an independent check."""
    T = len(A[0])

    def a(j, i):
        return A[j][i - 1]

    def mean(xs):
        return sum(xs) / len(xs)

    return {
        "Avg.ACC": mean([a(T, i) for i in range(1, T + 1)]),
        "New.ACC": mean([a(i, i) for i in range(1, T + 1)]),
        "MAA": mean([mean([a(t, i) for i in range(1, t + 1)]) for t in range(1, T + 1)]),
        "BWT": mean([a(T, i) - a(i, i) for i in range(1, T)]) if T > 1 else None,
        "Forgetting": mean([max(a(j, i) for j in range(i, T)) - a(T, i) for i in range(1, T)]) if T > 1 else None,
        "FWT": mean([a(i - 1, i) - a(0, i) for i in range(2, T + 1)]) if T > 1 else None,
    }


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8])
def test_metrics_match_loops_on_random_matrices(T):
    rng = np.random.default_rng(T)
    for _ in range(20):
        A = rng.random((T + 1, T)).tolist()
        got, expected = compute_metrics(A), _loop_metrics(A)
        for name, value in expected.items():
            if value is None:
                assert got[name] is None
            else:
                assert got[name] == pytest.approx(value, abs=1e-12), name


def test_single_task_defines_only_the_averages():
    # T = 1: A[1][1] = 0.7 is the final average, the diagonal and the only seen-task average.
    assert compute_metrics([[0.2], [0.7]]) == {
        "Avg.ACC": 0.7,
        "New.ACC": 0.7,
        "MAA": 0.7,
        "BWT": None,
        "Forgetting": None,
        "FWT": None,
    }


def test_joint_two_row_matrix_defines_only_avg_acc():
    joint = [[0.1, 0.2, 0.3], [0.5, 0.6, 0.9]]
    got = compute_metrics(joint)
    # (0.5 + 0.6 + 0.9) / 3 = 2.0 / 3
    assert got["Avg.ACC"] == pytest.approx(2.0 / 3)
    assert all(got[name] is None for name in ("New.ACC", "MAA", "BWT", "Forgetting", "FWT"))
    assert new_acc(joint) is None and forgetting(joint) is None


@pytest.mark.parametrize(
    "A, message",
    [
        ([], "empty"),
        ([[], []], "no columns"),
        ([[0.1, 0.2], [0.3]], "different lengths"),
        ([[0.1, 0.2, 0.3]] * 3, "3 rows for T=3 tasks"),
        ([[0.1, 0.2]] * 4, "4 rows for T=2 tasks"),
        ([[0.1], [float("nan")]], "NaN"),
    ],
)
def test_bad_shapes_raise(A, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(A)
    with pytest.raises(ValueError, match=message):
        avg_acc(A)


def test_metrics_table_names_and_definitions():
    assert list(METRICS) == ["Avg.ACC", "New.ACC", "MAA", "BWT", "Forgetting", "FWT"]
    for name, (function, definition) in METRICS.items():
        assert function is FUNCTIONS[name]
        assert "A[" in definition and "\n" not in definition
    assert METRICS["Forgetting"][1].startswith("mean_{i<T} (max_{i<=j<T} A[j][i] - A[T][i])")


def _constant_scores(A, n=50):
    return [[[value] * n for value in row] for row in A]


def test_bootstrap_collapses_when_every_example_scores_the_same():
    intervals = bootstrap_metrics(_constant_scores(A1), n_resamples=200)
    for name, value in A1_EXPECTED.items():
        low, high = intervals[name]
        assert low == pytest.approx(value, abs=1e-12) and high == pytest.approx(value, abs=1e-12), name


def _random_grid(seed, T=4, n=100):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.2, 0.8, size=(T + 1, T))
    return [[(rng.random(n) < rate).astype(float).tolist() for rate in row] for row in rates]


def test_bootstrap_interval_contains_the_point_estimate():
    scores = _random_grid(seed=7)
    point = compute_metrics([[float(np.mean(cell)) for cell in row] for row in scores])
    intervals = bootstrap_metrics(scores, n_resamples=1000, seed=3)
    for name, value in point.items():
        low, high = intervals[name]
        assert low <= value <= high, name
        assert high - low > 0.01, name  # 100 binary examples per task leave real uncertainty


def test_bootstrap_is_deterministic_for_a_seed():
    scores = _random_grid(seed=1)
    assert bootstrap_metrics(scores, n_resamples=300, seed=5) == bootstrap_metrics(scores, n_resamples=300, seed=5)
    assert bootstrap_metrics(scores, n_resamples=300, seed=5) != bootstrap_metrics(scores, n_resamples=300, seed=6)


def test_bootstrap_is_paired_across_rows():
    # Task 1's examples score identically after tasks 1 and 2, so A[2][1] - A[1][1] = 0 in every
    # resample that reuses the same examples in both rows: BWT's interval is exactly zero.
    rng = np.random.default_rng(0)
    task1 = (rng.random(80) < 0.5).astype(float).tolist()
    task2 = (rng.random(80) < 0.5).astype(float).tolist()
    scores = [[task1, task2], [task1, task2], [task1, task2]]
    low, high = bootstrap_metrics(scores, n_resamples=500)["BWT"]
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_undefined_metrics_are_none():
    joint = bootstrap_metrics([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]]], n_resamples=50)
    assert joint["Avg.ACC"] is not None
    assert all(joint[name] is None for name in ("New.ACC", "MAA", "BWT", "Forgetting", "FWT"))
    single = bootstrap_metrics([[[0.0, 1.0]], [[1.0, 1.0]]], n_resamples=50)
    assert single["BWT"] is None and single["MAA"] is not None


@pytest.mark.parametrize(
    "scores, kwargs, message",
    [
        ([[[1.0, 0.0]], [[1.0]]], {}, "same length in every row"),
        ([[[]], [[]]], {}, "non-empty"),
        ([[[1.0]], [[1.0]], [[1.0]]], {}, "3 rows for T=1 tasks"),
        ([[[1.0]], [[float("inf")]]], {}, "infinite"),
        ([[[1.0]], [[1.0]]], {"n_resamples": 0}, "n_resamples"),
        ([[[1.0]], [[1.0]]], {"confidence": 1.0}, "confidence"),
    ],
)
def test_bootstrap_rejects_bad_input(scores, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_metrics(scores, **kwargs)


# --- paired differences between two settings ---------------------------------------------------------


def test_differences_of_identical_runs_are_zero_with_p_one():
    scores = _random_grid(seed=2)
    for name, record in bootstrap_differences([(scores, scores)], n_resamples=300).items():
        assert record["difference"] == 0 and record["interval"] == (0.0, 0.0) and record["p"] == 1.0, name


def test_a_difference_in_one_example_is_paired_example_by_example():
    # Setting a answers one example of task 1 right in the last row where b does not; nothing else differs. Every
    # resample that draws the example k times gives a difference of k / (n T) in Avg.ACC, never below 0, and it is
    # 0 exactly when the example is not drawn: probability (1 - 1/n)^n. Two separate intervals, each about
    # +-0.05 wide here, would say nothing about a difference of 1 / (n T).
    n, T = 50, 2
    b = _random_grid(seed=4, T=T, n=n)
    a = [[list(cell) for cell in row] for row in b]
    b[-1][0][0], a[-1][0][0] = 0.0, 1.0
    record = bootstrap_differences([(a, b)], n_resamples=4000, seed=1)["Avg.ACC"]
    assert record["difference"] == pytest.approx(1 / (n * T))
    low, high = record["interval"]
    assert low == 0.0 and any(high == pytest.approx(k / (n * T)) for k in range(1, 6))
    assert record["p"] == pytest.approx(min(1.0, 2 * (1 - 1 / n) ** n), abs=0.04)
    assert bootstrap_differences([(b, a)], n_resamples=4000, seed=1)["Avg.ACC"]["difference"] < 0


def test_differences_over_seeds_average_the_pairs():
    a1, b1, a2, b2 = (_random_grid(seed=s) for s in (10, 11, 12, 13))
    both = bootstrap_differences([(a1, b1), (a2, b2)], n_resamples=200)
    each = [bootstrap_differences([pair], n_resamples=200) for pair in ((a1, b1), (a2, b2))]
    for name in METRICS:
        assert both[name]["difference"] == pytest.approx(
            (each[0][name]["difference"] + each[1][name]["difference"]) / 2
        )


def test_differences_refuse_other_tasks_and_keep_undefined_metrics_none():
    with pytest.raises(ValueError, match="not the same tasks"):
        bootstrap_differences([(_random_grid(seed=1, T=2), _random_grid(seed=1, T=3))], n_resamples=10)
    joint = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]]]
    record = bootstrap_differences([(joint, joint)], n_resamples=10)
    assert record["Avg.ACC"] is not None and record["BWT"] is None
