"""The evidence studies' GPU lane (``benchmarks/studies/lanes.py gpu``) on a lent GPU, its finished runs brought back.

It rides on the GPU check's payload (benchmarks/gpu_check.py: the wheels, the streams' task files and the model
in parts, since one device command carries at most 64 MiB, the working tree included):

1. Here: ``python benchmarks/gpu_studies.py --prepare`` writes the payload and prints the calls, e.g. with two::

     run(command='python3 benchmarks/gpu_check.py part1 --out $OUT --budget 1', carry=['.gpu/call1'])
     run(command='python3 benchmarks/gpu_studies.py --out $OUT --deadline 480', carry=['.gpu/call2'],
         timeout_s=590)

2. There, back to back (each call finds the earlier ones' files while the machine is still held). Part 1 with
   no budget only installs the wheels and unpacks the data. This script joins the model, runs the
   lane's runs ``--parallel`` at a time until ``--deadline`` seconds, and writes each study's finished runs
   (their small files, as committed) as ``<study>.tar.gz`` into ``--out``, beside its log. Give it the lease's
   whole time: another call, even on the still-held machine, gets a fresh copy of the working tree, in which
   the first call's runs are gone (they live on only in the tars) and its stopped runs start again.
3. Here: ``python benchmarks/gpu_studies.py --unpack <folder of the tars>`` adds those runs to the studies under
   benchmarks/studies/ (a run already finished here is kept); each study's own command then keeps them and
   writes its comparison.

Only the standard library is used at the top level: the device's interpreter has lcia's packages only through
the wheels' folder that the lane's processes get on their path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from gpu_check import GPU, PART1, ROOT, commands, environment, join_model, prepare, python_path

sys.path.insert(0, str(ROOT / "benchmarks" / "studies"))
from lanes import LANES  # noqa: E402

STUDIES = [Path(command[command.index("--out") + 1]) for command in LANES["gpu"]]
LEFT_BEHIND = {"adapters", "checkpoints", "figures", ".lock"}  # as .gitignore leaves them out of a study


def finished(run: Path) -> bool:
    """lcia.sweep.finished in the standard library: this process runs on the device without lcia's packages."""
    results = run / "results.json"
    return results.exists() and "metrics" in json.loads(results.read_text())


def pack(study: Path, target: Path, root: Path = ROOT) -> int:
    """The study's finished runs' small files (and its own top-level files) as a gzipped tar; returns the runs."""
    runs = [run for run in sorted((root / study).glob("*")) if run.is_dir() and finished(run)]
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted((root / study).glob("*")):
            if path.is_file():
                tar.add(path, arcname=str(study / path.name))
        for run in runs:
            for path in sorted(run.rglob("*")):
                if path.is_file() and not LEFT_BEHIND & set(path.relative_to(run).parts):
                    tar.add(path, arcname=str(study / run.name / path.relative_to(run)))
    return len(runs)


def unpack(folder: Path, root: Path = ROOT) -> None:
    """Each ``<study>.tar.gz`` into benchmarks/studies/, leaving runs already finished here as they are."""
    for archive in sorted(folder.glob("*.tar.gz")):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            runs = {Path(*Path(m.name).parts[:4]) for m in members if len(Path(m.name).parts) > 4}
            new = [run for run in runs if not finished(root / run)]
            for run in new:
                shutil.rmtree(root / run, ignore_errors=True)  # a stopped run's partial files
            keep = [m for m in members if len(Path(m.name).parts) == 4 or Path(*Path(m.name).parts[:4]) in new]
            tar.extractall(root, members=keep, filter="data")
        print(f"{archive.name}: {len(new)} runs added, {len(runs) - len(new)} kept as they were here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GPU / "out", help="where the tars and the log go")
    parser.add_argument("--deadline", type=float, default=480, help="seconds for the runs")
    parser.add_argument("--parallel", type=int, default=12, help="runs at a time (12 on an H200: about 330 s a run)")
    parser.add_argument("--unpack", type=Path, help="here: add the runs of the tars in this folder to the studies")
    parser.add_argument("--prepare", action="store_true", help="here: write the payload and print the calls")
    args = parser.parse_args()
    if args.prepare:
        first, last = f"{PART1} --budget 1", "python3 benchmarks/gpu_studies.py --out $OUT --deadline 480"
        print(commands(prepare(), first, last))
        return
    if args.unpack:
        unpack(args.unpack)
        return
    started = time.monotonic()
    join_model(installed=True)
    args.out.mkdir(parents=True, exist_ok=True)
    left = args.deadline - (time.monotonic() - started)
    lane = [sys.executable, "benchmarks/studies/lanes.py", "gpu", "--parallel", str(args.parallel)]
    with (args.out / "gpu_studies.log").open("w") as log:
        subprocess.run([*lane, "--deadline", str(left)], cwd=ROOT, env=environment(python_path(True)), stdout=log,
                       stderr=subprocess.STDOUT)  # fmt: skip
    for study in STUDIES:
        print(f"{study}: {pack(study, args.out / f'{study.name}.tar.gz')} finished runs packed", flush=True)


if __name__ == "__main__":
    main()
