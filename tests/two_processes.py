"""What the multi-process tests share: a two-task run config, the methods' cases, launches of 2 CPU processes
(gloo) and their preemption, the 1-process reference run, and the comparison of two runs within the tolerances
of float summation order."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
from conftest import builtin_methods
from safetensors.torch import load_file

from lcia.config import load_config
from lcia.methods import METHODS
from lcia.methods.base import Capabilities
from lcia.pipeline import stream_run as runner

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
# (loss, relative; adapter weights, absolute): weights reach ~0.3, and float sums in another order
# (two ranks' halves, other padding widths) drift through 40 Adam steps at lr 0.01. Measured: losses
# 2e-5, weights 1.1e-4; on a 4-bit base, whose CPU kernels round differently per batch shape, 1.1e-4
# and 9e-4 on an AVX2 EPYC.
# The EMA coefficient (last) divides by |g_t - g_(t-1)|, a small difference of gradients: measured 2e-4
# and 4e-3.
# Both runs compute on one thread (``threads: 1``), whichever way pytest runs: measured there, losses 1.1e-4.
TOLERANCE = {"fp32": (2e-4, 5e-4, 1e-3), "nf4": (3e-4, 2e-3, 1e-2), "drifts": (1e-2, 5e-4, 1e-3)}
# On an AVX512 EPYC the 4-bit run's stage 2 drifts further (losses still 1.6e-4, but weights 2.1e-2 and
# an official coefficient near 1 falling back to 0.01 in one run only: Adam turns tiny gradient
# differences in near-zero entries into whole steps of lr), so there weights and coefficients are
# compared after stage 1 (4.5e-4), losses, matrix and predictions throughout.
# "drifts": batches of 1 per rank at lr 0.01, where stage 2's float-order differences grow through Adam (on one
# thread, the tiny model with its 2048-token vocabulary: losses 4.7e-3, stage-2 weights 6.6e-3, stage-1 weights
# 5e-7; matrix and predictions equal), so weights are compared after stage 1 and losses at 1e-2.
COMPARED_STAGES = {"fp32": None, "nf4": {1}, "drifts": {1}}


def two_task_config(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """Two tasks the tiny model learns a little of in 20 steps (first answer token), and a run config."""
    rows = lambda make: "".join(json.dumps(make(i)) + "\n" for i in range(24))  # noqa: E731
    (tmp_path / "colors.jsonl").write_text(
        rows(lambda i: {"instruction": "Name the color.", "input": f"item {i}", "output": ["red", "blue"][i % 3 > 0]})
    )
    (tmp_path / "echo.jsonl").write_text(rows(lambda i: {"prompt": f"Repeat the word w{i}.", "completion": f"w{i}"}))
    (tmp_path / "stream.yaml").write_text(
        "tasks:\n"
        "  - name: colors\n    train: colors.jsonl\n    max_new_tokens: 1\n"
        "  - name: echo\n    train: echo.jsonl\n    instruction: Repeat the word.\n    max_new_tokens: 3\n"
    )
    (tmp_path / "run.yaml").write_text(
        f"stream: {tmp_path / 'stream.yaml'}\n"
        f"model: {{name_or_path: {tiny_model_dir}}}\n"
        # fp32 whatever the CPU: bf16 autocast rounds each rank's half batch differently enough to flip
        # greedy answers of the tiny model, so exact agreement is asserted where it holds.
        "training: {steps: 20, batch_size: 6, lr: 0.01, checkpoint_every: 5, precision: fp32}\n"
        "threads: 1\n"
        "data: {test_size: 7}\n"
        "evaluation: {bootstrap: 50, batch_size: 4}\n"
        "lora: {r: 4, target_modules: [q_proj, v_proj, o_proj, up_proj, down_proj]}\n"
    )
    return tmp_path / "run.yaml"


def method_cases(keep: Callable[[Capabilities], bool]) -> dict[str, list[str]]:
    """Every built-in method that trains and whose capabilities ``keep`` accepts (a new method file joins here):
    its config overrides. reglora runs at lam 1: at its official 2500 on an L1 term, key entries oscillate around 0
    and flip sign on float-order differences (measured under DDP: loss rel 5e-3, weights 3e-2 in stage 2); with
    lam 1 the runs agree within tolerance."""
    cases = {name: [f"method.name={name}"] for name in builtin_methods(trains=True) if keep(METHODS[name].capabilities)}
    if "reglora" in cases:
        cases["reglora"].append("method.params.lam=1")
    return cases


def port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launcher(sharded: bool = False) -> list[str]:
    """``accelerate launch`` of 2 CPU processes: DDP, or (``sharded``) FSDP2 over the base's frozen weights."""
    engine = ["--use_fsdp", "--fsdp_version", "2"] if sharded else ["--multi_gpu"]
    return [ACCELERATE, "launch", *engine, "--num_processes", "2", "--main_process_port", port()]


def launch(*args: str, sharded: bool = False) -> list[str]:
    return [*launcher(sharded), "-m", "lcia", "run", *args, "--quiet"]


def one_process(config: Path, overrides: list[str], out: Path) -> Path:
    cfg = load_config(str(config), [*overrides, f"output_dir={out}"])
    threads = torch.get_num_threads()
    try:
        runner.run(cfg, progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)  # the config's one thread is this test's only
    return out


def assert_same_run(ours: Path, reference: Path, tolerance=TOLERANCE["fp32"], stages: set | None = None) -> None:
    """The same matrix and predictions, losses within tolerance, adapters of ``stages`` (None: all) too."""
    loss_rel, weight_atol, _ = tolerance
    read = lambda run, name: [json.loads(line) for line in (run / name).read_text().splitlines()]  # noqa: E731
    results = json.loads((ours / "results.json").read_text())
    assert results["matrix"] == json.loads((reference / "results.json").read_text())["matrix"]
    assert [p["prediction"] for p in read(ours, "predictions.jsonl")] == [
        p["prediction"] for p in read(reference, "predictions.jsonl")
    ]
    ours_log, reference_log = read(ours, "train_log.jsonl"), read(reference, "train_log.jsonl")
    assert [r["step"] for r in ours_log] == [r["step"] for r in reference_log]
    assert [r["loss"] for r in ours_log] == pytest.approx([r["loss"] for r in reference_log], rel=loss_rel)
    files = sorted(p.relative_to(reference) for p in (reference / "adapters").rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(ours) for p in (ours / "adapters").rglob("*.safetensors"))
    for name in files:
        if stages is not None and int(name.parts[1].removeprefix("stage-")) not in stages:
            continue
        a, b = load_file(ours / name), load_file(reference / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=weight_atol, rtol=0), f"{name}: {key}"


def launch_runs(config: Path, runs: dict[str, list[str]], out: Path, sharded: bool = False):
    """Every run of ``runs`` (name: overrides) in one launch (tests/launched_runs.py), written to ``out/name``:
    the processes start once for all of them."""
    spec = out.parent / f"{out.name}-runs.json"
    spec.write_text(json.dumps({"config": str(config), "out": str(out), "runs": runs}))
    script = str(Path(__file__).parent / "launched_runs.py")
    return subprocess.run([*launcher(sharded), script, str(spec)], capture_output=True, text=True)


def assert_each(names: Iterable[str], check: Callable[[str], None]) -> None:
    """``check`` of every name, its failures gathered, so that one failing case does not hide the others'."""
    failed = {}
    for name in names:
        try:
            check(name)
        except AssertionError as err:
            failed[name] = str(err)[:500]
    assert not failed, failed


def stop_with_sigterm(command: list[str], out: Path, steps: int) -> None:
    """Launch ``command`` (a run writing ``out``) and, once ``steps`` training steps are logged, send SIGTERM to the
    launcher, which passes it to every rank as a scheduler's preemption: the run stops with a checkpoint."""
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    while not (log.exists() and log.read_text().count("\n") >= steps) and launcher.poll() is None:
        time.sleep(0.01)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0, "the run ended before the signal"
    assert "checkpoint saved" in stderr or "redone on resume" in stderr, stderr[-3000:]
