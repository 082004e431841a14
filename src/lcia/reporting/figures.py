"""PNG figures of finished runs, drawn from plain data (lists and dicts, no run directories).

matplotlib is imported inside the functions, so that ``import lcia`` stays light, and each figure is drawn
on its own Agg canvas without pyplot: nothing global, no display needed.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np

DPI = 120
_LAYER = re.compile(r"\.layers\.(\d+)\.")
_GROUP_INDEX = re.compile(r"(\d+)$")


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path


def _annotate_cells(ax, values: np.ndarray, dark: np.ndarray) -> None:
    """Each cell's value, white where ``dark`` (the cell's colour is dark) and black elsewhere."""
    for (r, c), value in np.ndenumerate(values):
        color = "white" if dark[r, c] else "black"
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)


def _outline(ax, cells: list[tuple[int, int]], color: str = "red") -> None:
    from matplotlib.patches import Rectangle

    for r, c in cells:
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=2))


def stage_labels(stages: list[list[str]], rows: int) -> list[str]:
    """Short row labels for axes: 'before', then 'after <task>' (or the stage number for a joint stage)."""
    labels = ["before"]
    for number, stage in enumerate(stages[: rows - 1], start=1):
        labels.append(f"after {stage[0]}" if len(stage) == 1 else f"after stage {number} ({len(stage)} tasks)")
    return labels


def trained_cells(stages: list[list[str]], tasks: list[str], rows: int) -> list[tuple[int, int]]:
    """(row, column) of each task in the row right after the stage that trained it: A[i][i]."""
    column = {task: c for c, task in enumerate(tasks)}
    return [(row, column[task]) for row, stage in enumerate(stages[: rows - 1], start=1) for task in stage]


def accuracy_matrix_heatmap(matrix, tasks, stages, title: str, path: Path) -> Path:
    values = np.asarray(matrix, dtype=float)
    rows, columns = values.shape
    figure = new_figure(max(6.0, 0.85 * columns + 3.0), max(3.5, 0.45 * rows + 2.0))
    ax = figure.add_subplot()
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    _annotate_cells(ax, values, dark=values < 0.6)  # viridis is dark at the low end
    _outline(ax, trained_cells(stages, tasks, rows))
    ax.set_xticks(range(columns), tasks, rotation=35, ha="right")
    ax.set_yticks(range(rows), stage_labels(stages, rows))
    ax.set_xlabel("test task")
    ax.set_ylabel("model")
    ax.set_title(f"{title}\naccuracy matrix A[row][task] (red: right after training on the task)", fontsize=10)
    figure.colorbar(image, ax=ax, label="test score")
    return save_figure(figure, path)


def task_scores_across_stages(matrix, tasks, stages, title: str, path: Path) -> Path:
    values = np.asarray(matrix, dtype=float)
    rows = values.shape[0]
    colors = _task_colors(len(tasks))
    trained_row = {tasks[c]: r for r, c in trained_cells(stages, tasks, rows)}
    figure = new_figure(max(7.0, 0.7 * rows + 4.0), 4.5)
    ax = figure.add_subplot()
    for c, task in enumerate(tasks):
        ax.plot(range(rows), values[:, c], marker="o", markersize=4, color=colors[c], label=task)
        if task in trained_row:  # where the task was learned
            ax.plot(trained_row[task], values[trained_row[task], c], marker="*", markersize=14, color=colors[c])
    ax.set_xticks(range(rows), stage_labels(stages, rows), rotation=30, ha="right")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("model (row of the accuracy matrix)")
    ax.set_ylabel("test score")
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}\nscore of each task after each stage (star: right after training on it)", fontsize=10)
    ax.legend(title="task", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return save_figure(figure, path)


def _task_colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def settings_comparison_bars(labels: list[str], values: dict, errors: dict, title: str, path: Path) -> Path:
    """Grouped bars: one group per setting, one bar per metric.

    ``values[metric][k]`` is setting k's value (None: undefined); ``errors[metric][k]`` the (low, high)
    ends of its error bar, or None.
    """
    metrics = list(values)
    width = 0.8 / len(metrics)
    x = np.arange(len(labels))
    figure = new_figure(max(6.5, 1.5 * len(labels) + 2.5), 5.0)
    ax = figure.add_subplot()
    for k, metric in enumerate(metrics):
        centres = x + (k - (len(metrics) - 1) / 2) * width
        heights = np.array([np.nan if v is None else v for v in values[metric]], dtype=float)
        low, high = np.array([(h, h) if e is None else e for h, e in zip(heights, errors[metric])], dtype=float).T
        ax.bar(centres, heights, width, label=metric)
        ax.errorbar(centres, heights, yerr=[heights - low, high - heights], fmt="none", ecolor="black", capsize=3)
        for centre, value, below, above in zip(centres, heights, low, high):
            if not np.isfinite(value):  # undefined for this setting (e.g. BWT of a joint run)
                ax.annotate("n/a", (centre, 0.0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
            else:  # the value beyond the error bar's end, away from zero
                ax.annotate(
                    f"{value:.2f}",
                    (centre, above if value >= 0 else below),
                    xytext=(0, 3 if value >= 0 else -3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom" if value >= 0 else "top",
                    fontsize=7,
                )
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.margins(y=0.12)
    ax.set_xlim(-0.5, len(labels) - 0.5)  # undefined (nan) bars do not take part in autoscaling
    ax.set_xticks(x, [textwrap.fill(label, 18) for label in labels], fontsize=8)
    ax.set_ylabel("score")
    ax.set_xlabel("setting")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(metrics), frameon=False)
    ax.set_title(title, fontsize=10, pad=24)
    return save_figure(figure, path)


def beaten_by(points: list[tuple[float, float]], i: int) -> list[int]:
    """Indices of the points that beat point ``i`` on both: x higher or equal, y lower or equal, one strictly."""
    x, y = points[i]
    return [j for j, (u, v) in enumerate(points) if u >= x and v <= y and (u, v) != (x, y)]


def frontier(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats on both: the stability-plasticity frontier when x is
    New.ACC and y Forgetting, in order of x."""
    return sorted((i for i in range(len(points)) if not beaten_by(points, i)), key=lambda i: points[i])


def stability_plasticity(
    labels: list[str], plasticity: list, forgetting: list, title: str, path: Path, methods: list[str] | None = None
) -> Path:
    """Forgetting against New.ACC, one point per setting with its error bars, the frontier joined by a line.

    ``plasticity[k]`` and ``forgetting[k]`` are setting k's (value, (low, high) or None), or None where the
    metric is undefined (the setting is then left out). ``methods[k]``, where given, is setting k's method: the
    points take its colour, and a method in two or more settings has its own curve (``lcia.reporting.curves``)."""
    kept = [(k, label, p, f) for k, (label, p, f) in enumerate(zip(labels, plasticity, forgetting)) if p and f]
    methods = methods or labels
    colors = dict(zip(dict.fromkeys(methods[k] for k, *_ in kept), _task_colors(len(kept))))
    figure = new_figure(7.0, 5.5)
    ax = figure.add_subplot()
    for k, label, (x, x_bar), (y, y_bar) in kept:
        x_low, x_high = x_bar or (x, x)
        y_low, y_high = y_bar or (y, y)
        ax.errorbar(x, y, xerr=[[x - x_low], [x_high - x]], yerr=[[y - y_low], [y_high - y]], fmt="o", capsize=3,
                    color=colors[methods[k]])  # fmt: skip
        ax.annotate(textwrap.fill(label, 22), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7)
    for method, color in colors.items():
        own = [(p[0], f[0]) for k, _, p, f in kept if methods[k] == method]
        if len(own) >= 2:
            ax.plot(*zip(*(own[i] for i in frontier(own))), color=color, linewidth=1.2, label=f"{method}'s curve")
    on_front = frontier([(p[0], f[0]) for _, _, p, f in kept])
    ax.plot([kept[i][2][0] for i in on_front], [kept[i][3][0] for i in on_front], color="gray", linestyle="--",
            linewidth=1, label="frontier: no setting is both more plastic and more stable")  # fmt: skip
    ax.set_xlabel("New.ACC (plasticity: each task just after training on it)")
    ax.set_ylabel("Forgetting (lower is more stable)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    return save_figure(figure, path)


def layer_index(tensor_name: str) -> int | None:
    """The transformer layer a parameter belongs to ('...layers.3.self_attn...' -> 3), None outside layers."""
    match = _LAYER.search(tensor_name)
    return int(match.group(1)) if match else None


def per_layer_medians(
    records: list[dict], key: str, stage_offsets: dict[int, int]
) -> tuple[list[int], list[float], dict]:
    """From records ``{"stage", "step", key: {tensor name: value}}`` logged during training: the global step of
    each, the median over all its tensors and, per layer, the median over that layer's tensors (nan where a
    record has none of them).

    A layer's tensors are its LoRA A and B matrices of every target module (and of every adapter);
    ``stage_offsets[stage]`` is the number of steps before that stage, so the stages follow each other.
    """
    steps, overall, per_layer = [], [], {}
    for index, record in enumerate(records):
        by_layer: dict[int, list[float]] = {}
        for name, value in record[key].items():
            layer = layer_index(name)
            if layer is not None and value is not None:
                by_layer.setdefault(layer, []).append(value)
        steps.append(stage_offsets.get(record["stage"], 0) + record["step"])
        overall.append(float(np.median([v for values in by_layer.values() for v in values] or [np.nan])))
        for layer, values in by_layer.items():
            per_layer.setdefault(layer, [np.nan] * len(records))[index] = float(np.median(values))
    return steps, overall, dict(sorted(per_layer.items()))


def _edges(centres: list[float]) -> np.ndarray:
    """Cell edges halfway between centres (for pcolormesh)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    middle = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - middle[0]], middle, [2 * c[-1] - middle[-1]]])


def per_layer_over_training(steps, overall, per_layer: dict, stages, title: str, quantity: str, path: Path) -> Path:
    """A per-tensor quantity in (0, 1] over training. Top: its median over all tensors; bottom: a layer x step
    heatmap of each layer's median.

    ``stages``: (first global step, last global step, task label) of each stage; dotted lines mark the starts.
    """
    from matplotlib.colors import LogNorm, Normalize

    layers = list(per_layer)
    grid = np.array([per_layer[layer] for layer in layers], dtype=float)
    positive = grid[np.isfinite(grid) & (grid > 0)]
    spans_decades = positive.size > 0 and positive.max() / positive.min() > 20
    # The quantity lies in (0, 1]: a fixed scale keeps runs comparable (and a constant value visible).
    norm = LogNorm(positive.min(), 1.0) if spans_decades else Normalize(0.0, 1.0)
    figure = new_figure(10.0, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[1, 2.6])
    top.plot(steps, overall, color="black", marker=".", linewidth=1.0)
    if spans_decades:
        top.set_yscale("log")
    else:
        top.set_ylim(0.0, 1.05)
    top.set_ylabel("median,\nall tensors")
    top.grid(alpha=0.3)
    mesh = bottom.pcolormesh(_edges(steps), _edges(layers), grid, cmap="viridis", norm=norm)
    bottom.set_ylabel("layer (0 = nearest the input)")
    bottom.set_xlabel("training step (stages one after another)")
    for first, _, _ in stages:
        for ax in (top, bottom):
            ax.axvline(first, color="red", linestyle=":", linewidth=1.0)
    bottom.set_xlim(min(stages[0][0], steps[0]), max(stages[-1][1], steps[-1]))
    stage_axis = top.secondary_xaxis("top")
    stage_axis.set_xticks([(first + last) / 2 for first, last, _ in stages], [label for _, _, label in stages])
    stage_axis.tick_params(labelsize=7, length=0)
    figure.suptitle(f"{title}: {quantity} per layer over training (dotted: a new task starts)", fontsize=10)
    figure.colorbar(mesh, ax=[top, bottom], label=f"median {quantity} of the layer's tensors")
    return save_figure(figure, path)


def routing_shares(records: list[dict], tasks: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Of the last row's predictions: the tasks and adapters that occur and the share of each task's test
    instances answered by each adapter (rows sum to 1)."""
    last = max(r["row"] for r in records)
    answered = [r for r in records if r["row"] == last and r["adapter"] is not None]
    adapters = sorted({r["adapter"] for r in answered}, key=_adapter_order)
    present = [t for t in tasks if any(r["task"] == t for r in answered)]
    counts = np.zeros((len(present), len(adapters)))
    for r in answered:
        counts[present.index(r["task"]), adapters.index(r["adapter"])] += 1
    return present, adapters, counts / counts.sum(axis=1, keepdims=True)


def _adapter_order(name: str) -> tuple:
    """'adapter-2' before 'adapter-10'."""
    match = _GROUP_INDEX.search(name)
    return (name[: match.start()], int(match.group(1))) if match else (name, -1)


def routing_heatmap(tasks, adapters, shares, trained_in: dict[str, str], title: str, path: Path) -> Path:
    """Task x adapter shares of routed test instances; red boxes: the adapter each task trained in."""
    figure = new_figure(max(6.0, 0.8 * len(adapters) + 3.5), max(3.5, 0.45 * len(tasks) + 2.0))
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    _annotate_cells(ax, shares, dark=shares > 0.6)  # Blues is dark at the high end
    _outline(ax, [(r, adapters.index(trained_in[t])) for r, t in enumerate(tasks) if trained_in.get(t) in adapters])
    ax.set_xticks(range(len(adapters)), adapters, rotation=35, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("adapter that answered (routed by the instance's instruction)")
    ax.set_ylabel("test task")
    subtitle = "routing of the last row's test instances (red: the adapter that trained on the task)"
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    figure.colorbar(image, ax=ax, label="share of the task's test instances")
    return save_figure(figure, path)
