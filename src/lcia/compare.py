"""``lcia compare``: several methods on the same stream, seeds and budget, then one comparison table.

Every (method, seed) is a complete run in its own directory ``OUT/<method>-seed<seed>/``, made from one
config with only ``method`` and ``seed`` changed: the same stream and splits, model, LoRA, steps per task,
batch, learning rate and evaluation, so the methods differ in nothing else. With ``--orders`` every method also
trains the stream in each task order (``OUT/<method>-<order>-seed<seed>/``, the stream's own order without the
suffix), and the orders count as replicates beside the seeds: the mean and spread run over them, and two methods'
runs pair by seed and order. A method is ``name`` or
``name:key=value,...`` with its parameters (values read as YAML, ``1e5`` as a number), e.g. ``ewc:lam=1e5`` or
``dema:preset=scaled``. As in ``lcia sweep``, a finished run is kept and a stopped one resumed.

At the end, in OUT:
    comparison.md    one line per method: the final score of each task A[T][i] and every metric, mean ±
                     sample standard deviation over the seeds (one seed: its value and 95% bootstrap
                     interval), the training and evaluation time, and the metric definitions
    comparison.json  the same numbers, with every seed's value
    (both)           each method against the first listed, paired by seed on the same test examples: the
                     difference of each metric with its paired-bootstrap interval, and a t-test over seeds
                     (lcia.reporting.differences)
    report.md        the full report of all the runs (``lcia report``), with report.tex and figures/
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shlex
import statistics
import sys
from pathlib import Path

from pydantic import ValidationError

from lcia.config import RunConfig, parse_value
from lcia.errors import LciaError
from lcia.reporting.curves import curve_gaps, curves_section
from lcia.reporting.differences import differences_section, paired_differences
from lcia.reporting.report import comparison_section, definitions_section, frontier_section, write_report
from lcia.reporting.runs import (
    ORDERS,
    Comparison,
    compare,
    group_settings,
    label_runs,
    load_run,
    replicate,
    replicates_name,
)
from lcia.sweep import run_or_resume
from lcia.yamlfile import validation_error


def split_methods(text: str) -> list[str]:
    """``"seq-lora,ewc:lam=1e5,gamma=0.9,lwf"`` -> ``["seq-lora", "ewc:lam=1e5,gamma=0.9", "lwf"]``.

    A piece with ``=`` and no ``:`` is one more parameter of the method before it (names never hold ``=``).
    """
    methods: list[str] = []
    for piece in (p.strip() for p in text.split(",") if p.strip()):
        if "=" in piece and ":" not in piece:
            if not methods or ":" not in methods[-1]:
                raise LciaError(f"--methods {text!r}: {piece!r} is a parameter with no method before it")
            methods[-1] += "," + piece
        else:
            methods.append(piece)
    if not methods:
        raise LciaError("--methods names no method")
    return methods


def parse_method(spec: str) -> tuple[str, dict]:
    """``"ewc:lam=1e5,gamma=0.9"`` -> ``("ewc", {"lam": 100000.0, "gamma": 0.9})``."""
    name, _, params = spec.partition(":")
    pairs = [p for p in params.split(",") if p]
    if any("=" not in p for p in pairs):
        raise LciaError(f"method {spec!r}: parameters are key=value pairs, e.g. ewc:lam=1e5,gamma=0.9")
    return name.strip(), {k.strip(): parse_value(v) for k, v in (p.split("=", 1) for p in pairs)}


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in spec.replace(":", "-").replace("=", "")).strip("-")


def compare_configs(
    base: RunConfig, methods: list[str], seeds: list[int], out: Path, orders: list[str] | None = None
) -> list[RunConfig]:
    """One validated config per (method, seed) and, with ``orders``, task order; a bad method or parameter fails
    here, before any run."""
    if len(set(methods)) != len(methods):
        raise LciaError(f"--methods names a method twice: {','.join(methods)}")
    configs = []
    # seed by seed, then order by order: a stopped study has whole seeds (and orders) done
    for seed, order, spec in itertools.product(seeds, orders or [base.data.order], methods):
        name, params = parse_method(spec)
        cfg = base.model_dump(mode="json")
        cfg["method"], cfg["seed"], cfg["data"]["order"] = {"name": name, "params": params}, seed, order
        suffix = f"-{order}" if orders and order != ORDERS[0] else ""
        cfg["output_dir"] = str(out / f"{_slug(spec)}{suffix}-seed{seed}")
        try:
            configs.append(RunConfig.model_validate(cfg))
        except ValidationError as err:
            raise LciaError(f"--methods {spec}: {validation_error(err, None)}") from None
    return configs


def _seconds(runs, key: str) -> float:
    timings = [run.manifest.get("timings", {}) for run in runs]
    if key == "train":
        return statistics.fmean(sum(s.get("seconds", 0) for s in t.get("stages", [])) for t in timings)
    return statistics.fmean(sum(t.get("rows", [])) for t in timings)


def comparison_record(comparison: Comparison) -> dict:
    """comparison.json: per setting, every column's mean, spread and per-seed values, and the run times."""
    settings = []
    for k, setting in enumerate(comparison.settings):
        cells = {}
        for column, summaries in comparison.cells.items():
            summary = summaries[k]
            cells[column] = (
                None
                if summary is None
                else {
                    "mean": summary.mean,
                    "std": summary.std if len(summary.values) > 1 else None,
                    "values": summary.values,
                    "interval": summary.interval,
                }
            )
        settings.append(
            {
                "method": setting.label,
                "seeds": [run.config["seed"] for run in setting.runs],
                "orders": [run.config["data"]["order"] for run in setting.runs],
                "runs": [str(run.path) for run in setting.runs],
                "train_seconds": _seconds(setting.runs, "train"),
                "eval_seconds": _seconds(setting.runs, "eval"),
                "cells": cells,
            }
        )
    return {"tasks": comparison.tasks, "settings": settings}


def write_comparison(run_dirs: list[str], out: Path, command: list[str] | None = None) -> Path:
    """comparison.md and comparison.json over finished runs; returns comparison.md's path.

    ``command`` (default: this process's) is recorded; a kept run's manifest names the command that ran it.
    """
    runs = label_runs([load_run(Path(path)) for path in run_dirs])
    comparison = compare(group_settings(runs, pool_orders=True))
    differences, gaps = paired_differences(comparison), curve_gaps(comparison)
    config = runs[0].config
    training = config["training"]
    over = replicates_name([replicate(run) for run in runs])
    varied = "method and seed" if over == "seeds" else "method, seed and task order"
    times = "\n".join(
        f"- {s.label}: training {_seconds(s.runs, 'train'):.0f} s, evaluation {_seconds(s.runs, 'eval'):.0f} s "
        "(mean per run)"
        for s in comparison.settings
    )
    parts = [
        "# Comparison of methods",
        f"Command: `{shlex.join(command or sys.argv)}`",
        f"Stream {config['stream']}, model {config['model']['name_or_path']}, LoRA r={config['lora']['r']}, "
        f"{training['steps']} steps per task, batch {training['batch_size']} x {training['grad_accum']}, "
        f"lr {training['lr']}; every run differs from the others only in its {varied}.",
        comparison_section(comparison, heading="## Results"),
        differences_section(comparison, differences, "## Paired differences"),
        frontier_section(comparison, "## The stability-plasticity frontier"),
        curves_section(comparison, gaps, "## Against each method's curve"),
        "## Time\n\n" + times,
        definitions_section().replace("## 3. Metric definitions", "## Metric definitions"),
        "The full report of every run: report.md.",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text("\n\n".join(part for part in parts if part) + "\n", encoding="utf-8")
    record = comparison_record(comparison) | {
        "differences": [dataclasses.asdict(d) for d in differences],
        "curve_gaps": [dataclasses.asdict(gap) | {"verdict": gap.verdict()} for gap in gaps],
    }
    (out / "comparison.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out / "comparison.md"


def run_compare(
    base: RunConfig,
    methods: list[str],
    seeds: list[int],
    out: Path,
    progress: bool,
    log=print,
    orders: list[str] | None = None,
    reuse: Path | None = None,
) -> Path:
    """Run (or finish) every (method, seed, order), then write the comparison and the report; returns
    comparison.md. ``reuse``: a folder whose finished runs of the same config are copied, not run again."""
    configs = compare_configs(base, methods, seeds, out, orders)
    run_or_resume(configs, progress, log, reuse)
    dirs = [cfg.run_dir() for cfg in configs]
    write_report(dirs, out)
    return write_comparison(dirs, out)
