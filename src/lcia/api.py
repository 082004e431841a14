"""The Python API, for notebooks and scripts: the same functions the command line calls.

    import lcia

    run = lcia.run(training={"steps": 10}, output_dir="runs/nb")      # the demo config, 10 steps per task
    run = lcia.run("configs/ni-cit.yaml", method={"name": "lcia"})    # a config file, with overrides
    run.matrix_frame()                  # pandas: A[row][task], one row per stage
    run.metrics, run.intervals          # dicts, as in results.json
    run.predictions_frame()             # pandas: one line per (row, task, test example)
    answer = run.ask("Add the two numbers. Answer with the number only.", input="What is 12 plus 30?")
    answer.text, answer.adapter         # the answer, and the adapter the method routed it to
    run = run.extend("more-tasks.yaml")  # new tasks after the last stage (lcia extend)
    lcia.load("runs/nb").report()       # report.md, report.tex and figures/ in the run directory

``config`` is a YAML path, a ``RunConfig`` or None (the demo defaults); keyword arguments override its
keys, nested as in the YAML (``method={"name": "ewc", "params": {"lam": 1e5}}``) or dotted
(``**{"training.steps": 10}``). Errors are the same one-line ``LciaError`` as on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from lcia.core.runtime import offline_and_quiet

offline_and_quiet()

from lcia.config import RunConfig, leaves, load_config  # noqa: E402
from lcia.methods import Route  # noqa: E402
from lcia.pipeline.extend import extend_run  # noqa: E402
from lcia.pipeline.run_files import RunDir  # noqa: E402
from lcia.pipeline.session import Session, evaluate_saved, open_saved  # noqa: E402
from lcia.pipeline.stream_run import run as run_stream  # noqa: E402
from lcia.reporting.report import write_report  # noqa: E402


@dataclass
class Answer:
    text: str
    adapter: str | None  # None: the run's one adapter (or the base model) answered
    route: Route  # every candidate's score and the rule, as ``lcia route`` shows them


class Run:
    """A run directory: its results as Python objects and pandas frames, and the trained run as an assistant."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._sessions: dict[int | None, Session] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, method={self.config.method.name!r}, tasks={self.tasks})"

    @cached_property
    def config(self) -> RunConfig:
        return RunDir(self.path).config()

    @cached_property
    def results(self) -> dict:
        return RunDir(self.path).read_json("results.json")

    @property
    def tasks(self) -> list[str]:
        return self.results["tasks"]

    @property
    def matrix(self) -> list[list[float]]:
        """``matrix[j][i]``: the score on task i after stage j (row 0: before any training)."""
        return self.results["matrix"]

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.results["metrics"]

    @property
    def intervals(self) -> dict[str, list[float]]:
        """Each metric's 95% paired-bootstrap interval (empty when the run took none)."""
        return self.results.get("intervals", {})

    @property
    def predictions(self) -> list[dict]:
        return RunDir(self.path).read_jsonl("predictions.jsonl")

    def matrix_frame(self):
        import pandas as pd

        rows = ["before training"] + [f"after {'+'.join(stage)}" for stage in self.results["stages"]]
        return pd.DataFrame(self.matrix, index=rows[: len(self.matrix)], columns=self.tasks)

    def predictions_frame(self):
        import pandas as pd

        return pd.DataFrame(self.predictions)

    def ask(self, instruction: str, input: str = "", *, max_new_tokens: int = 64, image: str = "",
            stage: int | None = None) -> Answer:  # fmt: skip
        """The greedy answer of the adapter the run's method routes ``instruction`` to (after ``stage``, default
        the last); the model is loaded once per stage and kept."""
        if stage not in self._sessions:
            self._sessions[stage] = open_saved(self.path, stage)[0]
        route, text = self._sessions[stage].ask(instruction, input, max_new_tokens, image)
        return Answer(text, route.adapter, route)

    def evaluate(self, stage: int | None = None, stream: str | None = None, progress: bool = True) -> dict:
        """``lcia eval``: each task's score with the adapters after ``stage`` on ``stream`` (default: the run's)."""
        return evaluate_saved(str(self.path), stage, stream, progress)

    def extend(self, tasks_file: str | Path, *, progress: bool = True, log=print) -> Run:
        """``lcia extend``: train the tasks of ``tasks_file`` after the last stage; the grid grows both ways."""
        extend_run(self.path, tasks_file, progress=progress, log=log)
        return Run(self.path)

    def report(self, out: str | Path | None = None) -> Path:
        """``lcia report`` of this run alone (into its own directory by default); the path of report.md."""
        return write_report([self.path], out or self.path)


def run(config: str | Path | RunConfig | None = None, *, overwrite: bool = False, resume: bool = False,
        progress: bool = True, log=print, **overrides) -> Run:  # fmt: skip
    """Train and evaluate a stream (``lcia run``); returns the finished run."""
    if isinstance(config, RunConfig):  # its values, then the overrides over them
        values = {".".join(key): value for key, value in leaves(config.model_dump(mode="json"))}
        overrides, config = values | overrides, None
    cfg = load_config(str(config) if config is not None else None, updates=overrides)
    return Run(run_stream(cfg, overwrite=overwrite, resume=resume, progress=progress, log=log).run_dir)


def load(run_dir: str | Path) -> Run:
    """A run directory written by ``lcia run`` (finished or not)."""
    RunDir(run_dir).read_json("manifest.json")  # a one-line error if it is not a run directory
    return Run(run_dir)
