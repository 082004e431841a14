"""Finished runs as ``lcia report`` and ``lcia compare`` read them, and settings compared over seeds.

A *setting* is the set of runs whose configs are identical except for ``seed`` and ``output_dir`` (and, where
``lcia compare`` pools them, the task order ``data.order``): its runs are its *replicates*, and its ``Summary`` of a
quantity is the mean ± sample standard deviation over them, or, for one run, the run's value and its 95% bootstrap
interval. Two settings' runs pair by replicate: the same seed and task order. A method's part of the report reads a
``Run`` (its config, manifest, results and JSON-lines files) through ``Method.report_lines`` / ``report_figures``.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from lcia.config import DataConfig, load_config
from lcia.errors import input_error
from lcia.evaluation.metrics import METRICS
from lcia.pipeline.run_files import RunDir
from lcia.reporting import figures
from lcia.reporting.manifest import machine_kind

# why a report names the machines: said once, in the settings and in the paired differences
TWO_MACHINES = "The same config on two kinds of machine gives two different runs (their kernels round differently)"
NOT_SETTING = ("seed", "output_dir")  # config keys that may differ between the runs of one setting
ORDERS = get_args(DataConfig.model_fields["order"].annotation)  # the task orders, the stream's own first


@dataclass
class Run:
    path: Path
    config: dict  # the resolved config, every default filled in
    manifest: dict
    results: dict
    label: str = ""  # unique in the report: the directory name (with its parents' where two collide)
    _jsonl: dict[str, list[dict]] = field(default_factory=dict, repr=False)
    _scores: list | None = field(default=None, repr=False)

    @property
    def machine(self) -> str:
        return machine_kind(self.manifest)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.label)

    def read_jsonl(self, name: str) -> list[dict]:
        """A JSON-lines file of the run (empty without one), read once."""
        if name not in self._jsonl:
            run = RunDir(self.path)
            self._jsonl[name] = run.read_jsonl(name) if run.has(name) else []
        return self._jsonl[name]

    def example_scores(self) -> list[list[list[float]]]:
        """``scores[row][task]``: the per-example scores of predictions.jsonl, read once however often asked."""
        if self._scores is None:
            self._scores = RunDir(self.path).per_example_scores(self.results["tasks"], len(self.results["matrix"]))
        return self._scores

    def stage_spans(self) -> list[tuple[int, int, str]]:
        """(steps before, steps at the end, label) of each stage: from the manifest's timings, else the config
        (steps x tasks per stage)."""
        recorded = {s["stage"]: s["steps"] for s in self.manifest.get("timings", {}).get("stages", [])}
        stages = self.results["stages"]
        labels = [label.removeprefix("after ") for label in figures.stage_labels(stages, len(stages) + 1)[1:]]
        spans, total = [], 0
        for number, (stage, label) in enumerate(zip(stages, labels), start=1):
            steps = recorded.get(number, self.config["training"]["steps"] * len(stage))
            spans.append((total, total + steps, label))
            total += steps
        return spans


@dataclass
class Setting:
    label: str
    runs: list[Run]


@dataclass
class Summary:
    """One quantity of one setting over its seeds; ``interval`` is the bootstrap CI of a single seed."""

    values: list[float]
    interval: list[float] | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values)  # sample standard deviation (n - 1)

    def error_bar(self) -> tuple[float, float] | None:
        if len(self.values) > 1:
            return self.mean - self.std, self.mean + self.std
        return tuple(self.interval) if self.interval else None


@dataclass
class Comparison:
    settings: list[Setting]
    tasks: list[str] | None  # the task list all runs share; None when they differ (metrics only)
    cells: dict[str, list[Summary | None]] = field(default_factory=dict)  # column -> one per setting


# --- reading runs --------------------------------------------------------------------------------


def load_run(path: Path) -> Run:
    """A finished run's config, manifest and results; LciaError naming ``path`` if it is not one."""
    if not path.is_dir():
        raise input_error("not a directory: expected a finished run directory", file=path)
    run_dir = RunDir(path)
    manifest = run_dir.read_json("manifest.json")
    results = run_dir.read_json("results.json")
    rows, expected = len(results.get("matrix", [])), len(results.get("stages", [])) + 1
    if "metrics" not in results or rows < expected:
        raise input_error(
            f"not a finished run: results.json has {rows} of {expected} rows and no metrics yet "
            "(still running, or stopped: lcia run --resume continues it)",
            file=path,
        )
    if not (path / "config.yaml").exists():
        raise input_error("no config.yaml: not a run directory", file=path)
    config = load_config(str(path / "config.yaml")).model_dump(mode="json")
    return Run(path, config, manifest, results)


def label_runs(runs: list[Run]) -> list[Run]:
    """Label each run by its directory name, adding parent directories until the labels are unique."""
    depth = 1
    while True:
        labels = ["/".join(run.path.parts[-depth:]) for run in runs]
        if len(set(labels)) == len(labels) or depth >= max(len(run.path.parts) for run in runs):
            break
        depth += 1
    for run, label in zip(runs, labels):
        run.label = label
    return runs


# --- settings and the comparison -------------------------------------------------------------------


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def method_label(config: dict) -> str:
    """'name (key=value, ...)': the method and the parameters the config sets (the rest are defaults)."""
    params = config["method"]["params"]
    return config["method"]["name"] + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")


def setting_labels(configs: list[dict]) -> list[str]:
    """Method labels, with the config keys that tell settings apart where two share a method label."""
    labels = [method_label(config) for config in configs]
    for label in set(labels):
        same = [i for i, other in enumerate(labels) if other == label]
        if len(same) < 2:
            continue
        flat = [_flatten(configs[i]) for i in same]
        differing = sorted(k for k in set().union(*flat) if len({json.dumps(f.get(k)) for f in flat}) > 1)
        for i, f in zip(same, flat):
            labels[i] = f"{label} [{', '.join(f'{k}={f.get(k)}' for k in differing)}]"
    return labels


def setting_config(config: dict, pool_orders: bool = False) -> dict:
    """What makes ``config`` a setting: all but its seed and directory (and, with ``pool_orders``, its task order)."""
    kept = {k: v for k, v in config.items() if k not in NOT_SETTING}
    return kept | {"data": {k: v for k, v in kept["data"].items() if k != "order"}} if pool_orders else kept


def replicate(run: Run) -> tuple[int, str]:
    """What pairs a run with another setting's: its seed and task order."""
    return run.config["seed"], run.config["data"]["order"]


def replicate_label(seed: int, order: str) -> str:
    """The seed, after the task order where that is not the stream's own: ``0``, ``reverse 0``."""
    return str(seed) if order == ORDERS[0] else f"{order} {seed}"


def replicates_name(replicates: list[tuple[int, str]]) -> str:
    """What (seed, order) pairs replicate over: ``seeds``, ``orders`` (one seed), or ``orders and seeds``."""
    seeds, orders = {seed for seed, _ in replicates}, {order for _, order in replicates}
    return "seeds" if len(orders) == 1 else "orders" if len(seeds) == 1 else "orders and seeds"


def group_settings(runs: list[Run], pool_orders: bool = False) -> list[Setting]:
    """Runs with identical configs except seed and output_dir (and the task order, with ``pool_orders``) form one
    setting, its runs sorted by seed, then order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(setting_config(run.config, pool_orders), sort_keys=True), []).append(run)
    labels = setting_labels([setting_config(members[0].config, pool_orders) for members in groups.values()])
    order = lambda run: (run.config["seed"], ORDERS.index(run.config["data"]["order"]))  # noqa: E731
    return [Setting(label, sorted(members, key=order)) for label, members in zip(labels, groups.values())]


def summarize(values: list[float | None], intervals: list[list[float] | None]) -> Summary | None:
    """None where any seed lacks the value (an undefined metric)."""
    if any(v is None for v in values):
        return None
    return Summary(list(values), intervals[0] if len(values) == 1 else None)


def compare(settings: list[Setting]) -> Comparison:
    """Per setting: the final score of each task (when all runs share their tasks, in any order) and every
    metric."""
    runs = [run for setting in settings for run in setting.runs]
    tasks = runs[0].results["tasks"]
    shared = tasks if all(sorted(run.results["tasks"]) == sorted(tasks) for run in runs) else None
    comparison = Comparison(settings, shared)
    final = lambda run, task: run.results["matrix"][-1][run.results["tasks"].index(task)]  # noqa: E731
    for task in shared or []:
        comparison.cells[task] = [
            summarize([final(run, task) for run in s.runs], [None] * len(s.runs)) for s in settings
        ]
    for name in METRICS:
        comparison.cells[name] = [
            summarize(
                [run.results["metrics"].get(name) for run in s.runs],
                [run.results.get("intervals", {}).get(name) for run in s.runs],
            )
            for s in settings
        ]
    return comparison


def machines_label(runs: list[Run]) -> str:
    """Each kind of machine the runs trained on, with how many ran there when they differ: "CPU 2, NVIDIA H200 1"."""
    counts = Counter(run.machine for run in runs)
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{m} {n}" for m, n in sorted(counts.items()))


def seeds_label(setting: Setting) -> str:
    return f"{len(setting.runs)} ({', '.join(replicate_label(*replicate(run)) for run in setting.runs)})"
