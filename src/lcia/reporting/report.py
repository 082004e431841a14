"""``lcia report``: a markdown report, LaTeX tables and PNG figures from one or more finished run directories.

report.md    1. each run's manifest  2. the comparison of settings  3. the metric definitions
             4. each run's matrix, metrics, groups, routing and EMA coefficients  5. the figures
report.tex   the comparison as booktabs tabulars, to ``\\input`` inside a document
figures/     the PNGs that report.md links to

A *setting* is the set of runs whose configs are identical except for ``seed`` and ``output_dir``: the
comparison shows its mean ± sample standard deviation over seeds, or, for one seed, the run's value and
its 95% bootstrap interval. Every number comes from the runs' files as written (results.json holds the
metrics that ``lcia metrics`` prints); nothing is recomputed and no run directory is written to unless it
is the output directory.
"""

from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from lcia.config import load_config
from lcia.errors import LciaError, input_error
from lcia.evaluation.metrics import METRICS
from lcia.pipeline.run_files import RunDir
from lcia.reporting import figures
from lcia.reporting.tables import latex_escape, latex_tabular, markdown_matrix, markdown_metrics, markdown_table

PACKAGES = ("torch", "transformers", "peft", "accelerate")
BAR_METRICS = ("Avg.ACC", "New.ACC", "BWT")
NOT_SETTING = ("seed", "output_dir")  # config keys that may differ between the runs of one setting


@dataclass
class Run:
    path: Path
    config: dict  # the resolved config, every default filled in
    manifest: dict
    results: dict
    label: str = ""  # unique in the report: the directory name (with its parents' where two collide)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.label)

    @cached_property
    def ema_coefficients(self) -> list[dict]:
        """ema_coefficients.jsonl (empty without one), read once for the text and the figure."""
        return _jsonl(self.path, "ema_coefficients.jsonl")


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


def default_out_dir(run_dirs: list[str | Path]) -> Path:
    """Where ``lcia report`` writes without ``--out``: the run's own directory, or ./report for several."""
    return Path(run_dirs[0]) if len(run_dirs) == 1 else Path("report")


def write_report(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write report.md, report.tex and figures/*.png for ``run_dirs`` into ``out_dir``; return report.md's path."""
    if not run_dirs:
        raise LciaError("no run directories given: lcia report RUN_DIR [RUN_DIR ...]")
    unique: dict[Path, Path] = {}  # a run given twice counts once
    for path in run_dirs:
        unique.setdefault(Path(path).resolve(), Path(path))
    runs = label_runs([load_run(path) for path in unique.values()])
    comparison = compare(group_settings(runs))
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figure_links = draw_figures(runs, comparison, out / "figures")
    report = out / "report.md"
    report.write_text(markdown_report(runs, comparison, figure_links), encoding="utf-8")
    (out / "report.tex").write_text(latex_report(runs, comparison), encoding="utf-8")
    return report


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


def _jsonl(path: Path, name: str) -> list[dict]:
    return RunDir(path).read_jsonl(name) if (path / name).exists() else []


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
    """'dema (preset=paper)': the method and the parameters the config sets (the rest are defaults)."""
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


def _setting_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_SETTING}


def group_settings(runs: list[Run]) -> list[Setting]:
    """Runs with identical configs except seed and output_dir form one setting (runs sorted by seed)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(_setting_config(run.config), sort_keys=True), []).append(run)
    labels = setting_labels([_setting_config(members[0].config) for members in groups.values()])
    return [
        Setting(label, sorted(members, key=lambda r: r.config["seed"]))
        for label, members in zip(labels, groups.values())
    ]


def summarize(values: list[float | None], intervals: list[list[float] | None]) -> Summary | None:
    """None where any seed lacks the value (an undefined metric)."""
    if any(v is None for v in values):
        return None
    return Summary(list(values), intervals[0] if len(values) == 1 else None)


def compare(settings: list[Setting]) -> Comparison:
    """Per setting: the final score of each task (when all runs share a task list) and every metric."""
    runs = [run for setting in settings for run in setting.runs]
    tasks = runs[0].results["tasks"]
    shared = tasks if all(run.results["tasks"] == tasks for run in runs) else None
    comparison = Comparison(settings, shared)
    for c, task in enumerate(shared or []):
        comparison.cells[task] = [
            summarize([run.results["matrix"][-1][c] for run in s.runs], [None] * len(s.runs)) for s in settings
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


def _seeds(setting: Setting) -> str:
    return f"{len(setting.runs)} ({', '.join(str(run.config['seed']) for run in setting.runs)})"


# --- report.md -----------------------------------------------------------------------------------


def markdown_cell(summary: Summary | None) -> str:
    if summary is None:
        return "n/a"
    if len(summary.values) > 1:
        return f"{summary.mean:.3f} ± {summary.std:.3f}"
    interval = f" [{summary.interval[0]:.3f}, {summary.interval[1]:.3f}]" if summary.interval else ""
    return f"{summary.values[0]:.3f}{interval}"


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def _stage_name(stage: dict) -> str:
    tasks = stage["tasks"]
    return tasks[0] if len(tasks) == 1 else f"stage {stage['stage']} ({len(tasks)} tasks)"


def _precision(training: dict, manifest: dict) -> str:
    used = manifest.get("precision")
    return f"{training['precision']} -> {used}" if used and used != training["precision"] else training["precision"]


def manifest_block(run: Run) -> str:
    config, manifest, results = run.config, run.manifest, run.results
    lora, training = config["lora"], config["training"]
    hardware, packages = manifest.get("hardware", {}), manifest.get("packages", {})
    timings = manifest.get("timings", {})
    stages = ", ".join(f"{_stage_name(s)} {_seconds(s.get('seconds'))}" for s in timings.get("stages", []))
    rows = timings.get("rows", [])
    gpu = f"yes ({hardware['gpu']})" if hardware.get("gpu") else ("yes" if hardware.get("cuda") else "no")
    n_test = sorted(set(results.get("n_test", {}).values()))
    lines = [
        f"- run dir: `{run.path}`",
        f"- stream: {config['stream']} ({len(results['tasks'])} tasks, "
        f"{'/'.join(map(str, n_test)) or 'n/a'} test examples each)",
        f"- method: {method_label(config)}",
        f"- seed: {config['seed']}",
        f"- model: {config['model']['name_or_path']} ({config['model']['dtype']})",
        f"- LoRA: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, "
        f"targets {', '.join(lora['target_modules'])}",
        f"- training: {training['steps']} steps per task, batch {training['batch_size']} x grad_accum "
        f"{training['grad_accum']}, lr {training['lr']} ({training['scheduler']}), {_precision(training, manifest)}",
        f"- git commit: `{manifest.get('git_commit') or 'unknown'}`",
        f"- packages: python {manifest.get('python', 'n/a')}, "
        + ", ".join(f"{name} {packages.get(name) or 'n/a'}" for name in PACKAGES),
        f"- hardware: {hardware.get('cpu_count', 'n/a')} CPUs, {hardware.get('torch_threads', 'n/a')} torch threads "
        f"(config threads: {config.get('threads') or 'default'}), CUDA {gpu}",
        f"- wall time: {_seconds(timings.get('total_seconds'))} in all; training per stage: {stages or 'n/a'}; "
        f"evaluation: {_seconds(sum(rows))} for {len(rows)} rows",
        f"- command: `{shlex.join(manifest.get('command', []))}`",
    ]
    return f"### {run.label}\n\n" + "\n".join(lines)


def comparison_section(comparison: Comparison, heading: str = "## 2. Comparison") -> str:
    settings = comparison.settings
    members = markdown_table(
        ["setting", "seeds", "runs"],
        [[s.label, _seeds(s), ", ".join(f"`{run.label}`" for run in s.runs)] for s in settings],
    )
    header = ["setting", "seeds", *comparison.cells]
    table = markdown_table(
        header,
        [
            [s.label, _seeds(s), *(markdown_cell(cells[k]) for cells in comparison.cells.values())]
            for k, s in enumerate(settings)
        ],
    )
    if comparison.tasks:
        columns = (
            f"The task columns ({', '.join(comparison.tasks)}) are the final scores A[T][i]; the others the metrics."
        )
    else:
        columns = "The runs cover different task lists, so only the metrics are compared."
    return "\n\n".join(
        [
            heading,
            "A setting is the set of runs whose configs are identical except for `seed` and `output_dir`.",
            members,
            "Cells: with one seed, the run's value and, for the metrics, its 95% paired-bootstrap interval over "
            "test examples (from results.json); with several seeds, mean ± sample standard deviation (n - 1) "
            f"over the seeds. {columns}",
            table,
        ]
    )


def definitions_section() -> str:
    return "\n\n".join(
        [
            "## 3. Metric definitions",
            "`A[j][i]` is the test score on task i after training stages 1..j (tasks and rows 1-based; row 0 is "
            "the model before any training; T tasks). Papers use these names for different formulas: every "
            "Avg.ACC, New.ACC, MAA, BWT, Forgetting and FWT in this report is exactly the definition below, "
            "as computed by `lcia.evaluation.metrics` (and printed by `lcia metrics`).",
            markdown_table(["metric", "definition"], [[name, f"`{d}`"] for name, (_, d) in METRICS.items()]),
        ]
    )


def grouping_lines(run: Run) -> list[str]:
    grouping, routing = run.results.get("method", {}).get("grouping"), run.results.get("routing")
    lines = []
    if grouping:
        lines += [
            f"Groups formed ({grouping.get('similarity')} similarity, threshold {grouping.get('threshold')}):",
            markdown_table(
                ["adapter", "tasks", "instructions"],
                [[g["adapter"], ", ".join(g["tasks"]), str(len(g["instructions"]))] for g in grouping["groups"]],
            ),
        ]
    if routing:
        final = "n/a" if routing.get("final") is None else f"{routing['final']:.3f}"
        per_task = ", ".join(f"{task} {share:.2f}" for task, share in routing.get("per_task", {}).items())
        per_row = ", ".join("n/a" if v is None else f"{v:.2f}" for v in routing.get("rows", []))
        lines.append(
            f"Routing accuracy (share of test instances answered by their task's own adapter): last row {final}; "
            f"per task: {per_task or 'n/a'}; per row: {per_row or 'n/a'}."
        )
    return lines


def ema_lines(run: Run) -> list[str]:
    summary = run.results.get("method", {})
    counts = summary.get("counts")
    if not counts:
        return []
    settings = ", ".join(f"{k}={v}" for k, v in summary.get("settings", {}).items())
    lines = [f"EMA coefficient (preset {summary.get('preset')}; {settings}):", ""]
    if counts.get("updates"):
        per_stage = ", ".join(
            f"{s['inside'] / s['updates']:.0%}" for s in summary.get("per_stage", []) if s.get("updates")
        )
        lines.append(
            f"- inside (0, 1): {counts['inside'] / counts['updates']:.1%} of {counts['updates']:,} per-tensor updates "
            f"(counts.inside / counts.updates; out of range {counts.get('out_of_range', 0):,}, "
            f"non-finite {counts.get('nonfinite', 0):,}); per stage: {per_stage or 'n/a'}"
        )
    coefficients = run.ema_coefficients
    values = np.array([v for r in coefficients for v in r["coefficient"].values() if v is not None], dtype=float)
    if values.size:
        low, median, high = np.percentile(values, [10, 50, 90])
        lines.append(
            f"- logged coefficients (ema_coefficients.jsonl, {len(coefficients)} records): median {median:.3g}, "
            f"10th-90th percentile {low:.3g} to {high:.3g}"
        )
    return lines


def run_section(run: Run) -> str:
    results = run.results
    baseline = results.get("majority_baseline", {})
    parts = [
        f"### {run.label}: results",
        "Accuracy matrix A[row][task]:",
        markdown_matrix(results),
    ]
    if baseline:
        parts.append(
            "Majority baseline: " + ", ".join(f"{t} {baseline[t]:.3f}" for t in results["tasks"] if t in baseline)
        )
    parts += ["Metrics (from results.json):", markdown_metrics(results["metrics"], results.get("intervals"))]
    parts += grouping_lines(run)
    ema = ema_lines(run)
    if ema:
        parts.append("\n".join(ema))
    return "\n\n".join(parts)


def figures_section(figure_links: dict[str, list[tuple[str, str]]]) -> str:
    parts = ["## 5. Figures"]
    for heading, links in figure_links.items():
        parts.append(f"### {heading}: figures")
        parts += [f"![{caption}]({link})" for caption, link in links]
    return "\n\n".join(parts)


def markdown_report(runs: list[Run], comparison: Comparison, figure_links: dict) -> str:
    sections = [
        f"# lcia report: {len(runs)} run{'s' if len(runs) > 1 else ''}, {len(comparison.settings)} "
        f"setting{'s' if len(comparison.settings) > 1 else ''}",
        "## 1. Runs",
        *(manifest_block(run) for run in runs),
        comparison_section(comparison),
        definitions_section(),
        "## 4. Per run",
        *(run_section(run) for run in runs),
        figures_section(figure_links),
    ]
    return "\n\n".join(sections) + "\n"


# --- report.tex ----------------------------------------------------------------------------------


def _latex_number(value: float) -> str:
    return f"${value:.3f}$"


def latex_cell(summary: Summary | None) -> str:
    if summary is None:
        return "n/a"
    if len(summary.values) > 1:
        return f"${summary.mean:.3f} \\pm {summary.std:.3f}$"
    if summary.interval:
        low, high = summary.interval
        return f"{_latex_number(summary.values[0])} {{\\small $[{low:.3f}, {high:.3f}]$}}"
    return _latex_number(summary.values[0])


def _latex_table(comparison: Comparison, columns: list[str]) -> str:
    header = ["Setting", "$n$", *(latex_escape(c) for c in columns)]
    rows = [
        [latex_escape(s.label), str(len(s.runs)), *(latex_cell(comparison.cells[c][k]) for c in columns)]
        for k, s in enumerate(comparison.settings)
    ]
    return latex_tabular(header, rows, "lr" + "r" * len(columns))


def latex_report(runs: list[Run], comparison: Comparison) -> str:
    parts = [
        "% Written by lcia report from: " + ", ".join(str(run.path) for run in runs),
        "% Needs \\usepackage{booktabs}. $n$: seeds. One seed: the value and its 95% paired-bootstrap interval",
        "% over test examples; several seeds: mean $\\pm$ sample standard deviation over seeds.",
        "% Metric definitions: report.md, section 3 (A[j][i] = score on task i after training stages 1..j).",
        "",
        "% Metrics per setting",
        _latex_table(comparison, list(METRICS)),
    ]
    if comparison.tasks:
        parts += ["", "% Final score per task, A[T][i]", _latex_table(comparison, comparison.tasks)]
    return "\n".join(parts) + "\n"


# --- figures -------------------------------------------------------------------------------------


def stage_spans(run: Run) -> list[tuple[int, int, str]]:
    """(steps before, steps at the end, label) of each stage: from the manifest's timings, else the config
    (steps x tasks per stage)."""
    recorded = {s["stage"]: s["steps"] for s in run.manifest.get("timings", {}).get("stages", [])}
    stages = run.results["stages"]
    labels = [label.removeprefix("after ") for label in figures.stage_labels(stages, len(stages) + 1)[1:]]
    spans, total = [], 0
    for number, (stage, label) in enumerate(zip(stages, labels), start=1):
        steps = recorded.get(number, run.config["training"]["steps"] * len(stage))
        spans.append((total, total + steps, label))
        total += steps
    return spans


def draw_comparison(comparison: Comparison, path: Path) -> Path:
    values = {m: [None if s is None else s.mean for s in comparison.cells[m]] for m in BAR_METRICS}
    errors = {m: [None if s is None else s.error_bar() for s in comparison.cells[m]] for m in BAR_METRICS}
    title = "Avg.ACC, New.ACC and BWT per setting\n(error bars: std over seeds, or the 95% bootstrap CI of one seed)"
    return figures.settings_comparison_bars([s.label for s in comparison.settings], values, errors, title, path)


def draw_ema(run: Run, path: Path) -> Path | None:
    spans = stage_spans(run)
    offsets = {number: first for number, (first, _, _) in enumerate(spans, start=1)}
    steps, overall, per_layer = figures.coefficient_medians(run.ema_coefficients, offsets)
    if not per_layer:
        return None
    return figures.ema_coefficient_by_layer(steps, overall, per_layer, spans, run.label, path)


def draw_routing(run: Run, path: Path) -> Path | None:
    grouping = run.results.get("method", {}).get("grouping")
    if grouping is None and (run.path / "codebook.json").exists():
        grouping = RunDir(run.path).read_json("codebook.json")
    records = [r for r in _jsonl(run.path, "predictions.jsonl") if r.get("adapter") is not None] if grouping else []
    if not records:
        return None
    tasks, adapters, shares = figures.routing_shares(records, run.results["tasks"])
    trained_in = {task: g["adapter"] for g in grouping["groups"] for task in g["tasks"]}
    final = run.results.get("routing", {}).get("final")
    title = run.label + ("" if final is None else f" (routing accuracy {final:.2f})")
    return figures.routing_heatmap(tasks, adapters, shares, trained_in, title, path)


def draw_figures(runs: list[Run], comparison: Comparison, directory: Path) -> dict[str, list[tuple[str, str]]]:
    """Draw every figure whose data exists; heading -> [(caption, link relative to report.md)]."""
    links = {"Comparison": [("Avg.ACC, New.ACC and BWT per setting", "figures/comparison.png")]}
    draw_comparison(comparison, directory / "comparison.png")
    for run in runs:
        results, slug = run.results, run.slug
        matrix, tasks, stages = results["matrix"], results["tasks"], results["stages"]
        drawn = [
            (
                "accuracy matrix",
                figures.accuracy_matrix_heatmap(matrix, tasks, stages, run.label, directory / f"{slug}-matrix.png"),
            ),
            (
                "score per task across stages",
                figures.task_scores_across_stages(matrix, tasks, stages, run.label, directory / f"{slug}-stages.png"),
            ),
            ("EMA coefficient per layer", draw_ema(run, directory / f"{slug}-ema.png")),
            ("routing of test instances to adapters", draw_routing(run, directory / f"{slug}-routing.png")),
        ]
        links[run.label] = [(f"{run.label}: {caption}", f"figures/{path.name}") for caption, path in drawn if path]
    return links
