"""Peak memory (RSS) and wall time of whole ``lcia run`` processes, one per method, on one stream.

Each run is a child process whose own peak RSS the kernel reports when it exits (``os.wait4``), so the
number covers everything a run holds: model, adapters, optimizer, method state, evaluation.

    python benchmarks/run_memory.py --methods seq-lora,dema,lcia --steps 10 --test-size 20
    python benchmarks/run_memory.py --methods dema --quantizations none,nf4 --out benchmarks/results/run_memory_nf4.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="ni-cit-small")
    parser.add_argument("--methods", default="seq-lora,dema,lcia")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--test-size", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quantizations", default="none", help="model.quantization values: none, nf4, fp4")
    parser.add_argument("--out", default="benchmarks/results/run_memory.json")
    args = parser.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, quantization in itertools.product(args.methods.split(","), args.quantizations.split(",")):
            name = method if quantization == "none" else f"{method} ({quantization})"
            command = [sys.executable, "-m", "lcia", "run", "--overwrite", "--quiet"]
            for setting in (
                f"stream={args.stream}",
                f"method.name={method}",
                f"model.quantization={quantization}",
                f"output_dir={tmp}/{method}-{quantization}",
                f"training.steps={args.steps}",
                f"training.batch_size={args.batch_size}",
                f"data.test_size={args.test_size}",
            ):
                command += ["--set", setting]
            start = time.perf_counter()
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            if status:
                raise SystemExit(f"{' '.join(command)} failed with status {status}")
            seconds = round(time.perf_counter() - start, 1)
            manifest = json.loads(Path(f"{tmp}/{method}-{quantization}/manifest.json").read_text())
            runs[name] = {
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "seconds": seconds,
                "precision": manifest["precision"],
                "train_seconds": round(sum(s["seconds"] for s in manifest["timings"]["stages"]), 1),
                "eval_seconds": round(sum(manifest["timings"]["rows"]), 1),
                "matrix": json.loads(Path(f"{tmp}/{method}-{quantization}/results.json").read_text())["matrix"],
            }
            print(name, runs[name])
    write_results(args.out, {"args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()
