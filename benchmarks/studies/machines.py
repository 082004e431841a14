"""One config on two kinds of machine: the committed runs whose configs are the same but for their directory and
which trained on two kinds (docs/evidence.md, "One config, two machines").

    python benchmarks/studies/machines.py      # writes benchmarks/studies/machines.md

For each pair: the setting and seed, each kind's Avg.ACC, New.ACC and Forgetting, the difference (the second kind
minus the first, by name) with its 95% paired-bootstrap interval over test examples (beyond it, the machine made
another run, not another draw of test examples), and the share of identical predictions, of the untrained model
(row 0) and over every row. Over all pairs: the mean difference and a one-sample t-test, which say whether the
machine moves scores one way or only adds noise. A copied run (``--reuse``) is its source, counted once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from scipy import stats

from lcia.core.runtime import offline_and_quiet
from lcia.evaluation.metrics import bootstrap_differences
from lcia.reporting.runs import Run, load_run, method_label
from lcia.reporting.tables import markdown_table
from lcia.sweep import finished

STUDIES = Path(__file__).resolve().parent
SHOWN = ("Avg.ACC", "New.ACC", "Forgetting")


def pairs_across_machines() -> list[tuple[Run, Run]]:
    """Each config trained on two kinds of machine, as (first kind's run, second kind's), by the kinds' names."""
    by_config = defaultdict(dict)
    for manifest in sorted(STUDIES.glob("*/*/manifest.json")):
        if finished(manifest.parent) and "copied_from" not in json.loads(manifest.read_text()):
            run = load_run(manifest.parent)
            key = json.dumps(run.config | {"output_dir": None}, sort_keys=True)
            by_config[key].setdefault(run.machine, run)
    pairs = [tuple(runs[kind] for kind in sorted(runs))[:2] for runs in by_config.values() if len(runs) > 1]
    return sorted(pairs, key=lambda pair: (pair[0].config["seed"], method_label(pair[0].config)))


def answers(run: Run, row: int | None) -> dict[tuple, str]:
    """(row, task, n-th test example of the cell) -> the run's prediction, of ``row`` or of every row."""
    seen, out = defaultdict(int), {}
    for record in run.read_jsonl("predictions.jsonl"):
        cell = record["row"], record["task"]
        seen[cell] += 1
        if row is None or cell[0] == row:
            out[(*cell, seen[cell])] = record["prediction"]
    return out


def same_predictions(a: Run, b: Run, row: int | None = None) -> float:
    """The share of test prompts both runs answered alike (of ``row``, or of all rows)."""
    ours, theirs = answers(a, row), answers(b, row)
    return sum(ours[key] == theirs.get(key) for key in ours) / len(ours)


def table(pairs: list[tuple[Run, Run]]) -> str:
    rows, differences, by_setting = [], defaultdict(list), defaultdict(list)
    for first, second in pairs:
        paired = bootstrap_differences([(second.example_scores(), first.example_scores())])
        cells = []
        for name in SHOWN:
            low, high = paired[name]["interval"]
            values = first.results["metrics"][name], second.results["metrics"][name]
            cells.append(
                f"{values[0]:.3f} / {values[1]:.3f}: {paired[name]['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
            )
            differences[name].append(paired[name]["difference"])
        label = method_label(first.config)
        by_setting[label].append(paired["Avg.ACC"]["difference"])
        same = f"{same_predictions(first, second, row=0):.3f} / {same_predictions(first, second):.3f}"
        rows.append([label, str(first.config["seed"]), *cells, same])
    kinds = f"{pairs[0][0].machine} / {pairs[0][1].machine}"
    summary = [
        f"- {name}: mean difference {sum(d) / len(d):+.3f} over {len(d)} pairs"
        + (f", t-test p {stats.ttest_1samp(d, 0).pvalue:.3f}" if len(d) > 1 else "")
        for name, d in differences.items()
    ]
    summary.append(
        "- Avg.ACC by setting, mean difference over its pairs: "
        + ", ".join(f"{label} {sum(d) / len(d):+.3f} ({len(d)})" for label, d in sorted(by_setting.items()))
    )
    header = ["setting", "seed", *(f"{name} ({kinds}: difference)" for name in SHOWN), "same predictions (row 0 / all)"]
    return markdown_table(header, rows) + "\n\n" + "\n".join(summary)


def main() -> None:
    offline_and_quiet()
    pairs = pairs_across_machines()
    text = "# One config, two kinds of machine\n\nWritten by `python benchmarks/studies/machines.py`.\n\n"
    text += table(pairs) if pairs else "No config has finished runs on two kinds of machine yet."
    (STUDIES / "machines.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
