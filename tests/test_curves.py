"""Each setting against another method's curve (lcia.reporting.curves), by hand-worked cases: the gap at equal
New.ACC, its ends, its interval and seeds' t-test, and where it appears (comparison.md and .json, the report and
its figure)."""

from __future__ import annotations

import json

import pytest
from test_report import make_run

from lcia.compare import write_comparison
from lcia.reporting.curves import curve_gaps, gap_to_curve
from lcia.reporting.report import write_report
from lcia.reporting.runs import compare, group_settings, label_runs, load_run

CURVE = [(0.6, 0.1), (0.8, 0.4)]  # (New.ACC, Forgetting): Forgetting 0.25 at New.ACC 0.7


@pytest.mark.parametrize(
    "point, gap",
    [
        ((0.7, 0.10), 0.15),  # forgets 0.15 less than the curve at its plasticity: ahead
        ((0.7, 0.40), -0.15),  # 0.15 more: behind
        ((0.6, 0.10), 0.0),  # on the curve's end
        ((0.9, 0.30), 0.10),  # more plastic than the whole curve and forgets less than its end: ahead of it
        ((0.9, 0.50), None),  # more plastic, forgets more: a trade no part of the curve measures
        ((0.5, 0.20), -0.10),  # less plastic and forgets more than the curve's least plastic end: behind
        ((0.5, 0.05), None),  # less plastic, forgets less: a trade
    ],
)
def test_the_gap_is_the_curves_forgetting_at_the_settings_new_acc_minus_its_own(point, gap):
    assert gap_to_curve(CURVE, point) == (None if gap is None else pytest.approx(gap))
    beaten = [*CURVE, (0.7, 0.45)]  # a setting of the method that another of its settings beats is not on its curve
    assert gap_to_curve(beaten, point) == (None if gap is None else pytest.approx(gap))


N = 100  # test examples per task: enough that a gap of 0.15 lies beyond the noise


def two_task_run(path, method, params, seed, first, first_at_end, second):
    """A finished 2-task run with N per-example scores per cell: task 1 scores ``first`` after its stage and
    ``first_at_end`` at the end, task 2 ``second`` (New.ACC the mean of first and second, Forgetting first -
    first_at_end)."""
    matrix = [[0.0, 0.0], [first, 0.0], [first_at_end, second]]
    return make_run(path, method=method, params=params, seed=seed, matrix=matrix, tasks=["a", "b"], examples=N).path


def study(tmp_path, seeds=(0,), shift=lambda seed: 0.0):
    """The fixed EMA at two betas makes the curve above; dema is 0.15 ahead of it, lwf 0.15 behind, seq-lora
    outside (more plastic, forgets more); ``shift(seed)`` adds to dema's Forgetting (its gap falls by as much)."""
    paths = []
    for seed in seeds:
        settings = {
            "ema-b0.9": ("ema", {"beta": 0.9}, 0.8, 0.4, 0.8),  # New.ACC 0.8, Forgetting 0.4
            "ema-b0.99": ("ema", {"beta": 0.99}, 0.6, 0.5, 0.6),  # 0.6, 0.1
            "dema": ("dema", {}, 0.7, 0.6 - shift(seed), 0.7),  # 0.7, 0.1 (+ shift): 0.15 ahead
            "lwf": ("lwf", {}, 0.7, 0.3, 0.7),  # 0.7, 0.4: 0.15 behind
            "seq-lora": ("seq-lora", {}, 0.9, 0.2, 0.9),  # 0.9, 0.7
        }
        for name, (method, params, *scores) in settings.items():
            paths.append(two_task_run(tmp_path / f"{name}-seed{seed}", method, params, seed, *scores))
    return paths


def gaps_of(paths):
    return {gap.setting: gap for gap in curve_gaps(compare(group_settings(label_runs([load_run(p) for p in paths]))))}


def test_one_seed_ahead_behind_and_outside_the_fixed_emas_curve(tmp_path):
    gaps = gaps_of(study(tmp_path))
    assert set(gaps) == {"dema", "lwf", "seq-lora"}  # against the one method with two settings; not its own
    assert {gap.curve for gap in gaps.values()} == {"ema"}
    assert gaps["dema"].gap == pytest.approx(0.15) and gaps["dema"].verdict() == "ahead"
    low, high = gaps["dema"].interval
    assert 0 < low < 0.15 < high
    assert gaps["lwf"].gap == pytest.approx(-0.15) and gaps["lwf"].verdict() == "behind"
    assert gaps["seq-lora"].gap is None and gaps["seq-lora"].verdict() == "outside the curve's range"
    assert gaps["dema"].seeds == [0] and gaps["dema"].t_test_p is None


def test_over_seeds_the_gap_is_the_mean_and_a_spread_larger_than_it_is_inside_the_noise(tmp_path):
    steady = gaps_of(study(tmp_path / "steady", seeds=(0, 1, 2), shift=lambda seed: 0.01 * seed))["dema"]
    assert steady.gap == pytest.approx(0.15 - 0.01) and steady.seeds == [0, 1, 2]  # gaps 0.15, 0.14, 0.13
    assert steady.t_test_p < 0.05 and steady.verdict() == "ahead"
    spread = {0: 0.3, 1: -0.3, 2: 0.0}  # dema's Forgetting 0.1 + 0.3, 0.1 - 0.3, 0.1: gaps -0.15, 0.45, 0.15
    noisy = gaps_of(study(tmp_path / "noisy", seeds=(0, 1, 2), shift=spread.get))["dema"]
    assert noisy.gap == pytest.approx(0.15) and noisy.t_test_p > 0.05 and noisy.verdict() == "inside the noise"


def test_comparison_and_report_set_each_setting_against_the_curve(tmp_path):
    paths = study(tmp_path / "runs")
    text = write_comparison([str(p) for p in paths], tmp_path / "out", command=["lcia", "compare"]).read_text()
    section = text[text.index("## Against each method's curve") :]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["dema"].endswith("| +0.150 [" + rows["dema"].split("[")[1].split("]")[0] + "]: ahead |")
    assert rows["seq-lora"].endswith("| outside the curve's range |") and rows["ema (beta=0.9)"].endswith("| its own |")
    assert "`ema`'s: ema (beta=0.9), ema (beta=0.99)" in section
    record = json.loads((tmp_path / "out" / "comparison.json").read_text())
    verdicts = {gap["setting"]: gap["verdict"] for gap in record["curve_gaps"]}
    assert verdicts == {"dema": "ahead", "lwf": "behind", "seq-lora": "outside the curve's range"}
    report = write_report(paths, tmp_path / "report")
    assert "### Against each method's curve" in report.read_text()
    assert (tmp_path / "report" / "figures" / "frontier.png").stat().st_size > 10_000
