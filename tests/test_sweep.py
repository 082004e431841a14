"""Task orders, ``lcia sweep`` (seeds x orders x streams, then one report) and TensorBoard / W&B logging."""

import importlib.util

import pytest
import yaml

from lcia.cli import main
from lcia.config import load_config
from lcia.data.streams import order_tasks
from lcia.data.tasks import Task
from lcia.errors import LciaError
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.stream_run import run


def test_task_orders():
    tasks = [Task(name, [], []) for name in ("b", "c", "a")]
    assert [t.name for t in order_tasks(tasks, "original")] == ["b", "c", "a"]
    assert [t.name for t in order_tasks(tasks, "reverse")] == ["a", "c", "b"]
    assert [t.name for t in order_tasks(tasks, "alphabetical")] == ["a", "b", "c"]
    assert load_config(None, ["data.order=reverse"]).run_dir().endswith("seed0-reverse")
    with pytest.raises(LciaError, match="data.order"):
        load_config(None, ["data.order=random"])


def test_sweep_runs_every_combination_keeps_finished_runs_and_reports(tiny_config, tmp_path, capsys):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json") | {"output_dir": None}))
    out = tmp_path / "sweep"
    argv = ["sweep", str(config), "--seeds", "0,1", "--orders", "original,reverse", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    runs = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "figures")
    assert runs == [f"stream-{o}-seed{s}" for o in ("original", "reverse") for s in (0, 1)]
    for name in runs:
        results = RunDir(out / name).read_json("results.json")
        assert results["tasks"] == (["echo", "colors"] if "reverse" in name else ["colors", "echo"])
        assert results["metrics"]
    report = (out / "report.md").read_text()
    assert all(name in report for name in runs)
    capsys.readouterr()
    assert main(argv) == 0  # run again: every run is finished and kept, the report rewritten
    assert capsys.readouterr().out.count("finished, kept") == 4
    saved = out / runs[0] / "config.yaml"  # written by an lcia before training.warmup_ratio existed
    record = yaml.safe_load(saved.read_text())
    del record["training"]["warmup_ratio"]
    saved.write_text(yaml.safe_dump(record))
    assert main(argv) == 0  # a field added since, at its default, is the same config: the study continues
    assert capsys.readouterr().out.count("finished, kept") == 4
    changed = [*argv[:2], "--set", "training.steps=5", *argv[2:]]
    assert main(changed) == 2  # the same folders with another config are refused, not mixed
    assert "holds a run with another config" in capsys.readouterr().err


def test_tensorboard_logs_losses_method_scalars_scores_and_metrics(tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config.model_copy(deep=True)
    cfg.logging.tensorboard, cfg.method.name = True, "dema"
    result = run(cfg, progress=False, log=lambda *_: None)
    events = EventAccumulator(str(result.run_dir / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))  # 2 tasks x 4 steps, one axis
    assert "train/ema_coefficient_median" in scalars
    assert [e.step for e in events.Scalars("score/echo")] == [0, 4, 8]  # rows 0..2, at the end of each stage
    assert events.Scalars("metrics/Avg.ACC")[0].value == pytest.approx(result.metrics["Avg.ACC"])


def test_wandb_asked_but_not_installed_is_a_clear_error(tiny_config, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(LciaError, match=r"--set: logging\.wandb: the wandb package is not installed"):
        load_config(None, ["logging.wandb=true"])
    cfg = tiny_config.model_copy(deep=True)
    cfg.logging = cfg.logging.model_construct(wandb=True)  # set in code, past the config's check
    with pytest.raises(LciaError, match=r"logging\.wandb: the wandb package is not installed"):
        run(cfg, progress=False, log=lambda *_: None)
