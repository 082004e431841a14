"""``lcia report``: a markdown report, LaTeX tables and PNG figures from one or more finished run directories.

report.md    1. each run's manifest  2. the comparison of settings  3. the metric definitions
             4. each run's matrix, metrics, routing and its method's own section  5. the figures
report.tex   the comparison as booktabs tabulars, to ``\\input`` inside a document
figures/     the PNGs that report.md links to

A *setting* is the set of runs whose configs are identical except for ``seed`` and ``output_dir``: the
comparison shows its mean ± sample standard deviation over seeds, or, for one seed, the run's value and
its 95% bootstrap interval. Every number comes from the runs' files as written (results.json holds the
metrics that ``lcia metrics`` prints); nothing is recomputed and no run directory is written to unless it
is the output directory.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from lcia.errors import LciaError
from lcia.evaluation.metrics import METRICS
from lcia.methods import method_class
from lcia.reporting import figures
from lcia.reporting.curves import curve_gaps, curves_section, method_of
from lcia.reporting.differences import differences_section, paired_differences
from lcia.reporting.runs import (
    TWO_MACHINES,
    Comparison,
    Run,
    Summary,
    compare,
    group_settings,
    label_runs,
    load_run,
    machines_label,
    method_label,
    seeds_label,
)
from lcia.reporting.tables import latex_escape, latex_tabular, markdown_matrix, markdown_metrics, markdown_table

PACKAGES = ("torch", "transformers", "peft", "accelerate")
BAR_METRICS = ("Avg.ACC", "New.ACC", "BWT")


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
        ["setting", "seeds", "machines", "runs"],
        [
            [s.label, seeds_label(s), machines_label(s.runs), ", ".join(f"`{run.label}`" for run in s.runs)]
            for s in settings
        ],
    )
    runs = [run for s in settings for run in s.runs]
    machines = (
        f"The runs trained on more than one kind of machine ({machines_label(runs)}). {TWO_MACHINES}, so a "
        "difference between runs of two kinds carries that noise too."
        if len({run.machine for run in runs}) > 1
        else ""
    )
    header = ["setting", "seeds", *comparison.cells]
    table = markdown_table(
        header,
        [
            [s.label, seeds_label(s), *(markdown_cell(cells[k]) for cells in comparison.cells.values())]
            for k, s in enumerate(settings)
        ],
    )
    if comparison.tasks:
        columns = (
            f"The task columns ({', '.join(comparison.tasks)}) are the final scores A[T][i]; the others the metrics."
        )
    else:
        columns = "The runs cover different task lists, so only the metrics are compared."
    parts = [
        heading,
        "A setting is the set of runs whose configs are identical except for `seed` and `output_dir`.",
        members,
        machines,
        "Cells: with one seed, the run's value and, for the metrics, its 95% paired-bootstrap interval over "
        "test examples (from results.json); with several seeds, mean ± sample standard deviation (n - 1) "
        f"over the seeds. {columns}",
        table,
    ]
    return "\n\n".join(part for part in parts if part)


def frontier_section(comparison: Comparison, heading: str = "### The stability-plasticity frontier") -> str:
    """The frontier figure in words: which settings no other beats on both plasticity and stability (by their
    means), and for each of the others, the settings that beat it."""
    points = [
        (s.label, p.mean, f.mean)
        for s, p, f in zip(comparison.settings, comparison.cells["New.ACC"], comparison.cells["Forgetting"])
        if p is not None and f is not None
    ]
    if len(points) < 2:
        return ""
    xy, rows = [(x, y) for _, x, y in points], []
    for i, (label, x, y) in enumerate(points):
        better = [points[j][0] for j in figures.beaten_by(xy, i)]
        rows.append([label, f"{x:.3f}", f"{y:.3f}", "below: " + ", ".join(better) if better else "on the frontier"])
    return "\n\n".join(
        [
            heading,
            "Forgetting against New.ACC by each setting's mean. A setting is below the frontier when another is at "
            "least as plastic (New.ACC) and at least as stable (Forgetting), and better in one; the settings that "
            "so beat it are listed. Means only: whether a gap lies beyond the noise is for the error bars "
            "(figures/frontier.png) and the paired differences to say.",
            markdown_table(["setting", "New.ACC", "Forgetting", "place"], rows),
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


def routing_lines(run: Run) -> list[str]:
    routing = run.results.get("routing")
    if not routing:
        return []
    final = "n/a" if routing.get("final") is None else f"{routing['final']:.3f}"
    per_task = ", ".join(f"{task} {share:.2f}" for task, share in routing.get("per_task", {}).items())
    per_row = ", ".join("n/a" if v is None else f"{v:.2f}" for v in routing.get("rows", []))
    return [
        f"Routing accuracy (share of test instances answered by their task's own adapter): last row {final}; "
        f"per task: {per_task or 'n/a'}; per row: {per_row or 'n/a'}."
    ]


def task_metrics_lines(run: Run) -> list[str]:
    """The scorers' task-level metrics (a caption task's BLEU-4, CIDEr, ...) after the last row, when any."""
    records = run.read_jsonl("task_metrics.jsonl")
    if not records:
        return []
    last = max(r["row"] for r in records)
    final = {r["task"]: r["metrics"] for r in records if r["row"] == last}
    names = list(dict.fromkeys(name for metrics in final.values() for name in metrics))
    rows = [[task] + [f"{metrics[n]:.4f}" if n in metrics else "" for n in names] for task, metrics in final.items()]
    return [
        f"Task-level metrics of the benchmark's scorers, row {last} (task_metrics.jsonl):",
        markdown_table(["task", *names], rows),
    ]


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
    parts += task_metrics_lines(run)
    parts += routing_lines(run)
    parts += method_class(run.config["method"]["name"]).report_lines(run)
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
        differences_section(comparison, paired_differences(comparison), "### Paired differences"),
        frontier_section(comparison),
        curves_section(comparison, curve_gaps(comparison), "### Against each method's curve"),
        definitions_section(),
        "## 4. Per run",
        *(run_section(run) for run in runs),
        figures_section(figure_links),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


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


def draw_comparison(comparison: Comparison, path: Path) -> Path:
    values = {m: [None if s is None else s.mean for s in comparison.cells[m]] for m in BAR_METRICS}
    errors = {m: [None if s is None else s.error_bar() for s in comparison.cells[m]] for m in BAR_METRICS}
    title = "Avg.ACC, New.ACC and BWT per setting\n(error bars: std over seeds, or the 95% bootstrap CI of one seed)"
    return figures.settings_comparison_bars([s.label for s in comparison.settings], values, errors, title, path)


def draw_frontier(comparison: Comparison, path: Path) -> Path | None:
    """Forgetting against New.ACC, for two or more settings where both are defined."""
    point = lambda s: None if s is None else (s.mean, s.error_bar())  # noqa: E731
    plasticity = [point(s) for s in comparison.cells["New.ACC"]]
    forgetting = [point(s) for s in comparison.cells["Forgetting"]]
    if sum(p is not None and f is not None for p, f in zip(plasticity, forgetting)) < 2:
        return None
    title = "Forgetting against New.ACC per setting\n(error bars: std over seeds, or the 95% bootstrap CI of one seed)"
    labels = [s.label for s in comparison.settings]
    methods = [method_of(s) for s in comparison.settings]
    return figures.stability_plasticity(labels, plasticity, forgetting, title, path, methods)


def draw_routing(run: Run, path: Path) -> Path | None:
    """Which adapter answered each task's test instances, for a method that routes (``Method.task_adapters``)."""
    trained_in = run.results.get("routing", {}).get("task_adapters")
    records = [r for r in run.read_jsonl("predictions.jsonl") if r.get("adapter") is not None] if trained_in else []
    if not records:
        return None
    tasks, adapters, shares = figures.routing_shares(records, run.results["tasks"])
    final = run.results["routing"].get("final")
    title = run.label + ("" if final is None else f" (routing accuracy {final:.2f})")
    return figures.routing_heatmap(tasks, adapters, shares, trained_in, title, path)


def draw_figures(runs: list[Run], comparison: Comparison, directory: Path) -> dict[str, list[tuple[str, str]]]:
    """Draw every figure whose data exists; heading -> [(caption, link relative to report.md)]."""
    links = {"Comparison": [("Avg.ACC, New.ACC and BWT per setting", "figures/comparison.png")]}
    draw_comparison(comparison, directory / "comparison.png")
    if draw_frontier(comparison, directory / "frontier.png"):
        links["Comparison"].append(("Forgetting against New.ACC per setting (the stability-plasticity frontier)",
                                    "figures/frontier.png"))  # fmt: skip
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
            ("routing of test instances to adapters", draw_routing(run, directory / f"{slug}-routing.png")),
        ]
        drawn += method_class(run.config["method"]["name"]).report_figures(run, directory)
        links[run.label] = [(f"{run.label}: {caption}", f"figures/{path.name}") for caption, path in drawn if path]
    return links
