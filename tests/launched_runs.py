"""Several runs in one multi-process launch, so a test starts its processes (and imports) once for all of them:

    accelerate launch --num_processes 2 tests/launched_runs.py RUNS.json

RUNS.json: ``{"config": path, "out": folder, "runs": {name: [override, ...]}}``; run ``name`` is written to
``out/name``. A run that fails stops the launch (its traceback names it).
"""

import json
import sys
from pathlib import Path

from lcia.config import load_config
from lcia.pipeline.stream_run import run

spec = json.loads(Path(sys.argv[1]).read_text())
for name, overrides in spec["runs"].items():
    print(f"launched run {name}", flush=True)
    cfg = load_config(spec["config"], [*overrides, f"output_dir={Path(spec['out']) / name}"])
    run(cfg, progress=False, log=lambda *_: None)
