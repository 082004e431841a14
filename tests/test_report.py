"""lcia report on small synthetic run directories: sections, numbers, LaTeX, figures, bad input."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from lcia.config import load_config
from lcia.errors import LciaError
from lcia.evaluation.metrics import METRICS, compute_metrics
from lcia.pipeline.run_files import RunDir
from lcia.reporting.figures import frontier
from lcia.reporting.report import default_out_dir, frontier_section, write_report
from lcia.reporting.runs import compare, group_settings, load_run

TASKS = ["add", "plural", "intent"]


def matrix_ending(final: float) -> list[list[float]]:
    """A 3-task matrix whose last row scores ``final`` on every task."""
    return [[0.0, 0.0, 0.1], [0.8, 0.0, 0.1], [0.6, 0.9, 0.2], [final, final, final]]


def make_run(path, method="seq-lora", params=None, seed=0, matrix=None, tasks=TASKS, order="original", examples=0):
    """A finished run directory as the runner leaves it (config, manifest, results); a two-row matrix is a
    joint (multitask) run. ``tasks`` are in training order (``order``); with ``examples``, predictions.jsonl
    holds that many 0/1 scores per cell, the first ``round(A * examples)`` of them 1."""
    matrix = matrix or matrix_ending(0.5)
    stages = [list(tasks)] if len(matrix) == 2 else [[t] for t in tasks]
    config = load_config(None, []).model_dump(mode="json")
    config["method"] = {"name": method, "params": params or {}}
    config["seed"], config["output_dir"], config["data"]["order"] = seed, str(path), order
    metrics = compute_metrics(matrix)
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_config(config)
    run.write_json(
        "manifest.json",
        {
            "command": ["lcia", "run", "--set", f"seed={seed}", "--set", f"method.name={method}"],
            "python": "3.11.7",
            "packages": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2", "accelerate": "1.15.0"},
            "git_commit": "abc1234",
            "seed": seed,
            "hardware": {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "torch_threads": 2, "cuda": False},
            "environment": {},
            "timings": {
                "stages": [
                    {"stage": i + 1, "tasks": stage, "steps": 20, "seconds": 10.0 + i, "final_loss": 0.5}
                    for i, stage in enumerate(stages)
                ],
                "rows": [2.0] * len(matrix),
                "total_seconds": 123.4,
            },
        },
    )
    run.write_json(
        "results.json",
        {
            "tasks": tasks,
            "stages": stages,
            "matrix": matrix,
            "n_test": {t: examples or 4 for t in tasks},
            "majority_baseline": {t: 0.25 for t in tasks},
            "metrics": metrics,
            "intervals": {k: None if v is None else [v - 0.05, v + 0.05] for k, v in metrics.items()},
        },
    )
    scores = [
        {"row": row, "task": task, "id": str(i), "score": float(i < round(value * examples))}
        for row, values in enumerate(matrix)
        for task, value in zip(tasks, values)
        for i in range(examples)
    ]
    if scores:
        (run.path / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in scores))
    return run


def add_ema(run: RunDir) -> None:
    results = run.read_json("results.json")
    results["method"] = {
        "preset": "paper",
        "settings": {"form": "paper", "beta": 0.99},
        "counts": {"updates": 400, "inside": 300, "out_of_range": 100, "nonfinite": 0},
        "per_stage": [{"stage": s, "updates": 100, "inside": 75} for s in (1, 2, 3)],
    }
    run.write_json("results.json", results)
    names = [f"base_model.model.model.layers.{layer}.self_attn.{m}.default.weight" for layer in (0, 1) for m in "ab"]
    run.append(
        "ema_coefficients.jsonl",
        [
            {"stage": stage, "step": step, "coefficient": {n: 0.01 * (k + 1) * step for k, n in enumerate(names)}}
            for stage in (1, 2, 3)
            for step in (5, 10, 15, 20)
        ],
    )


def add_grouping(run: RunDir) -> None:
    groups = [
        {"adapter": "group-0", "instructions": ["Add."], "tasks": ["add"]},
        {"adapter": "group-1", "instructions": ["Plural.", "Intent."], "tasks": ["plural", "intent"]},
    ]
    results = run.read_json("results.json")
    results["method"] = {"grouping": {"similarity": "tfidf", "threshold": 0.5, "groups": groups}}
    own = {"add": "group-0", "plural": "group-1", "intent": "group-1"}
    results["routing"] = {
        "final": 0.9167, "per_task": {"add": 1.0, "plural": 0.75, "intent": 1.0}, "rows": [1.0], "task_adapters": own
    }  # fmt: skip
    run.write_json("results.json", results)
    run.write_json("codebook.json", {"similarity": "tfidf", "threshold": 0.5, "groups": groups})
    run.append(
        "predictions.jsonl",
        [
            {"row": 3, "task": t, "id": f"{t}-{i}", "prediction": "x", "references": ["x"], "score": 1.0,
             "adapter": "group-0" if (t, i) == ("plural", 0) else own[t]}
            for t in TASKS
            for i in range(4)
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two seeds of seq-lora, one dema (preset=paper) with EMA logs, one grouping run with routing."""
    root = tmp_path_factory.mktemp("runs")
    make_run(root / "seq-s0", seed=0, matrix=matrix_ending(0.5))
    seq_s1 = make_run(root / "seq-s1", seed=1, matrix=matrix_ending(0.7))
    seq_s1.append("task_metrics.jsonl", [{"row": r, "task": "add2", "metrics": {"CIDEr": 0.1 * r}} for r in range(4)])
    add_ema(make_run(root / "dema-paper", method="dema", params={"preset": "paper"}))
    add_grouping(make_run(root / "grouping", method="grouping"))
    runs = [root / name for name in ("seq-s0", "seq-s1", "dema-paper", "grouping")]
    out = root / "report"
    path = write_report(runs, out)
    return runs, out, path.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_report_opens_with_the_manifests(report):
    runs, out, text = report
    assert (out / "report.md").exists()
    headings = re.findall(r"^##? .*", text, flags=re.M)
    assert headings[:3] == [headings[0], "## 1. Runs", "## 2. Comparison"] and headings[0].startswith("# lcia report")
    assert "Paired differences" not in text  # these runs keep no predictions to pair
    manifests = text[text.index("## 1. Runs") : text.index("## 2. Comparison")]
    for run in runs:
        assert f"run dir: `{run}`" in manifests
    block = section(text, "### seq-s0")
    for expected in (
        "stream: ni-cit-small",
        "method: seq-lora",
        "seed: 0",
        "LoRA: r=8",
        "git commit: `abc1234`",
        "torch 2.13.0",
        "peft 0.21.2",
        "2 CPUs",
        "123 s in all",
        "add 10 s",
        "lcia run --set seed=0",
    ):
        assert expected in block, expected  # fmt: skip


def comparison_table(text: str) -> dict[str, dict[str, str]]:
    """The comparison table of report.md: setting label -> column -> cell."""
    lines = text[text.index("## 2. Comparison") : text.index("## 3.")].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| setting | seeds |") and "Avg.ACC" in line)
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    header, table = split(lines[start]), {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, split(line)))
        table[cells["setting"]] = cells
    return table


def test_comparison_shows_mean_and_std_over_seeds(report):
    _, _, text = report
    table = comparison_table(text)
    assert list(table) == ["seq-lora", "dema (preset=paper)", "grouping"]
    seq = table["seq-lora"]
    # final scores and Avg.ACC of the two seeds: 0.5 and 0.7 -> mean 0.6, sample std sqrt(2 * 0.1^2 / 1) = 0.1414
    assert seq["seeds"] == "2 (0, 1)"
    assert [seq[c] for c in [*TASKS, "Avg.ACC"]] == ["0.600 ± 0.141"] * 4
    dema = table["dema (preset=paper)"]
    assert dema["seeds"] == "1 (0)" and dema["Avg.ACC"] == "0.500 [0.450, 0.550]"  # one seed: value and interval


def test_metrics_in_the_report_equal_results_json(report):
    runs, _, text = report
    table = comparison_table(text)
    for run, label in ((runs[2], "dema (preset=paper)"), (runs[3], "grouping")):
        results = RunDir(run).read_json("results.json")
        per_run = section(text, f"### {run.name}: results")
        for name in METRICS:
            value = f"{results['metrics'][name]:.3f}"
            assert f"| {name} | {value} |" in per_run
            assert table[label][name].split(" ")[0] == value
    for name, (_, definition) in METRICS.items():
        assert f"| {name} | `{definition}` |" in text


def test_per_run_sections_show_routing_groups_and_ema(report):
    _, _, text = report
    grouping = section(text, "### grouping: results")
    assert "| group-1 | plural, intent | 2 |" in grouping and "last row 0.917" in grouping
    dema = section(text, "### dema-paper: results")
    assert "inside (0, 1): 75.0% of 400" in dema
    seq = section(text, "### seq-s1: results")  # a benchmark scorer's task-level metrics, after the last row
    assert "row 3 (task_metrics.jsonl)" in seq and "| add2 | 0.3000 |" in seq and "task-level" not in dema


def test_latex_holds_booktabs_tabulars(report):
    _, out, _ = report
    tex = (out / "report.tex").read_text(encoding="utf-8")
    assert tex.count(r"\begin{tabular}") == 2 == tex.count(r"\end{tabular}")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"$0.600 \pm 0.141$" in tex
    assert tex.count("{") == tex.count("}")
    rows = [line for line in tex.splitlines() if line.startswith("seq-lora &")]
    assert all(row.endswith(r"\\") for row in rows)
    assert [row.count("&") for row in rows] == [1 + len(METRICS), 1 + len(TASKS)]  # setting, n, then the columns


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    return struct.unpack(">II", data[16:24])


def test_every_expected_figure_is_a_readable_png(report):
    _, out, text = report
    expected = ["comparison.png", "frontier.png", "dema-paper-ema.png", "grouping-routing.png"]
    expected += [
        f"{run}-{kind}.png" for run in ("seq-s0", "seq-s1", "dema-paper", "grouping") for kind in ("matrix", "stages")
    ]
    for name in expected:
        path = out / "figures" / name
        width, height = png_size(path)
        assert 500 <= width <= 2500 and 300 <= height <= 2000, (name, width, height)
        assert path.stat().st_size > 10_000
        assert f"](figures/{name})" in text
    assert not (out / "figures" / "seq-s0-ema.png").exists()  # no EMA log, no figure
    assert not (out / "figures" / "seq-s0-routing.png").exists()


def test_the_frontier_keeps_the_settings_no_other_beats_on_both():
    # (New.ACC, Forgetting): higher plasticity and lower forgetting are both better
    points = [(0.7, 0.40), (0.6, 0.10), (0.65, 0.40), (0.6, 0.20), (0.7, 0.40), (0.5, 0.05)]
    assert frontier(points) == [5, 1, 0, 4]  # (0.65, 0.40) and (0.6, 0.20) are beaten; equal points both stay


def test_the_frontier_section_names_who_beats_each_setting_below_it():
    """On the committed coin-mini study: gem forgets least and seq-lora is the most plastic; lcia is beaten by gem
    and by ewc (both more plastic and more stable), ewc by gem; the joint run (no New.ACC) is left out."""
    study = Path(__file__).resolve().parents[1] / "benchmarks" / "studies" / "compare-coin-mini"
    runs = [load_run(study / f"{name}-seed0") for name in ("seq-lora", "gem", "lcia", "ewc", "multitask")]
    section = frontier_section(compare(group_settings(runs)))
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines()}
    assert "on the frontier" in rows["seq-lora"] and "on the frontier" in rows["gem"]
    assert rows["lcia"].endswith("| below: gem, ewc |")  # seq-lora is more plastic but forgets more than lcia
    assert rows["ewc"].endswith("| below: gem |") and "multitask" not in rows


def test_one_setting_draws_no_frontier(tmp_path):
    path = write_report([make_run(tmp_path / "only").path], tmp_path / "out")
    assert not (tmp_path / "out" / "figures" / "frontier.png").exists()
    assert "frontier" not in path.read_text(encoding="utf-8")


def test_runs_with_different_tasks_compare_metrics_only(tmp_path):
    make_run(tmp_path / "a")
    make_run(tmp_path / "b", method="multitask", tasks=["x", "y"], matrix=[[0.0, 0.1], [0.6, 0.8]])
    text = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out").read_text(encoding="utf-8")
    assert "different task lists" in text
    table = comparison_table(text)
    assert set(table["seq-lora"]) == {"setting", "seeds", *METRICS}
    assert table["multitask"]["Avg.ACC"] == "0.700 [0.650, 0.750]" and table["multitask"]["BWT"] == "n/a"
    assert png_size(tmp_path / "out" / "figures" / "b-matrix.png")


def test_not_a_finished_run_is_an_lcia_error_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (empty, tmp_path / "missing"):
        with pytest.raises(LciaError) as err:
            write_report([path], tmp_path / "out")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    running = make_run(tmp_path / "running")
    results = running.read_json("results.json")
    del results["metrics"]
    results["matrix"] = results["matrix"][:2]
    running.write_json("results.json", results)
    with pytest.raises(LciaError, match="not a finished run: results.json has 2 of 4 rows"):
        write_report([running.path], tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()


def test_default_out_dir(tmp_path):
    assert default_out_dir([tmp_path / "run"]) == tmp_path / "run"
    assert default_out_dir(["a", "b"]) == Path("report")
