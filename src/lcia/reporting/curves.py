"""Each setting against another method's curve: is the dynamic EMA ahead of what the fixed EMA can reach?

A method compared in two or more settings (the fixed EMA over beta, ``ewc`` over lambda, the dynamic EMA over its
multiplier and presets) traces a curve of Forgetting against New.ACC: those of its settings that none of the others
beats on both (its own frontier, ``figures.frontier``), joined by straight lines. Set against that curve, a
setting of another method is

* **ahead** when it forgets less than the curve at its own New.ACC: the gap, the curve's Forgetting there minus
  the setting's, is above 0 and beyond the noise;
* **behind** when it forgets more (the gap below 0, beyond the noise);
* **outside the curve's range** when it is more plastic than every setting of the curve and forgets more than the
  most plastic one, or less plastic than every one and forgets less than the least plastic: a trade of
  plasticity for stability that no part of the curve measures. Beyond the range the gap is taken against the
  curve's end, where the setting beats that end on both (ahead) or the end beats it (behind).

The noise, as for paired differences (``lcia.reporting.differences``): each of 1000 resamples draws one set of test
examples and scores every run of a seed (and task order) on it, rebuilds the curve and takes the gap; its 2.5% and
97.5% percentiles are the interval. A resample in which the setting falls outside the curve's range counts as a gap
of 0, so a setting near the range's end does not pass for ahead. With two or more seeds (or orders) the gap is the
mean over them, and the one-sample t-test of their gaps (scipy) must give p below 0.05 as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lcia.evaluation.metrics import resampled_metrics
from lcia.pipeline.run_files import RunDir
from lcia.reporting import figures
from lcia.reporting.runs import Comparison, Run, Setting, replicate, replicates_name
from lcia.reporting.tables import markdown_table

AXES = ("New.ACC", "Forgetting")
RESAMPLES = 1000


@dataclass
class CurveGap:
    setting: str
    curve: str  # the method whose settings make the curve
    seeds: list[int]  # the seeds the setting and every setting of the curve ran, one per replicate
    orders: list[str]  # each replicate's task order
    gap: float | None  # mean over the seeds of the curve's Forgetting minus the setting's; None: outside the range
    interval: tuple[float, float] | None
    t_test_p: float | None  # over the seeds' gaps; None under two seeds

    def verdict(self) -> str:
        if self.gap is None:
            return "outside the curve's range"
        low, high = self.interval
        if (low > 0 or high < 0) and (self.t_test_p is None or self.t_test_p < 0.05):
            return "ahead" if self.gap > 0 else "behind"
        return "inside the noise"


def method_of(setting: Setting) -> str:
    return setting.runs[0].config["method"]["name"]


def gap_to_curve(curve: list[tuple[float, float]], point: tuple[float, float]) -> float | None:
    """The curve's Forgetting at the point's New.ACC minus the point's (> 0: ahead), None outside its range.

    ``curve`` and ``point`` are (New.ACC, Forgetting); the curve is the frontier of its points, joined by lines."""
    front = [curve[i] for i in figures.frontier(curve)]
    xs, ys = [x for x, _ in front], [y for _, y in front]
    x, y = point
    if xs[0] <= x <= xs[-1]:
        return float(np.interp(x, xs, ys)) - y
    if x > xs[-1]:  # more plastic than the whole curve: ahead only if it forgets no more than the curve's end
        return ys[-1] - y if y <= ys[-1] else None
    return ys[0] - y if y >= ys[0] else None  # less plastic than the whole curve: behind only if it forgets more


def curves(comparison: Comparison) -> dict[str, list[Setting]]:
    """Method name -> its settings, for each method compared in two or more settings with both axes defined."""
    by_method: dict[str, list[Setting]] = {}
    for setting, x, y in zip(comparison.settings, comparison.cells["New.ACC"], comparison.cells["Forgetting"]):
        if x is not None and y is not None:
            by_method.setdefault(method_of(setting), []).append(setting)
    return {method: members for method, members in by_method.items() if len(members) >= 2}


def curve_gaps(comparison: Comparison, resamples: int = RESAMPLES) -> list[CurveGap]:
    """Every setting with both axes defined against the curve of every other method that has one; none when the
    runs do not share their test sets."""
    sizes = {json.dumps(run.results.get("n_test"), sort_keys=True) for s in comparison.settings for run in s.runs}
    if comparison.tasks is None or len(sizes) != 1:
        return []
    defined = [s for i, s in enumerate(comparison.settings) if all(comparison.cells[a][i] is not None for a in AXES)]
    draws: dict = {}  # run path -> its resampled axes, drawn once however many curves it is set against
    gaps = [
        _gap(setting, method, members, resamples, draws)
        for method, members in curves(comparison).items()
        for setting in defined
        if method_of(setting) != method
    ]
    return [gap for gap in gaps if gap is not None]


def _gap(setting: Setting, method: str, members: list[Setting], resamples: int, draws: dict) -> CurveGap | None:
    """``setting`` against the curve of ``members``, replicate by replicate (seed and task order); None without a
    shared replicate or predictions."""
    by_replicate = [{replicate(run): run for run in s.runs} for s in [setting, *members]]
    shared = sorted(set.intersection(*(set(runs) for runs in by_replicate)))
    if not shared or not all(RunDir(runs[r].path).has("predictions.jsonl") for runs in by_replicate for r in shared):
        return None
    points, resampled = [], []
    for r in shared:
        ours, *theirs = (runs[r] for runs in by_replicate)
        points.append(gap_to_curve([_axes(run) for run in theirs], _axes(ours)))
        ours_drawn, *theirs_drawn = (_drawn(run, resamples, draws) for run in [ours, *theirs])
        resampled.append(
            [_zero_outside(gap_to_curve([d[k] for d in theirs_drawn], ours_drawn[k])) for k in range(resamples)]
        )
    seeds, orders = map(list, zip(*shared))
    if any(point is None for point in points):
        return CurveGap(setting.label, method, seeds, orders, None, None, None)
    low, high = np.quantile(np.mean(resampled, axis=0), [0.025, 0.975])
    varied = len(points) > 1 and np.ptp(points) > 1e-12  # equal gaps over the seeds leave the t-test undefined
    t_test_p = float(stats.ttest_1samp(points, 0.0).pvalue) if varied else None
    return CurveGap(setting.label, method, seeds, orders, float(np.mean(points)), (float(low), float(high)), t_test_p)


def _axes(run: Run) -> tuple[float, float]:
    return run.results["metrics"]["New.ACC"], run.results["metrics"]["Forgetting"]


def _drawn(run: Run, resamples: int, draws: dict) -> list[tuple[float, float]]:
    if run.path not in draws:
        metrics = resampled_metrics(run.example_scores(), AXES, resamples)
        draws[run.path] = list(zip(metrics["New.ACC"].tolist(), metrics["Forgetting"].tolist()))
    return draws[run.path]


def _zero_outside(gap: float | None) -> float:
    return 0.0 if gap is None else gap


def _cell(gap: CurveGap | None) -> str:
    if gap is None:
        return ""
    if gap.gap is None:
        return gap.verdict()
    low, high = gap.interval
    over = replicates_name(list(zip(gap.seeds, gap.orders)))
    seeds_p = "" if gap.t_test_p is None else f"; {over} p {gap.t_test_p:.3f}"
    return f"{gap.gap:+.3f} [{low:+.3f}, {high:+.3f}]{seeds_p}: {gap.verdict()}"


def curves_section(comparison: Comparison, gaps: list[CurveGap], heading: str) -> str:
    """One row per setting, one column per method's curve ('' when no method has one)."""
    if not gaps:
        return ""
    methods = list(dict.fromkeys(gap.curve for gap in gaps))
    by_pair = {(gap.setting, gap.curve): gap for gap in gaps}
    members = curves(comparison)
    rows = [
        [setting.label, *(_cell(by_pair.get((setting.label, m))) or ("its own" if setting in members[m] else "")
                          for m in methods)]
        for setting in comparison.settings
        if any((setting.label, m) in by_pair or setting in members[m] for m in methods)
    ]  # fmt: skip
    made_of = "; ".join(f"`{m}`'s: {', '.join(s.label for s in members[m])}" for m in methods)
    return "\n\n".join(
        [
            heading,
            "A method compared in several settings traces a curve of Forgetting against New.ACC (its settings that "
            "none of the others beats on both, joined by lines; figures/frontier.png draws it). Each cell: the "
            "curve's Forgetting at the setting's New.ACC minus the setting's, so above 0 the setting forgets less "
            "than the method can at the same plasticity (*ahead*), below 0 more (*behind*); the mean over the "
            "seeds the setting shares with the curve, its 95% paired-bootstrap interval over test examples and, "
            "with two or more seeds, the t-test's p over the seeds. *Outside the curve's range*: more plastic than "
            f"all of the curve and forgetting more, or the reverse. The curves: {made_of}.",
            markdown_table(["setting", *(f"against `{m}`'s curve" for m in methods)], rows),
        ]
    )
