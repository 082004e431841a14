"""Faults the one restore path survives (docs/reliability.md): a damaged newest checkpoint, every checkpoint
damaged, the disk filling up while a checkpoint or results.json is written, a run directory moved."""

from __future__ import annotations

import errno
import json
import pathlib
import shutil
from contextlib import contextmanager

import pytest

from lcia.cli import main
from lcia.core.files import DiskFull
from lcia.errors import Interrupted, LciaError
from lcia.pipeline import checkpoints as checkpoints_module
from lcia.pipeline import stream_run
from lcia.pipeline.checkpoints import Checkpoints, damage
from lcia.pipeline.run_files import RunDir


def quiet_run(cfg, **kwargs):
    return stream_run.run(cfg, progress=False, log=lambda *_: None, **kwargs)


@pytest.fixture
def config(tiny_config, tmp_path):
    """The tiny two-task run with a checkpoint after every step (so two are kept), and its uninterrupted matrix."""

    def make(folder: str):
        cfg = tiny_config.model_copy(deep=True)
        cfg.output_dir, cfg.training.checkpoint_every = str(tmp_path / folder), 1
        return cfg

    return make


@pytest.fixture
def whole(config):
    return quiet_run(config("whole"))


def stop_after(cfg, steps: int, monkeypatch) -> None:
    """Run ``cfg`` until its training log has ``steps`` lines, then stop it as a SIGTERM would."""
    log = pathlib.Path(cfg.output_dir) / "train_log.jsonl"

    @contextmanager
    def stop():
        yield lambda: log.exists() and len(log.read_text().splitlines()) >= steps

    with monkeypatch.context() as patch:
        patch.setattr(stream_run, "stop_on_signals", stop)
        with pytest.raises(Interrupted):
            quiet_run(cfg)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_taken(config, whole, monkeypatch):
    cfg = config("run")
    stop_after(cfg, 6, monkeypatch)  # stage 2, step 2
    folders = Checkpoints(cfg.output_dir)._folders()
    assert len(folders) == 2  # the newest and the one before
    weights = folders[0] / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    assert damage(folders[0]) == (weights, "its content differs from the checksum recorded when it was written")
    logged = []
    resumed = stream_run.run(cfg, resume=True, progress=False, log=logged.append)
    assert any(f"checkpoint {folders[0].name} is damaged (weights.safetensors" in line for line in logged)
    assert any(f"resuming from {folders[1].name}" in line for line in logged)
    assert (folders[0].parent / f"{folders[0].name}.damaged").is_dir()
    assert resumed.matrix == whole.matrix
    predictions = RunDir(whole.run_dir).read_jsonl("predictions.jsonl")
    assert RunDir(cfg.output_dir).read_jsonl("predictions.jsonl") == predictions


def test_with_every_checkpoint_damaged_resuming_stops_with_one_line_naming_the_file(config, monkeypatch, capsys):
    cfg = config("run")
    stop_after(cfg, 6, monkeypatch)
    folders = Checkpoints(cfg.output_dir)._folders()
    (folders[0] / "progress.json").write_text("{not json")
    (folders[1] / "method.json").unlink()
    capsys.readouterr()
    assert main(["run", "--resume", cfg.output_dir, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"lcia: error: {folders[0] / 'progress.json'}: damaged checkpoint (not valid JSON at line 1)")
    assert "no intact one to resume from" in err


def enospc(*_, **__):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one_and_the_run_resumes(config, whole, monkeypatch):
    cfg = config("run")
    stop_after(cfg, 6, monkeypatch)
    before = Checkpoints(cfg.output_dir).latest()
    results = RunDir(cfg.output_dir).read_json("results.json")
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints_module, "save_file", enospc)  # the disk is full at the next checkpoint
        kept = "no space left on device; the previous checkpoints and results are intact; continue with: lcia run"
        with pytest.raises(DiskFull, match=kept):
            quiet_run(cfg, resume=True)
    after = Checkpoints(cfg.output_dir)
    assert after.latest() == before and damage(pathlib.Path(before["folder"])) is None
    assert not list(after.root.glob(".*"))  # no half-written checkpoint left behind
    assert RunDir(cfg.output_dir).read_json("results.json") == results
    assert quiet_run(cfg, resume=True).matrix == whole.matrix  # space is back


def test_a_full_disk_while_writing_results_keeps_them_and_the_run_resumes(config, whole, monkeypatch, capsys):
    cfg = config("run")
    write_text = pathlib.Path.write_text

    def full_at_row_2(path, text, *args, **kwargs):
        if path.name.startswith(".results.json-") and len(json.loads(text)["matrix"]) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(path, text, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "write_text", full_at_row_2)
        with pytest.raises(DiskFull, match=r"results\.json: no space left on device"):
            quiet_run(cfg)
    out = RunDir(cfg.output_dir)
    assert out.read_json("results.json")["matrix"] == whole.matrix[:2]  # the rows written before
    assert not [p for p in out.path.iterdir() if p.name.startswith(".results.json-")]
    assert main(["run", "--resume", cfg.output_dir, "--quiet"]) == 0
    assert out.read_json("results.json")["matrix"] == whole.matrix


def test_a_run_directory_moved_to_another_path_resumes_there(config, whole, monkeypatch, tmp_path):
    cfg = config("run")
    stop_after(cfg, 6, monkeypatch)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(cfg.output_dir, moved)
    assert main(["run", "--resume", str(moved), "--quiet"]) == 0
    assert RunDir(moved).read_json("results.json")["matrix"] == whole.matrix
    assert RunDir(moved).read_jsonl("predictions.jsonl") == RunDir(whole.run_dir).read_jsonl("predictions.jsonl")


def test_a_partial_last_line_left_by_a_crash_is_dropped_on_resume(config, whole, monkeypatch):
    cfg = config("run")
    stop_after(cfg, 6, monkeypatch)
    with open(pathlib.Path(cfg.output_dir) / "train_log.jsonl", "a") as log:
        log.write('{"stage": 2, "st')  # the disk filled up mid-line
    assert quiet_run(cfg, resume=True).matrix == whole.matrix
    with pytest.raises(LciaError, match="holds a run"):
        quiet_run(cfg)


def test_a_full_disk_while_a_log_line_is_appended_is_one_line(tmp_path, monkeypatch):
    from lcia.pipeline import run_files

    class FullDisk:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            enospc()

    out = RunDir(tmp_path)
    out.append("train_log.jsonl", [{"stage": 1, "step": 1}])
    monkeypatch.setattr(run_files, "open", lambda *args, **kwargs: FullDisk(), raising=False)
    with pytest.raises(DiskFull, match=r"train_log\.jsonl: no space left on device; its earlier lines are intact"):
        out.append("train_log.jsonl", [{"stage": 1, "step": 2}])
    monkeypatch.undo()
    assert out.read_jsonl("train_log.jsonl") == [{"stage": 1, "step": 1}]
