"""A markdown table of finished runs side by side: final score per task and the metrics with 95% intervals.

    python benchmarks/runs_table.py runs/ema-cmp/seq-lora runs/ema-cmp/ema runs/ema-cmp/dema-official

Reads each run's results.json (as ``lcia metrics`` does) and, for EMA methods, the share of dynamic
coefficients that fell inside (0, 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lcia.run_dir import RunDir

METRICS = ("Avg.ACC", "New.ACC", "BWT", "Forgetting", "FWT")


def row(run: Path) -> tuple[str, list[str], dict]:
    results = RunDir(run).read_json("results.json")
    metrics, intervals = results["metrics"], results.get("intervals", {})
    cells = []
    for name in METRICS:
        value, interval = metrics.get(name), intervals.get(name)
        text = "–" if value is None else f"{value:.3f}"
        if interval and value is not None:
            text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
        cells.append(text)
    counts = results.get("method", {}).get("counts", {})
    inside = f"{counts['inside'] / counts['updates']:.0%}" if counts.get("updates") else "–"
    return run.name, cells + [inside], results


def main(runs: list[str]) -> None:
    rows = [row(Path(r)) for r in runs]
    tasks = rows[0][2]["tasks"]
    print("| run | " + " | ".join(METRICS) + " | coefficient inside (0, 1) |")
    print("|---" * (len(METRICS) + 2) + "|")
    for name, cells, _ in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| run | " + " | ".join(f"{t} (own / final)" for t in tasks) + " |")
    print("|---" * (len(tasks) + 1) + "|")
    for name, _, results in rows:
        matrix = results["matrix"]
        last = len(matrix) - 1
        own = [matrix[i + 1][i] if len(matrix) > len(tasks) else None for i in range(len(tasks))]
        print(
            f"| {name} | "
            + " | ".join(("" if o is None else f"{o:.2f} / ") + f"{matrix[last][i]:.2f}" for i, o in enumerate(own))
            + " |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
