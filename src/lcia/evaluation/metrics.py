"""Continual-learning metrics over the accuracy matrix, with paired-bootstrap confidence intervals.

``A[j][i]`` is the score on task ``i``'s test set after training tasks ``1..j``; row ``A[0]`` is the
model before any training and every row is complete (future tasks too). A sequential stream of ``T``
tasks gives ``T + 1`` rows and ``T`` columns. In the formulas below, as in the design notes, tasks and
rows are numbered from 1 (row 0 is the untrained model); in the code, column ``c`` holds task ``c + 1``.

A joint run (every task in one stage) trains all ``T`` tasks in one stage and gives only two rows, the untrained
model and the final one: it defines Avg.ACC and nothing that needs the diagonal, so those are ``None``.
Metrics that compare earlier tasks with later ones (BWT, Forgetting, FWT) are ``None`` when ``T == 1``.

Peers define these metrics differently, so every report should name them with the exact definitions
in :data:`METRICS`. Pure functions: no torch, no files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Matrix = Sequence[Sequence[float]]


def _shape(row_lengths: Sequence[int], what: str) -> tuple[int, bool]:
    """Number of tasks T, and whether the grid is a two-row joint-training one; ValueError if malformed."""
    if len(row_lengths) == 0:
        raise ValueError(f"{what} is empty: expected T+1 rows of T entries")
    widths = set(row_lengths)
    if len(widths) != 1:
        raise ValueError(f"{what} rows have different lengths {sorted(widths)}: every row must cover all T tasks")
    T = widths.pop()
    if T == 0:
        raise ValueError(f"{what} has no columns: expected T >= 1 tasks")
    if len(row_lengths) not in (T + 1, 2):
        raise ValueError(
            f"{what} has {len(row_lengths)} rows for T={T} tasks: expected {T + 1} rows "
            "(untrained model, then one row per task) or 2 rows (untrained model, then a joint run)"
        )
    return T, len(row_lengths) != T + 1


def _as_matrix(A: Matrix) -> tuple[np.ndarray, bool]:
    """``A`` as a float array, and whether it is a two-row joint-training matrix; ValueError if malformed."""
    _, joint = _shape([len(row) for row in A], "accuracy matrix")
    M = np.asarray(A, dtype=float)
    if not np.all(np.isfinite(M)):
        raise ValueError("accuracy matrix holds a NaN or infinite score")
    return M, joint


# Batched kernels: ``M`` has shape (..., T+1, T) and the leading axes (bootstrap resamples) are kept,
# so the point estimates and every bootstrap resample go through the same code.


def _avg_acc(M: np.ndarray) -> np.ndarray:
    return M[..., -1, :].mean(axis=-1)


def _diagonal(M: np.ndarray) -> np.ndarray:
    """``A[i][i]`` for i = 1..T: row i (array row i) against task i (column i - 1)."""
    return np.diagonal(M[..., 1:, :], axis1=-2, axis2=-1)


def _new_acc(M: np.ndarray) -> np.ndarray:
    return _diagonal(M).mean(axis=-1)


def _maa(M: np.ndarray) -> np.ndarray:
    T = M.shape[-1]
    seen = np.tril(np.ones((T, T), dtype=bool))  # row t (1-based) has seen tasks 1..t
    per_row = np.where(seen, M[..., 1:, :], 0.0).sum(axis=-1) / np.arange(1, T + 1)
    return per_row.mean(axis=-1)


def _bwt(M: np.ndarray) -> np.ndarray:
    return (M[..., -1, :-1] - _diagonal(M)[..., :-1]).mean(axis=-1)


def _forgetting(M: np.ndarray) -> np.ndarray:
    T = M.shape[-1]
    # Block of rows 1..T-1 and tasks 1..T-1: block[k][c] is row k+1, task c+1, and j >= i means k >= c.
    block = M[..., 1:T, : T - 1]
    after_learning = np.tril(np.ones((T - 1, T - 1), dtype=bool))
    best = np.where(after_learning, block, -np.inf).max(axis=-2)
    return (best - M[..., -1, :-1]).mean(axis=-1)


def _fwt(M: np.ndarray) -> np.ndarray:
    # A[i-1][i] for i = 2..T is the diagonal of rows 1..T-1 against tasks 2..T.
    before_training_on_it = np.diagonal(M[..., 1:-1, 1:], axis1=-2, axis2=-1)
    return (before_training_on_it - M[..., 0, 1:]).mean(axis=-1)


# name -> (kernel, needs the full T+1 rows, needs T >= 2)
_KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool, bool]] = {
    "Avg.ACC": (_avg_acc, False, False),
    "New.ACC": (_new_acc, True, False),
    "MAA": (_maa, True, False),
    "BWT": (_bwt, True, True),
    "Forgetting": (_forgetting, True, True),
    "FWT": (_fwt, True, True),
}


def _defined(name: str, T: int, joint: bool) -> bool:
    _, needs_rows, needs_two_tasks = _KERNELS[name]
    return not (needs_rows and joint) and not (needs_two_tasks and T < 2)


def _point(name: str, A: Matrix) -> float | None:
    M, joint = _as_matrix(A)
    if not _defined(name, M.shape[1], joint):
        return None
    return float(_KERNELS[name][0](M))


def avg_acc(A: Matrix) -> float:
    """Avg.ACC ("Last", "MFN"): mean_i A[T][i], the average score over all tasks at the end."""
    M, _ = _as_matrix(A)
    return float(_avg_acc(M))


def new_acc(A: Matrix) -> float | None:
    """New.ACC ("MFT", plasticity): mean_i A[i][i], each task's score right after it was learned.

    ``None`` for a two-row joint-training matrix (it has no diagonal).
    """
    return _point("New.ACC", A)


def maa(A: Matrix) -> float | None:
    """MAA: mean over t = 1..T of (mean_{i<=t} A[t][i]), the average over stages of the seen-task average.

    ``None`` for a two-row joint-training matrix.
    """
    return _point("MAA", A)


def bwt(A: Matrix) -> float | None:
    """BWT: mean_{i<T} (A[T][i] - A[i][i]); negative means learning later tasks hurt earlier ones.

    ``None`` when T == 1 or for a two-row joint-training matrix.
    """
    return _point("BWT", A)


def forgetting(A: Matrix) -> float | None:
    """Forgetting: mean_{i<T} (max_{i<=j<T} A[j][i] - A[T][i]), the drop from each task's best earlier score.

    The maximum runs over rows j = i..T-1: from right after learning task i to the row before the last.
    ``None`` when T == 1 or for a two-row joint-training matrix.
    """
    return _point("Forgetting", A)


def fwt(A: Matrix) -> float | None:
    """FWT: mean_{i>=2} (A[i-1][i] - A[0][i]), what earlier tasks taught about task i before training on it.

    ``None`` when T == 1 or for a two-row joint-training matrix.
    """
    return _point("FWT", A)


METRICS: dict[str, tuple[Callable[[Matrix], float | None], str]] = {
    "Avg.ACC": (avg_acc, "mean_i A[T][i] (final average over all tasks; a.k.a. Last, MFN)"),
    "New.ACC": (new_acc, "mean_i A[i][i] (score on each task right after learning it; a.k.a. MFT, plasticity)"),
    "MAA": (maa, "mean_{t=1..T} mean_{i<=t} A[t][i] (average over stages of the seen-task average)"),
    "BWT": (bwt, "mean_{i<T} (A[T][i] - A[i][i]) (backward transfer; negative = forgetting)"),
    "Forgetting": (forgetting, "mean_{i<T} (max_{i<=j<T} A[j][i] - A[T][i]) (drop from best earlier score)"),
    "FWT": (fwt, "mean_{i>=2} (A[i-1][i] - A[0][i]) (forward transfer against the untrained model)"),
}
"""Metric name -> (function of the accuracy matrix, exact one-line definition), in report order.

``A[j][i]``: score on task i after training tasks 1..j, tasks and rows 1-based, row 0 = untrained model.
"""


def compute_metrics(A: Matrix) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` for ``A``, ``None`` where undefined (T == 1, or a joint run)."""
    _as_matrix(A)  # fail once, clearly, before computing anything
    return {name: fn(A) for name, (fn, _) in METRICS.items()}


def _resampled(
    scores: Sequence[Sequence[Sequence[float]]], n_resamples: int, seed: int
) -> tuple[np.ndarray, int, bool]:
    """``(n_resamples, rows, T)`` matrices of resampled test sets, T, and whether the grid is a joint run's.

    Each resample draws one set of example indices per task and applies it to every row. The draws depend only on
    ``seed`` and the test sets' sizes, so two runs over the same test sets get the same resampled examples.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    T, joint = _shape([len(row) for row in scores], "score grid")
    rows = len(scores)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_resamples, rows, T))
    for c in range(T):
        task = [np.asarray(scores[j][c], dtype=float) for j in range(rows)]
        sizes = {s.shape for s in task}
        if len(sizes) != 1 or len(task[0].shape) != 1 or task[0].size == 0:
            raise ValueError(
                f"task {c + 1}: per-example scores must be non-empty 1-D lists of the same length in every "
                f"row (the same test examples), got shapes {sorted(sizes)}"
            )
        S = np.stack(task)  # (rows, n)
        if not np.all(np.isfinite(S)):
            raise ValueError(f"task {c + 1}: per-example scores hold a NaN or infinite value")
        n = S.shape[1]
        # Counts of each example per resample instead of gathered copies: memory n_resamples * n rather
        # than rows * n_resamples * n, and one matrix product scores every row.
        idx = rng.integers(0, n, size=(n_resamples, n))
        offsets = (np.arange(n_resamples) * n)[:, None]
        counts = np.bincount((idx + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
        boot[:, :, c] = (counts @ S.T) / n
    return boot, T, joint


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return (1.0 - confidence) / 2.0


def bootstrap_metrics(
    scores: Sequence[Sequence[Sequence[float]]],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile confidence intervals for every metric by a paired bootstrap over test examples.

    ``scores[j][i]`` holds the per-example scores (in [0, 1]) of task i's test set at row j, so that
    ``A[j][i] = mean(scores[j][i])``. Every row scores the same examples, so each resample draws one set
    of example indices per task and applies it to all rows: the interval then reflects which examples
    happen to be in the test set, not independent noise per cell.

    Returns metric name -> ``(low, high)``, the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    percentiles of the resampled metric, or ``None`` where the metric is undefined. Deterministic for a
    fixed ``seed``.
    """
    alpha = _check_confidence(confidence)
    boot, T, joint = _resampled(scores, n_resamples, seed)
    intervals: dict[str, tuple[float, float] | None] = {}
    for name, (kernel, _, _) in _KERNELS.items():
        if not _defined(name, T, joint):
            intervals[name] = None
            continue
        low, high = np.quantile(kernel(boot), [alpha, 1.0 - alpha])
        intervals[name] = (float(low), float(high))
    return intervals


def resampled_metrics(
    scores: Sequence[Sequence[Sequence[float]]], names: Sequence[str], n_resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray | None]:
    """Each metric of ``names`` on each of ``n_resamples`` resampled test sets, ``None`` where undefined.

    The draws of :func:`bootstrap_metrics`: runs over the same test sets, resampled with the same ``seed``, are
    scored on the same examples, so a quantity computed from several runs' metrics can be resampled too.
    """
    boot, T, joint = _resampled(scores, n_resamples, seed)
    return {name: _KERNELS[name][0](boot) if _defined(name, T, joint) else None for name in names}


def bootstrap_differences(
    pairs: Sequence[tuple[Sequence[Sequence[Sequence[float]]], Sequence[Sequence[Sequence[float]]]]],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict | None]:
    """Each metric's difference between two settings over the same test sets, with a paired-bootstrap interval.

    ``pairs`` holds one ``(scores_a, scores_b)`` per seed (the grids of :func:`bootstrap_metrics`). The
    difference is the mean over the pairs of metric(a) - metric(b); each resample draws one set of test examples
    and scores every run on it, so the interval is that of the difference itself (narrower than two runs'
    separate intervals, which share the test set's luck). It measures which examples are in the test sets, not
    training noise: that needs several seeds. Returns metric name -> ``{"difference", "interval", "p"}`` (``p``:
    the two-sided bootstrap p-value, twice the share of resampled differences on the other side of 0), or
    ``None`` where the metric is undefined.
    """
    if not pairs:
        raise ValueError("no pairs of score grids to compare")
    alpha = _check_confidence(confidence)
    grids = [(_resampled(a, n_resamples, seed), _resampled(b, n_resamples, seed)) for a, b in pairs]
    (_, T, joint), (_, T_b, joint_b) = grids[0]
    if (T, joint) != (T_b, joint_b):
        raise ValueError("the two settings' score grids have different shapes: not the same tasks")
    out: dict[str, dict | None] = {}
    for name, (kernel, _, _) in _KERNELS.items():
        if not _defined(name, T, joint):
            out[name] = None
            continue
        resampled = np.mean([kernel(a) - kernel(b) for (a, _, _), (b, _, _) in grids], axis=0)
        point = float(np.mean([kernel(np.asarray(_means(a))) - kernel(np.asarray(_means(b))) for a, b in pairs]))
        low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
        other_side = np.mean(resampled <= 0) if point > 0 else np.mean(resampled >= 0)
        out[name] = {"difference": point, "interval": (float(low), float(high)), "p": float(min(1.0, 2 * other_side))}
    return out


def _means(scores: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    """The accuracy matrix of a grid of per-example scores."""
    return [[float(np.mean(cell)) for cell in row] for row in scores]
