"""Terminal and markdown tables of a run's matrix and metrics."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from lcia.evaluation.metrics import METRICS


def row_labels(results: dict) -> list[str]:
    return ["before training"] + [f"after {'+'.join(stage)}" for stage in results["stages"]][
        : len(results["matrix"]) - 1
    ]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def matrix_table(results: dict) -> Table:
    table = Table(title=escape("Accuracy matrix A[row][task]: test score of each task after each stage"))
    table.add_column("row")
    for name in results["tasks"]:
        table.add_column(name, justify="right")
    for label, row in zip(row_labels(results), results["matrix"]):
        table.add_row(label, *(_fmt(v) for v in row))
    table.add_row("majority baseline", *(_fmt(results["majority_baseline"][t]) for t in results["tasks"]), style="dim")
    return table


def metrics_table(metrics: dict, intervals: dict | None = None) -> Table:
    table = Table(title=escape("Metrics (A[0] = before training; T tasks, 1-based)"))
    for column in ("metric", "value", "95% CI (bootstrap over test examples)", "definition"):
        table.add_column(column)
    for name, (_, definition) in METRICS.items():
        interval = (intervals or {}).get(name)
        ci = "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
        table.add_row(name, _fmt(metrics.get(name)), escape(ci), escape(definition))
    return table


def markdown_matrix(results: dict) -> str:
    lines = ["| row | " + " | ".join(results["tasks"]) + " |", "|---" * (len(results["tasks"]) + 1) + "|"]
    for label, row in zip(row_labels(results), results["matrix"]):
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def markdown_metrics(metrics: dict, intervals: dict | None = None) -> str:
    lines = ["| metric | value | 95% CI | definition |", "|---|---|---|---|"]
    for name, (_, definition) in METRICS.items():
        interval = (intervals or {}).get(name)
        ci = "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
        lines.append(f"| {name} | {_fmt(metrics.get(name))} | {ci} | `{definition}` |")
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def latex_tabular(header: list[str], rows: list[list[str]], align: str) -> str:
    """A booktabs tabular (needs ``\\usepackage{booktabs}``); cells are LaTeX already, escape text first."""
    lines = [f"\\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)
