"""``lcia sweep``: one config over seeds, task orders and instruction variants, then one report.

The paper's robustness settings: the same method trained on the stream in several task orders
(original, reverse, alphabetical) and with several instruction variants (e.g. ``ni-cit`` and its
paraphrased ``ni-cit-diverse``), each over several seeds. Every combination is a complete run in its
own directory under the sweep's folder; a finished run is kept and a stopped one resumed, so a sweep
that was interrupted continues where it stopped. The report groups runs that differ only in seed.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import yaml

from lcia.config import RunConfig
from lcia.core.files import read_json, write_json
from lcia.core.precision import resolve_precision
from lcia.errors import input_error
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.stream_run import run
from lcia.reporting.manifest import hardware, machine_kind
from lcia.reporting.report import write_report


def sweep_configs(
    base: RunConfig, seeds: list[int], orders: list[str], streams: list[str], out: Path
) -> list[RunConfig]:
    configs = []
    for stream, order, seed in itertools.product(streams, orders, seeds):
        name = stream.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        cfg = base.model_copy(deep=True)
        cfg.stream, cfg.seed, cfg.data.order = stream, seed, order
        cfg.output_dir = str(out / f"{name}-{order}-seed{seed}")
        configs.append(RunConfig.model_validate(cfg.model_dump()))  # validated again: the order must be known
    return configs


def finished(path: Path) -> bool:
    """Whether the run in ``path`` ran to the end (its results hold the metrics)."""
    results = path / "results.json"
    return results.exists() and "metrics" in RunDir(path).read_json("results.json")


def _saved_config(path: Path) -> dict:
    """A run's config as this version reads it: a field added since (with its default) is no difference, so a
    study continues on a newer lcia, on this machine or another."""
    return RunConfig.model_validate(yaml.safe_load((path / "config.yaml").read_text())).model_dump(mode="json")


def run_or_resume(configs: list[RunConfig], progress: bool, log=print, reuse: Path | None = None) -> None:
    """Run every config to the end: a finished run is kept, a stopped one resumed, another config's refused.
    With ``reuse``, a run not started yet is first copied from an identical one under that folder."""
    for i, cfg in enumerate(configs, start=1):
        path = Path(cfg.run_dir())
        if reuse and not (path / "config.yaml").exists() and (source := identical_run(cfg, reuse)):
            copy_run(source, cfg)
            log(f"[{i}/{len(configs)}] {path}: copied from {source}")
        if (path / "config.yaml").exists() and _saved_config(path) != cfg.model_dump(mode="json"):
            raise input_error("holds a run with another config: choose another --out", file=path)
        if finished(path):
            log(f"[{i}/{len(configs)}] {path}: finished, kept")
        else:
            resume = (path / "manifest.json").exists()
            log(f"[{i}/{len(configs)}] {path}: " + ("resuming" if resume else "running"))
            run(cfg, resume=resume, progress=progress, log=log)
        RunDir(path).pack()  # a study's files, small enough to commit


def identical_run(cfg: RunConfig, folder: Path) -> Path | None:
    """A finished run under ``folder`` whose config is ``cfg`` but for its directory (studies share baselines),
    trained on this kind of machine: another kind would not have made the same run."""
    wanted = cfg.model_dump(mode="json") | {"output_dir": None}
    here = machine_kind({"hardware": hardware(), "precision": resolve_precision(cfg.training.precision)})
    for config in sorted(folder.rglob("config.yaml")):
        path = config.parent
        if path == Path(cfg.run_dir()) or not finished(path) or _saved_config(path) | {"output_dir": None} != wanted:
            continue
        if machine_kind(read_json(path / "manifest.json")) == here:
            return path
    return None


def copy_run(source: Path, cfg: RunConfig) -> None:
    """``source``'s files into ``cfg``'s run directory, without its weights (adapters, checkpoints): the config
    names the new directory, and the manifest the run it was copied from."""
    target = Path(cfg.run_dir())
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if file.is_file() and file.name not in (".lock", "config.yaml", "manifest.json"):
            shutil.copyfile(file, target / file.name)
    write_json(target / "manifest.json", read_json(source / "manifest.json") | {"copied_from": str(source)})
    RunDir(target).write_config(cfg.model_dump(mode="json"))  # last: a copy stopped halfway is not taken for a run


def run_sweep(
    base: RunConfig, seeds: list[int], orders: list[str], streams: list[str], out: Path, progress: bool, log=print
) -> Path:
    """Run (or finish) every combination, then write out/report.md over all of them; returns its path."""
    configs = sweep_configs(base, seeds, orders, streams, out)
    run_or_resume(configs, progress, log)
    return write_report([cfg.run_dir() for cfg in configs], out)
