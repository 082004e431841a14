"""One process against ``accelerate launch`` with several, on the same run: time, and whether results agree.

Runs ``lcia run`` twice on the same config (the real model): once as one process, once under
``accelerate launch --multi_gpu --num_processes N`` (gloo DDP on a CPU, NCCL on GPUs), one after the
other on the same machine. Reports each run's training seconds per stage and evaluation seconds per
row (from manifest.json), the largest relative difference between their training losses, and whether
their matrices and predictions are equal.

    python benchmarks/distributed_speed.py --processes 2 --method dema --steps 10 --test-size 24

On a CPU the comparison is of how one machine's cores are used: one process with all cores' threads
against N processes with cores/N threads each (Accelerate sets OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import write_results


def read_run(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    lines = lambda name: [json.loads(line) for line in (run / name).read_text().splitlines()]  # noqa: E731
    return {
        "train_seconds": [s["seconds"] for s in manifest["timings"]["stages"]],
        "eval_seconds": manifest["timings"]["rows"],
        "matrix": json.loads((run / "results.json").read_text())["matrix"],
        "losses": [r["loss"] for r in lines("train_log.jsonl")],
        "predictions": [p["prediction"] for p in lines("predictions.jsonl")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--stream", default="ni-cit-small")
    parser.add_argument("--method", default="dema")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--test-size", type=int, default=24)
    parser.add_argument("--out", default="benchmarks/results/distributed_speed.json")
    args = parser.parse_args()

    accelerate = str(Path(sys.executable).parent / "accelerate")
    launchers = {
        "1 process": [sys.executable, "-m", "lcia"],
        f"{args.processes} processes": [accelerate, "launch", "--multi_gpu", "--num_processes", str(args.processes)]
        + ["-m", "lcia"],
    }
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher in launchers.items():
            out = Path(tmp) / name.replace(" ", "-")
            settings = [
                f"stream={args.stream}",
                f"method.name={args.method}",
                f"output_dir={out}",
                f"training.steps={args.steps}",
                f"training.batch_size={args.batch_size}",
                f"data.test_size={args.test_size}",
            ]
            command = launcher + ["run", "--quiet"] + [f"--set={s}" for s in settings]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            runs[name] = {"wall_seconds": round(time.perf_counter() - start, 1), **read_run(out)}
            print(name, {k: v for k, v in runs[name].items() if k in ("wall_seconds", "train_seconds", "eval_seconds")})

    one, many = runs.values()
    results = {
        "args": vars(args),
        "runs": {
            name: {k: v for k, v in run.items() if k not in ("losses", "predictions")} for name, run in runs.items()
        },
        "train_speedup": round(sum(one["train_seconds"]) / sum(many["train_seconds"]), 3),
        "eval_speedup": round(sum(one["eval_seconds"]) / sum(many["eval_seconds"]), 3),
        "same_matrix": one["matrix"] == many["matrix"],
        "same_predictions": sum(a == b for a, b in zip(one["predictions"], many["predictions"])),
        "predictions": len(one["predictions"]),
        "loss_max_relative_difference": max(abs(a - b) / abs(a) for a, b in zip(one["losses"], many["losses"])),
    }
    print({k: v for k, v in results.items() if k not in ("args", "runs")})
    write_results(args.out, results)


if __name__ == "__main__":
    main()
