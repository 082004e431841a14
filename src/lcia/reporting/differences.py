"""Paired differences between settings: is one method's lead over another beyond the noise?

Every setting of a comparison is set against the first (``lcia compare``: the first method listed), run by run
with the same seed (and task order, where a study pools orders), on the same test examples. For each metric:

* the mean difference over the paired runs, with its 95% paired-bootstrap interval over test examples and the
  bootstrap p-value (``lcia.evaluation.metrics.bootstrap_differences``): the noise of which examples make up
  the test sets, which two runs' separate intervals overstate, since both runs see the same examples;
* with two or more pairs, a paired t-test over the pairs' values (scipy): the noise of training (and of the
  order, where orders are pooled).

A difference is *beyond the noise* when its interval excludes 0 and, with several pairs, the t-test's p is
below 0.05; otherwise it is *inside the noise*, and no claim should rest on it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from scipy import stats

from lcia.evaluation.metrics import bootstrap_differences
from lcia.pipeline.run_files import RunDir
from lcia.reporting.runs import TWO_MACHINES, Comparison, Setting, replicate, replicate_label, replicates_name
from lcia.reporting.tables import markdown_table

SHOWN = ("Avg.ACC", "New.ACC", "Forgetting")  # the headline, plasticity and stability
RESAMPLES = 1000


@dataclass
class Difference:
    setting: str
    seeds: list[int]  # the seeds both settings ran, one per pair
    orders: list[str]  # each pair's task order
    metrics: dict[str, dict | None]  # name -> difference, interval, p, t_test_p (None: undefined)
    machines: list[str]  # each pair's kind of machine: "CPU", or "CPU against NVIDIA H200" across two kinds

    def beyond_noise(self, name: str) -> bool | None:
        record = self.metrics.get(name)
        if record is None:
            return None
        low, high = record["interval"]
        seeds_agree = record["t_test_p"] is None or record["t_test_p"] < 0.05
        return (low > 0 or high < 0) and seeds_agree


def _t_test(values: list[float], reference: list[float]) -> float | None:
    """The paired t-test's two-sided p over the seeds; None under two seeds or when every difference is equal."""
    if len(values) < 2:
        return None
    p = stats.ttest_rel(values, reference).pvalue
    return None if math.isnan(p) else float(p)


def paired_differences(comparison: Comparison, resamples: int = RESAMPLES) -> list[Difference]:
    """Each setting after the first against the first, paired by seed; a setting is left out when it shares no seed
    with the first or a run lacks its predictions, and every one when the runs do not share their test sets (other
    tasks or test sizes)."""
    if comparison.tasks is None or len(comparison.settings) < 2:
        return []
    reference, *others = comparison.settings
    sizes = {json.dumps(run.results.get("n_test"), sort_keys=True) for s in comparison.settings for run in s.runs}
    if len(sizes) != 1:
        return []
    return [d for d in (_difference(setting, reference, resamples) for setting in others) if d is not None]


def _difference(setting: Setting, reference: Setting, resamples: int) -> Difference | None:
    theirs = {replicate(run): run for run in reference.runs}
    pairs = [(run, theirs[replicate(run)]) for run in setting.runs if replicate(run) in theirs]
    if not pairs or not all(RunDir(run.path).has("predictions.jsonl") for pair in pairs for run in pair):
        return None  # nothing to pair, or a run without its per-example scores
    if any(len(a.results["matrix"]) != len(b.results["matrix"]) for a, b in pairs):
        return None  # a joint run (two rows) has no stages to set against a sequential one's
    grids = [(a.example_scores(), b.example_scores()) for a, b in pairs]
    bootstrap = bootstrap_differences(grids, n_resamples=resamples)
    metrics = {}
    for name, record in bootstrap.items():
        if record is not None:
            ours = [a.results["metrics"][name] for a, _ in pairs]
            theirs = [b.results["metrics"][name] for _, b in pairs]
            record = record | {"t_test_p": _t_test(ours, theirs)}
        metrics[name] = record
    seeds, orders = map(list, zip(*(replicate(a) for a, _ in pairs)))
    machines = [a.machine if a.machine == b.machine else f"{a.machine} against {b.machine}" for a, b in pairs]
    return Difference(setting.label, seeds, orders, metrics, machines)


def _cell(record: dict | None, over: str) -> str:
    if record is None:
        return "n/a"
    low, high = record["interval"]
    p = f"p {record['p']:.3f}" if record["p"] > 0 else f"p < {1 / RESAMPLES:g}"  # no resample crossed 0
    text = f"{record['difference']:+.3f} [{low:+.3f}, {high:+.3f}], {p}"
    return text + (f"; {over} p {record['t_test_p']:.3f}" if record["t_test_p"] is not None else "")


def differences_section(comparison: Comparison, differences: list[Difference], heading: str) -> str:
    """The table of paired differences against the first setting ('' when there is none)."""
    if not differences:
        return ""
    reference = comparison.settings[0].label
    verdict = {True: "beyond the noise", False: "inside the noise", None: "n/a"}
    rows = []
    for d in differences:
        replicates = list(zip(d.seeds, d.orders))
        paired = f"{len(replicates)} ({', '.join(replicate_label(*r) for r in replicates)})"
        over = replicates_name(replicates)
        rows.append(
            [d.setting, paired, *(_cell(d.metrics.get(n), over) for n in SHOWN), verdict[d.beyond_noise("Avg.ACC")]]
        )
    pooled = any(replicates_name([replicate(run) for run in s.runs]) != "seeds" for s in comparison.settings)
    return "\n\n".join(
        part
        for part in [
            heading,
            f"Each setting minus `{reference}`, run against run with the same seed, on the same test examples: the "
            "mean difference over the seeds, its 95% paired-bootstrap interval over test examples and the bootstrap "
            "p-value; with two or more seeds also the paired t-test's p over the seeds. A difference is beyond the "
            "noise when its interval excludes 0 and, with several seeds, the t-test's p is below 0.05."
            + (
                " Task orders count as seeds here: a run pairs with the run of the same seed and order, and the "
                't-test runs over the pairs ("orders p", or "orders and seeds p").'
                if pooled
                else ""
            ),
            markdown_table(["setting", "seeds", *SHOWN, "Avg.ACC difference"], rows),
            _across_machines(differences),
        ]
        if part
    )


def _across_machines(differences: list[Difference]) -> str:
    """A warning naming the differences whose pairs trained on two kinds of machine ('' when none did)."""
    crossed = [(d, [m for m in d.machines if " against " in m]) for d in differences]
    named = [f"{d.setting} ({len(c)} of {len(d.machines)}: {', '.join(sorted(set(c)))})" for d, c in crossed if c]
    if not named:
        return ""
    return (
        f"Pairs across two kinds of machine: {'; '.join(named)}. {TWO_MACHINES}, and the interval over test "
        "examples does not measure that: read these differences as carrying the machine's noise too."
    )
