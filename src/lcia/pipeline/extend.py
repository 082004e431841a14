"""``lcia extend RUN_DIR NEW_TASKS.yaml``: a finished run takes new tasks after its last stage.

The new tasks (a stream YAML file, as for ``lcia run``) join the run's config as an *extension*; the run then
resumes from its last checkpoint with its own method and settings (grouping reuses or adds a group, the
EMA continues, replay keeps its buffer). The grid grows both ways: the new tasks' cells of every earlier
row are answered by the saved stages (``StreamRun.complete_rows``), and the new rows cover every task. The
batches, seeds and method state are those one run over the longer stream would have had, so the extended
run's matrix and predictions equal that run's. A stopped extension continues with ``lcia run --resume``.

A method that trains every task in one stage (``multitask``'s upper bound) cannot be extended: its one stage
would have to be trained again.
"""

from __future__ import annotations

from pathlib import Path

from lcia.data.images import uses_images
from lcia.errors import LciaError, input_error
from lcia.methods import build_method
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import run_tasks
from lcia.pipeline.stream_run import RunResult, run


def extend_run(run_dir: str | Path, tasks_file: str | Path, *, progress: bool = True, log=print) -> RunResult:
    """Train the tasks of ``tasks_file`` after the finished run in ``run_dir`` and complete its grid."""
    out = RunDir(run_dir)
    cfg = out.config()
    results = out.read_json("results.json")
    if "metrics" not in results:
        raise input_error("not a finished run: finish it first with lcia run --resume", file=out.path)
    if not Path(tasks_file).is_file():
        raise input_error("file not found", file=tasks_file)
    extended = cfg.model_copy(update={"extensions": [*cfg.extensions, str(Path(tasks_file).resolve())]})
    new = check_extension(extended, results["tasks"])
    with out.lock():  # written before the run starts: a stopped extension resumes as any run
        out.write_config(extended.model_dump(mode="json"))
    log(f"extending {out.path} with {', '.join(new)}")
    return run(extended, resume=True, progress=progress, log=log)


def check_extension(extended, done: list[str]) -> list[str]:
    """The new tasks' names; a one-line error where the run cannot take them."""
    tasks = run_tasks(extended)  # reads and validates the new file: file:line errors
    names = [t.name for t in tasks]
    if names[: len(done)] != done:
        raise LciaError(f"the run's tasks {done} are not the start of the extended stream {names}")
    method = build_method(extended.method.name, extended.method.params)
    before = [[t.name for t in stage] for stage in method.stages(tasks[: len(done)])]
    after = [[t.name for t in stage] for stage in method.stages(tasks)]
    if after[: len(before)] != before:
        raise LciaError(
            f"method {method.name!r} trains the tasks together, so new tasks would change its finished stages: "
            "run it again over the longer stream instead"
        )
    images = [uses_images(ex for t in part for ex in t.train) for part in (tasks[: len(done)], tasks)]
    if images[0] != images[1]:
        raise LciaError("the new tasks and the run's tasks do not agree on images: a text run takes text tasks only")
    return names[len(done) :]
