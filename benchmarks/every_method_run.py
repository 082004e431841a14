"""Every method end to end on this device (the GPU when there is one): ``lcia run``, then ``lcia eval`` of its saved
last stage, each method on a short stream of the packaged model, all in one process.

Per method: whether the run finished (else the error's first line and the end of its traceback; the next
method runs all the same), its seconds, its peak GPU memory, its matrix and Avg.ACC, and whether the saved last
stage, loaded again and evaluated as ``lcia eval`` does (each instance routed by the method), gives the run's
last row. Precision is ``auto``: bf16 on a GPU. The results file is rewritten after each method, so a run stopped
at a time limit keeps the methods done.

    python benchmarks/every_method_run.py --stream ni-cit-small --steps 3 --test-size 8
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch
from harness import write_results

from lcia.config import load_config
from lcia.methods import METHODS
from lcia.pipeline import stream_run
from lcia.pipeline.session import evaluate_saved


def run_method(name: str, args) -> dict:
    cfg = load_config(
        None,
        [f"stream={args.stream}", f"method.name={name}", f"training.steps={args.steps}",
         f"data.test_size={args.test_size}", f"output_dir={args.runs}/{name}", "evaluation.bootstrap=100"],
    )  # fmt: skip
    result = stream_run.run(cfg, overwrite=True, progress=False, log=lambda *_: None)
    again = list(evaluate_saved(str(result.run_dir), progress=False).values())
    return {
        "status": "ok",
        "matrix": result.matrix,
        "Avg.ACC": result.metrics["Avg.ACC"],
        "eval_equals_last_row": again == result.matrix[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="default: every registered method")
    parser.add_argument("--stream", default="ni-cit-small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=8)
    parser.add_argument("--runs", default="runs/every-method", help="where the runs are written")
    parser.add_argument("--out", default="benchmarks/results/every_method_run.json")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    results = {}
    for name in args.methods.split(","):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            record = run_method(name, args)
        except Exception as err:  # noqa: BLE001 - recorded, and the next method runs
            record = {
                "status": f"{type(err).__name__}: {err}".splitlines()[0],
                "traceback": traceback.format_exc()[-3000:],
            }
        record["seconds"] = round(time.perf_counter() - started, 1)
        record["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
        results[name] = record
        print(name, {k: v for k, v in record.items() if k not in ("matrix", "traceback")}, flush=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "methods": results}) + "\n")  # so far
    failed = [name for name, record in results.items() if record["status"] != "ok"]
    write_results(args.out, {"args": vars(args), "failed": failed, "methods": results})


if __name__ == "__main__":
    main()
