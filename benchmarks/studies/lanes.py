"""The evidence studies (docs/evidence.md) as lanes of ``lcia compare`` commands, continued where they stopped.

    python benchmarks/studies/lanes.py cpu --parallel 2     # on a 2-core CPU: every study, two runs at a time
    python benchmarks/studies/lanes.py cpu --parallel 2 --deadline 9600   # ... none left half-done after 160 min
    python benchmarks/studies/lanes.py gpu --parallel 12    # on a GPU: the frontiers at ranks 32 and 128, 12 at a time
    python benchmarks/studies/lanes.py cpu                  # the lane's commands in turn, one thread

* ``--parallel N``: every run of the lane's commands (the configs ``lcia compare`` would run, built by the
  same function, so the command keeps them later) runs as a process of its own, N at a time, one
  thread each. On a CPU, one queue for every core: no core waits while another study still has runs to go. On
  a GPU, a small model leaves it mostly idle, so N processes share it. Within a study the longest runs go first
  (each run's expected wall time is its setting's mean over the lane's finished runs, else its method's, else
  the median, and at least what a stopped run has spent), so that a run as long as a session (``gem`` takes
  hours on a CPU) starts when a session does.
  ``--deadline`` seconds: a run starts only if it is expected to end before it (a shorter one takes the core
  instead), and a running one is stopped there by SIGTERM (it saves a checkpoint; a finished run is never lost,
  but a checkpoint is weights, kept only on the machine that wrote it). A study's command typed afterwards
  keeps its finished runs and writes its comparison.
* **One command at a time** (the default): each command keeps its finished runs, resumes a stopped one and
  writes its comparison or report, exactly as typed by hand; one core.

A lane stopped anywhere continues from there when started again. Commit each study's small files as its runs
finish (adapters and checkpoints are ignored); benchmarks/studies/README.md says what each study is for.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = "benchmarks/studies"
NI = ["--set", "training.steps=100", "--set", "data.test_size=50"]
FOUR = "seq-lora,dema,grouping,lcia"
FRONTIER = (
    "seq-lora,ema:beta=0.9,ema:beta=0.97,ema,ema:beta=0.995,dema,dema:multiplier=0.5,dema:multiplier=8,"
    "dema:preset=paper,dema:preset=scaled,ewc:lam=1e3,ewc,ewc:lam=1e5,grouping,lcia"
)
DIVERSE = "grouping:threshold=diverse,similarity=embedding,lcia:threshold=diverse,similarity=embedding"


def frontier(rank: int) -> list[str]:
    """The frontier on ni-cit at LoRA rank ``rank``, alpha = 2 x rank (the default's scale, alpha / r = 2)."""
    sets = [] if rank == 8 else ["--set", f"lora.r={rank}", "--set", f"lora.alpha={2 * rank}"]
    out = f"{OUT}/frontier-ni-cit-r{rank}"
    return ["compare", "configs/ni-cit.yaml", "--methods", FRONTIER, "--seeds", "0", *NI, *sets, "--out", out]


# every method; inflora collects its layer inputs over what 100 steps of 8 train on, as on coin-mini over 40 x 8
OTHERS = "zero-shot,multitask,ewc,l2,lwf,replay,olora,moelora,ema,reglora,hide,inflora:samples=800,ilora,mrlora,gem"
SEEDS_NI_CIT = ["compare", "configs/ni-cit.yaml", "--methods", f"{FOUR},{OTHERS}", "--seeds", "0,1,2", *NI,
                "--out", f"{OUT}/seeds-ni-cit", "--reuse", OUT]  # fmt: skip
# The same config on a CPU and a GPU gives two different runs, so a study keeps to one kind of machine: --reuse
# copies only runs of this kind. The frontiers reuse nothing; the orders and seeds studies copy the frontier's.
NI_CIT = [  # the text studies in the order they matter: the frontier at rank 8, the core four over seeds (seeds 1
    # and 2 first: seed 0 is copied from the frontier), orders, every method, larger ranks
    frontier(8),
    [*SEEDS_NI_CIT[:3], FOUR, "--seeds", "1,2,0", *SEEDS_NI_CIT[6:]],
    ["compare", "configs/ni-cit.yaml", "--methods", FOUR, "--orders", "original,reverse,alphabetical", "--seeds", "0",
     *NI, "--out", f"{OUT}/orders-ni-cit", "--reuse", OUT],
    SEEDS_NI_CIT,
    frontier(32),
    frontier(128),
]  # fmt: skip
SEEDS_H200 = ["compare", "configs/ni-cit.yaml", "--methods", FOUR, "--seeds", "0,1,2", *NI,
              "--out", f"{OUT}/seeds-ni-cit-h200"]  # fmt: skip  # finished on one H200: the core four on a GPU
COIN_SEEDS = ["compare", "configs/coin-mini.yaml", "--methods", f"{FOUR},gem,mrlora", "--seeds", "0,1,2",
              "--set", "training.steps=100", "--out", f"{OUT}/seeds-coin-mini"]  # fmt: skip
DIVERSE_SEEDS = ["compare", "configs/ni-cit.yaml", "--methods", f"seq-lora,dema,{DIVERSE}", "--seeds", "0,1,2", *NI,
                 "--set", "stream=ni-cit-diverse", "--out", f"{OUT}/seeds-ni-cit-diverse"]  # fmt: skip
# cpu: every study, the text ones last; gpu: whole studies the CPU reaches last (no embedder needed)
LANES = {"cpu": [COIN_SEEDS, DIVERSE_SEEDS, *NI_CIT], "gpu": [SEEDS_H200, *NI_CIT[-2:]]}
COMMON = ["--set", "threads=1", "--quiet"]


def parse(command: list[str]):
    from lcia.cli import build_parser

    return build_parser().parse_args(command + COMMON)


def configs(command: list[str]) -> list:
    """The run configs of one lane command, as ``lcia compare`` builds them."""
    from lcia.compare import compare_configs, split_methods
    from lcia.config import load_config

    args = parse(command)
    base, seeds, orders = load_config(args.config, args.set), [int(s) for s in args.seeds.split(",")], args.orders
    return compare_configs(base, split_methods(args.methods), seeds, Path(args.out), orders and orders.split(","))


def lcia(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lcia", *args], cwd=ROOT)


def in_turn(lane: list[list[str]]) -> None:
    for command in lane:
        if lcia(*command, *COMMON).wait():
            raise SystemExit(f"stopped: lcia {' '.join(command)} failed")


def parallel(name: str, workers: int, deadline: float) -> None:
    """Every unfinished run of lane ``name`` as a process of its own, ``workers`` at a time, until ``deadline``."""
    from lcia.models.loading import smollm2_dir
    from lcia.sweep import finished

    smollm2_dir()  # converted once here, not by every worker at the same time
    studies = [configs(command) for command in LANES[name]]
    expected = expected_seconds([cfg for study in studies for cfg in study])
    todo = []  # study by study, the longest runs of each first; a run two studies share, once
    for study in studies:
        todo += sorted({cfg.run_dir() for cfg in study} - set(todo), key=lambda path: -expected[path])
    todo = [path for path in todo if not finished(Path(path))]
    print(f"{len(todo)} runs to go, {workers} at a time, about {sum(map(expected.get, todo)) / 3600:.1f} h", flush=True)
    running: dict[subprocess.Popen, tuple[str, float]] = {}
    while time.monotonic() < deadline:
        while len(running) < workers and (path := first_to_fit(todo, expected, deadline)):
            todo.remove(path)
            running[spawn(name, path)] = (path, time.monotonic())
        for process in [p for p in running if p.poll() is not None]:
            path, started = running.pop(process)
            print(f"{path}: exit {process.returncode} after {time.monotonic() - started:.0f} s", flush=True)
        if not running:
            break
        time.sleep(1)
    if todo:
        print(f"{len(todo)} runs left for the next start (none of them fits before the deadline)", flush=True)
    for process in running:  # the deadline: each saves a checkpoint and stops
        process.send_signal(signal.SIGTERM)
    grace = time.monotonic() + 30
    for process, (path, _) in running.items():
        try:
            process.wait(timeout=max(0.0, grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"{path}: stopped at the deadline", flush=True)


def expected_seconds(runs: list) -> dict[str, float]:
    """Each run's expected wall time, by its directory: the mean over the finished runs of its setting (the
    same config but for seed, task order and directory), else of its method, else the median of those; at
    least what a stopped run has spent already (it starts again from its first stage on another machine)."""
    from lcia.sweep import finished

    times: dict[str, list[float]] = {}
    spent: dict[str, float] = {}
    for cfg in runs:
        path = Path(cfg.run_dir())
        if (path / "manifest.json").exists():
            timings = json.loads((path / "manifest.json").read_text())["timings"]
            # training and rows: a lower bound on the wall time (a run resumed before 2026-12-06 counted only
            # its last process in total_seconds)
            worked = sum(stage["seconds"] for stage in timings["stages"]) + sum(timings["rows"])
            if not finished(path):
                spent[cfg.run_dir()] = worked
                continue
            for key in (setting_of(cfg), cfg.method.name):
                times.setdefault(key, []).append(max(timings["total_seconds"], worked))
    means = {key: statistics.fmean(values) for key, values in times.items()}
    median = statistics.median(means.values()) if means else 0.0
    return {
        cfg.run_dir(): max(means.get(setting_of(cfg), means.get(cfg.method.name, median)), spent.get(cfg.run_dir(), 0))
        for cfg in runs
    }


def setting_of(cfg) -> str:
    from lcia.reporting.runs import setting_config

    return json.dumps(setting_config(cfg.model_dump(mode="json"), pool_orders=True), sort_keys=True)


def first_to_fit(todo: list[str], expected: dict[str, float], deadline: float) -> str | None:
    """The first run of the queue expected to end before ``deadline``: a longer one waits for a later start
    rather than lose its training when the session ends."""
    return next((path for path in todo if time.monotonic() + expected[path] <= deadline), None)


def spawn(name: str, path: str) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, __file__, name, "--one", path], cwd=ROOT, env=env)


def one(lane: list[list[str]], path: str) -> None:
    """Run (or resume) the lane's run in ``path``, found by its directory: the lane's file may have been edited
    since the queue was made."""
    from lcia.sweep import run_or_resume

    for command in lane:
        if matches := [cfg for cfg in configs(command) if cfg.run_dir() == path]:
            reuse = parse(command).reuse
            return run_or_resume(matches, progress=False, reuse=reuse and Path(reuse))
    raise SystemExit(f"{path}: no run of this lane")


def status(lane: list[list[str]]) -> None:
    """Each study of the lane: its runs finished, in all, and the expected hours of the rest on one core."""
    from lcia.sweep import finished

    studies = [configs(command) for command in lane]
    expected = expected_seconds([cfg for study in studies for cfg in study])
    for command, study in zip(lane, studies):
        left = [cfg.run_dir() for cfg in study if not finished(Path(cfg.run_dir()))]
        hours = sum(map(expected.get, left)) / 3600
        out = command[command.index("--out") + 1]
        print(f"{out}: {len(study) - len(left)} of {len(study)} finished, about {hours:.1f} h of runs to go")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lane", choices=LANES)
    parser.add_argument("--parallel", type=int, default=0, help="runs at a time, each a process (default: in turn)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds: with --parallel, stop there")
    parser.add_argument("--status", action="store_true", help="print each study's finished runs, and stop")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker of --parallel: the run's directory
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    from lcia.core.runtime import offline_and_quiet

    offline_and_quiet()  # what `lcia` sets first: offline, and no import-time noise from bitsandbytes
    lane = LANES[args.lane]
    if args.status:
        status(lane)
    elif args.one:
        one(lane, args.one)
    elif args.parallel:
        parallel(args.lane, args.parallel, time.monotonic() + (args.deadline or float("inf")))
    else:
        in_turn(lane)


if __name__ == "__main__":
    main()
