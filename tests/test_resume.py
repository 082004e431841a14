"""Reliability: checkpoints, resume after SIGKILL / SIGTERM, the run lock, NaN steps, pickles refused."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from lcia.errors import LciaError
from lcia.methods.base import METHODS, Method, MethodParams, register
from lcia.pipeline.checkpoints import Checkpoints, load_state, save_state
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.stream_run import run


def test_state_round_trip_keeps_int_keys_tuples_and_tensors(tmp_path):
    param = torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3, betas=(0.8, 0.9))
    param.grad = torch.ones(3)
    optimizer.step()
    save_state(tmp_path, "optimizer", optimizer.state_dict())
    restored = load_state(tmp_path, "optimizer")
    assert list(restored["state"]) == [0] and restored["param_groups"][0]["betas"] == (0.8, 0.9)
    assert torch.equal(restored["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    fresh = torch.optim.AdamW([param], lr=1e-3)
    fresh.load_state_dict(restored)  # what a resumed run does


def _config(tiny_config, tmp_path, **training):
    cfg = tiny_config.model_copy(deep=True)
    cfg.output_dir = str(tmp_path / "run")
    cfg.training.steps, cfg.training.checkpoint_every = 40, 5
    for key, value in training.items():
        setattr(cfg.training, key, value)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def _start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "lcia", "run", "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def _kill_when(process, reached, sig=signal.SIGKILL, timeout=300):
    deadline = time.time() + timeout
    while not reached():
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, "the run never reached the kill point"
        time.sleep(0.01)
    process.send_signal(sig)
    return process.communicate(timeout=120)


def _outcome(run_dir):
    out = RunDir(run_dir)
    predictions = [(p["row"], p["task"], p["id"], p["prediction"]) for p in out.read_jsonl("predictions.jsonl")]
    return out.read_json("results.json")["matrix"], sorted(predictions)


def test_killed_runs_resume_to_the_uninterrupted_matrix(tiny_config, tmp_path):
    (tmp_path / "ref").mkdir()
    reference_cfg, _ = _config(tiny_config, tmp_path / "ref")
    reference = run(reference_cfg, progress=False, log=lambda *_: None)
    expected = _outcome(reference.run_dir)

    cfg, path = _config(tiny_config, tmp_path)
    run_dir = tmp_path / "run"
    log, results = run_dir / "train_log.jsonl", run_dir / "results.json"
    kill_points = [
        lambda: _lines(log) >= 7,  # mid stage 1, between checkpoints
        lambda: _lines(log) >= 23,  # stage 1 resumed and finished, stage 2 underway
        lambda: _lines(run_dir / "predictions.jsonl") > 2 * 2 * 6,  # evaluating row 2
    ]
    process = _start(str(path))
    _kill_when(process, kill_points[0])
    # the steps up to the mid-stage checkpoint are kept, so the manifest counted their time when it was saved
    newest = max((run_dir / "checkpoints").glob("ckpt-*"), key=lambda p: p.name)
    assert (run_dir / "manifest.json").stat().st_mtime_ns >= newest.stat().st_mtime_ns
    for point in kill_points[1:]:
        process = _start("--resume", str(run_dir))
        _kill_when(process, point)
    finished = subprocess.run(
        [sys.executable, "-m", "lcia", "run", "--quiet", "--resume", str(run_dir)], capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    assert _outcome(run_dir) == expected
    timings = RunDir(run_dir).read_json("manifest.json")["timings"]
    stages = timings["stages"]
    assert any(s["resumed_at_step"] > 0 for s in stages), "at least one stage continued from a mid-stage checkpoint"
    # every stage recorded once, and the wall time counts the four processes', not the last one's alone
    assert [s["stage"] for s in stages] == [1, 2]
    assert timings["total_seconds"] >= sum(s["seconds"] for s in stages) + sum(timings["rows"])
    assert _lines(log) == 2 * 40 and json.loads(results.read_text())["metrics"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_config, tmp_path):
    cfg, path = _config(tiny_config, tmp_path, checkpoint_every=0)
    process = _start(str(path))
    _, stderr = _kill_when(process, lambda: _lines(tmp_path / "run" / "train_log.jsonl") >= 3, sig=signal.SIGTERM)
    assert process.returncode == 130
    assert "checkpoint saved; continue with: lcia run --resume" in stderr
    latest = Checkpoints(tmp_path / "run").latest()
    assert latest["stage"] == 1 and 3 <= latest["step"] < 40


def test_a_second_process_cannot_write_the_same_run(tiny_config, tmp_path):
    cfg, path = _config(tiny_config, tmp_path)
    with RunDir(cfg.run_dir()).lock():
        done = subprocess.run([sys.executable, "-m", "lcia", "run", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and "in use by another lcia process" in done.stderr


@register("test-only-nan")
class NanLoss(Method):
    """Poisons the loss on the steps listed in ``steps`` (all steps when empty)."""

    class Params(MethodParams):
        steps: list[int] = []

    def __init__(self, params=None):
        super().__init__(params)
        self.steps = set(self.params.steps)

    def loss(self, ctx, batch, outputs):
        return torch.tensor(float("nan")) if not self.steps or ctx.step in self.steps else None


def test_nan_steps_are_skipped_and_counted_then_stop_the_run(tiny_config):
    try:
        cfg = tiny_config.model_copy(deep=True)
        cfg.method.name, cfg.method.params = "test-only-nan", {"steps": [2, 3]}
        result = run(cfg, progress=False, log=lambda *_: None)
        stages = RunDir(result.run_dir).read_json("manifest.json")["timings"]["stages"]
        assert [s["skipped_steps"] for s in stages] == [2, 2]
        cfg.method.params, cfg.training.max_bad_steps = {}, 1
        with pytest.raises(LciaError, match=r"stage 1: 2 steps had a NaN or infinite loss .*checkpoint at step 2"):
            run(cfg, overwrite=True, progress=False, log=lambda *_: None)
        assert Checkpoints(result.run_dir).latest()["step"] == 2
    finally:
        del METHODS["test-only-nan"]


def test_pickled_files_in_a_checkpoint_are_refused(tiny_config):
    result = run(tiny_config, progress=False, log=lambda *_: None)
    checkpoints = Checkpoints(result.run_dir)
    latest = checkpoints.latest()
    torch.save({"x": torch.zeros(1)}, f"{latest['folder']}/optimizer.bin")
    with pytest.raises(LciaError, match=r"optimizer\.bin: pickled file refused"):
        run(tiny_config, resume=True, progress=False, log=lambda *_: None)


def test_eval_refuses_a_pickled_adapter(tiny_config):
    from lcia.pipeline.session import evaluate_saved

    result = run(tiny_config, progress=False, log=lambda *_: None)
    adapter = RunDir(result.run_dir).adapter_dir(2)
    torch.save({}, adapter / "adapter_model.bin")
    with pytest.raises(LciaError, match=r"adapter_model\.bin: pickled file refused"):
        evaluate_saved(str(result.run_dir), stage=2, progress=False)
