"""The stream run: row 0, then for each stage train -> save -> evaluate, as named steps.

    open          read, check and tokenise the stream; create (or cut back) the run directory; load the
                  model (``Session``); restore the newest intact checkpoint: the one place a checkpoint is
                  restored
    evaluate_row  every task's test set with the current model: one row of the matrix, future tasks included
    train_stage   the training loop on the stage's examples, with the method's hooks
    save_stage    the stage-end checkpoint, the stage's adapters and the method's artifacts
    finish        metrics with bootstrap intervals, the method's summary, routing accuracy -> results.json

All data is read, validated and tokenised before the model is loaded, so bad input fails in seconds, not
hours in. ``resume=True`` continues a stopped run from its newest intact checkpoint and the rows already in
results.json; the finished matrix equals that of an uninterrupted run. A run directory moved to another
path or machine resumes from there.
"""

from __future__ import annotations

import signal
import time
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from lcia.config import RunConfig
from lcia.core import distributed
from lcia.core.files import DiskFull
from lcia.core.precision import resolve_precision
from lcia.data.images import uses_images
from lcia.data.tasks import Task
from lcia.errors import Interrupted
from lcia.evaluation.metrics import bootstrap_metrics, compute_metrics
from lcia.evaluation.routing import routing_accuracy
from lcia.methods import build_method
from lcia.pipeline.checkpoints import Checkpoints
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import Session, run_tasks, saved_session
from lcia.reporting.loggers import RunLoggers
from lcia.reporting.manifest import git_commit, hardware, manifest
from lcia.training.loop import Stage, StageEvents, check_examples, train_stage


@dataclass
class RunResult:
    run_dir: Path
    tasks: list[str]
    matrix: list[list[float]]
    metrics: dict


def run(
    cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True, log=print
) -> RunResult:
    """Train and evaluate the stream of ``cfg``; the whole grid, metrics and predictions in its run directory."""
    try:
        stream = StreamRun(cfg, progress=progress, log=log)
        with stream.opened(overwrite=overwrite, resume=resume):
            if not stream.matrix:
                stream.evaluate_row(0)
            stream.complete_rows()  # an extended run: its new tasks' cells in the rows done before
            for stage in range(1, len(stream.stages) + 1):
                if stream.needs_training(stage):
                    stream.save_stage(stage, stream.train_stage(stage))
                if len(stream.matrix) <= stage:
                    stream.evaluate_row(stage)
            return stream.finish()
    except (Interrupted, DiskFull) as err:
        raise type(err)(f"{err}; continue with: lcia run --resume {cfg.run_dir()}") from None


def results_record(tasks: list[Task], stages: list[list[Task]], matrix: list[list[float]]) -> dict:
    return {
        "tasks": [t.name for t in tasks],
        "stages": [[t.name for t in stage] for stage in stages],
        "matrix": matrix,
        "n_test": {t.name: len(t.test) for t in tasks},
        "majority_baseline": {t.name: round(t.majority_baseline(), 4) for t in tasks},
        "families": {t.name: t.family for t in tasks},
    }


def metrics_of(out: RunDir, tasks: list[str], matrix: list[list[float]], resamples: int) -> dict:
    """The metrics of a matrix and, with ``resamples``, their paired-bootstrap 95% intervals.

    The bootstrap seed is fixed, so ``lcia metrics`` reproduces the intervals a run wrote.
    """
    record = {"metrics": compute_metrics(matrix)}
    if resamples:
        scores = out.per_example_scores(tasks, len(matrix))
        record["intervals"] = bootstrap_metrics(scores, n_resamples=resamples, seed=0)
    return record


@contextmanager
def stop_on_signals():
    """SIGINT / SIGTERM set a flag that the loops check at safe points (after a step, between tasks)."""
    received: list[int] = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StreamRun:
    """One run of a stream, step by step; ``run`` above drives it. Only rank 0 of a multi-process launch
    writes the run directory and logs; every rank reads it."""

    def __init__(self, cfg: RunConfig, *, progress: bool, log):
        self.cfg, self.started = cfg, time.perf_counter()
        state = distributed.process_state()
        self.main = state.is_main_process
        self.progress, self.log = (progress, log) if self.main else (False, lambda *_: None)
        self.out, self.checkpoints = RunDir(cfg.run_dir()), Checkpoints(Path(cfg.run_dir()))
        self.tasks = run_tasks(cfg)
        method = build_method(cfg.method.name, cfg.method.params)
        distributed.refuse_unsupported(state, method, quantized=cfg.model.quantization != "none")
        images = uses_images(ex for t in self.tasks for ex in t.train)
        self.session = Session.open(cfg, method, images=images)
        self.stages = method.stages(self.tasks)
        self.features = self._encode()
        # global step at the end of each stage, for the live logs
        per_stage = [cfg.training.stage_steps(stage) for stage in self.stages]
        self.ends = [sum(per_stage[:k]) for k in range(len(self.stages) + 1)]
        self.matrix: list[list[float]] = []
        self.record: dict = {}  # the manifest
        self.latest: dict | None = None  # the checkpoint resumed from
        self.resume = None  # its loop state, when it lies inside a stage

    def _encode(self) -> dict:
        """Every task's training examples tokenised, with a warning per task where prompts were cut."""
        encoded = {ex: self.session.encode(ex) for task in self.tasks for ex in task.train}
        max_length = self.cfg.training.max_length
        for task in self.tasks:
            cut = sum(encoded[ex].truncated for ex in task.train)
            if cut:
                self.log(
                    f"warning: task {task.name}: {cut} of {len(task.train)} training examples exceed "
                    f"training.max_length ({max_length} tokens): their prompts keep head and tail"
                )
        return encoded

    # --- open ----------------------------------------------------------------------------------------
    @contextmanager
    def opened(self, *, overwrite: bool, resume: bool):
        with self.out.lock() if self.main else nullcontext(), stop_on_signals() as self.should_stop:
            self._open(overwrite=overwrite, resume=resume)
            resumed_at = self.ends[self.latest["stage"] - 1] + self.latest["step"] if self.latest else None
            with closing(RunLoggers(self.cfg, self.out.path, resumed_at, enabled=self.main)) as self.loggers:
                yield self

    def _open(self, *, overwrite: bool, resume: bool) -> None:
        latest = self._prepare_run_dir(overwrite=overwrite, resume=resume) if self.main else None
        distributed.barrier()
        self.record = self.out.read_json("manifest.json")
        # wall time of the run's earlier processes (a stopped run resumed, a finished one extended), as last saved
        self.earlier_seconds = self.record["timings"].get("total_seconds", 0.0)
        if resume and (self.out.path / "results.json").exists():
            self.matrix = self.out.read_json("results.json")["matrix"]
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        set_seed(self.cfg.seed)
        self.session.load_for_training(self.record["precision"], self.progress)  # the precision it started in
        if distributed.is_sharded(self.session.model):
            share = round(distributed.sharded_share(self.session.model), 4)
            self.record["distributed"] |= {"sharding": "FSDP2 (the base's frozen weights)", "sharded_weights": share}
        if self.session.vision is not None:
            self.record.setdefault("vision", self.session.vision)
        if resume:  # rank 0 found it (setting damaged checkpoints aside) before the barrier
            self.latest = latest if self.main else self.checkpoints.latest(log=self.log)
        if self.latest is not None:  # weights and method state (a stage's examples may depend on it)
            self.resume = self.checkpoints.restore(self.latest, self.session.model, self.session.method)

    def _prepare_run_dir(self, *, overwrite: bool, resume: bool) -> dict | None:
        """Create the run directory, or cut a stopped one back to its last row and newest intact checkpoint
        (returned)."""
        out, latest = self.out, None
        if resume:
            out.unpack()  # a packed study run (resumed, extended) writes its logs on
            record = out.read_json("manifest.json")
            started_with = record.get("distributed", {"processes": 1})["processes"]
            if started_with != distributed.world_size():
                self.log(
                    f"note: resumed on {distributed.world_size()} processes, started on {started_with}: the same "
                    "batches, but a resumed stage's LoRA dropout masks differ from an uninterrupted run's"
                )
            matrix = out.read_json("results.json")["matrix"] if (out.path / "results.json").exists() else []
            out.keep_cells(matrix, [t.name for t in self.tasks])
            rows = len(matrix)
            latest = self.checkpoints.latest(log=self.log)
            out.keep_train_log(latest)
            done = f"checkpoint at stage {latest['stage']} step {latest['step']}" if latest else "no checkpoint"
            self.log(f"resuming {out.path}: {rows} rows done, {done}")
            # where each part ran: a study continued on another machine, a run moved from a CPU to a GPU
            where = {"rows_done": rows, "checkpoint": latest and {k: latest[k] for k in ("stage", "step")}}
            record.setdefault("resumed", []).append(where | {"hardware": hardware(), "git_commit": git_commit()})
        else:
            out.create(overwrite)
            out.write_config(self.cfg.model_dump(mode="json"))
            record = manifest(self.cfg.seed)
            record["timings"] = {"stages": [], "rows": []}
            state = distributed.process_state()
            record["distributed"] = {"processes": state.num_processes, "type": state.distributed_type.value}
        # A resumed run keeps the precision it started in, whatever `auto` would pick on this machine.
        record.setdefault("precision", resolve_precision(self.cfg.training.precision))
        out.write_json("manifest.json", record)
        return latest

    # --- the steps -----------------------------------------------------------------------------------
    def evaluate_row(self, row: int) -> None:
        """Row ``row`` of the matrix; a method that never trains repeats the row before (greedy decoding)."""
        started = time.perf_counter()
        if row and not self.session.method.capabilities.trains:
            scores = list(self.matrix[row - 1])
            if self.main:
                self.out.repeat_row(row)
        else:
            keep = (lambda cell, task: self.out.append_cell(cell, task)) if self.main else None
            scores = self.session.evaluate_row(
                self.tasks, row, on_cell=keep, should_stop=self.should_stop, progress=self.progress
            )
            self.record["timings"]["rows"].append(round(time.perf_counter() - started, 2))
            self.log(f"row {row}: " + "  ".join(f"{t.name}={s:.3f}" for t, s in zip(self.tasks, scores)))
            self.loggers.scalars({f"score/{t.name}": s for t, s in zip(self.tasks, scores)}, self.ends[row])
        self.matrix.append(scores)
        if self.main:
            self.out.write_json("results.json", results_record(self.tasks, self.stages, self.matrix))
        self._save_manifest()

    def _save_manifest(self) -> None:
        """The manifest, its ``total_seconds`` this process's wall time so far plus the earlier processes' as they
        last saved it (what a stopped process spent after its last row or checkpoint is lost with its unsaved work)."""
        elapsed = time.perf_counter() - self.started
        self.record["timings"]["total_seconds"] = round(self.earlier_seconds + elapsed, 2)
        if self.main:
            self.out.write_json("manifest.json", self.record)

    def complete_rows(self) -> None:
        """Cells of earlier rows that lack the tasks an extension added, answered by the run's saved stages
        (row r by the adapters after stage r, routed by the method as then), as in one run over the whole stream."""
        for row, scores in enumerate(self.matrix):
            missing = self.tasks[len(scores) :]
            if missing:
                added = self._saved_row(row, missing)
                scores += added
                self.log(f"row {row}, new tasks: " + "  ".join(f"{t.name}={s:.3f}" for t, s in zip(missing, added)))
                if self.main:
                    self.out.write_json("results.json", results_record(self.tasks, self.stages, self.matrix))

    def _saved_row(self, row: int, tasks: list[Task]) -> list[float]:
        if row and not self.session.method.capabilities.trains:  # a method that never trains: row 0 again
            if self.main:
                self.out.repeat_row(row, [t.name for t in tasks])
            return self.matrix[0][-len(tasks) :]
        saved = saved_session(self.cfg, self.out, row or None, self.record)
        keep = (lambda cell, task: self.out.append_cell(cell, task)) if self.main else None
        return saved.evaluate_row(tasks, row, on_cell=keep, should_stop=self.should_stop, progress=self.progress)

    def needs_training(self, stage: int) -> bool:
        """Whether ``stage`` still trains: not for a method that never trains, nor when a checkpoint ends it."""
        latest = self.latest
        done = latest is not None and (
            stage < latest["stage"] or (stage == latest["stage"] and latest["step"] == latest["steps"])
        )
        return self.session.method.capabilities.trains and not done

    def train_stage(self, stage: int) -> dict:
        """Train stage ``stage`` (continuing it from the checkpoint resumed from, if that lies inside it)."""
        session, tasks = self.session, self.stages[stage - 1]
        examples = session.method.train_examples(tasks)
        check_examples(session.method, tasks, examples)
        features = [self.features.get(ex) or session.encode(ex) for ex in examples]
        resume = self.resume if self.latest is not None and self.latest["stage"] == stage else None
        events = StageEvents(should_stop=self.should_stop, progress=self.progress, save=self._checkpoint_in_stage)
        if self.main:
            events.on_step = lambda record: self._log_step(record, self.ends[stage - 1])
            events.emit = lambda name, record: self.out.append(f"{name}.jsonl", [record])
        steps = self.cfg.training.stage_steps(tasks)
        inputs = Stage(stage, tasks, features, steps)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        stats = train_stage(session.learner, inputs, self.cfg.training, self.cfg.seed, resume=resume, events=events)
        if torch.cuda.is_available():  # what a stage needs on this GPU (memory per task on the cluster page)
            stats["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.log(
            f"stage {stage} ({'+'.join(t.name for t in tasks)}): {stats['steps'] - stats['resumed_at_step']} steps "
            f"in {stats['seconds']:.0f}s, final loss {stats['final_loss']:.3f}"
            + "".join(f", {k} {v}" for k, v in stats.get("method", {}).items())
        )
        return stats

    def _checkpoint(self, progress: dict, optimizer=None, scheduler=None) -> None:
        self.checkpoints.save(progress, self.session.model, self.session.method, optimizer, scheduler)

    def _checkpoint_in_stage(self, progress: dict, optimizer=None, scheduler=None) -> None:
        """A mid-stage checkpoint, then the wall time so far: a resumed run keeps those steps, so it counts them."""
        self._checkpoint(progress, optimizer, scheduler)
        self._save_manifest()

    def _log_step(self, record: dict, offset: int) -> None:
        self.out.append("train_log.jsonl", [record])
        scalars = {k: v for k, v in record.items() if k not in ("stage", "step", "skipped")}
        self.loggers.scalars({f"train/{k}": v for k, v in scalars.items()}, offset + record["step"])

    def save_stage(self, stage: int, stats: dict) -> None:
        """The stage-end checkpoint, then the stage's adapters (plain PEFT layout) with the method's artifacts, then
        the stage's timings in the manifest."""
        steps = stats["steps"]
        self._checkpoint({"stage": stage, "step": steps, "steps": steps, "skipped_steps": stats["skipped_steps"]})
        if self.main:
            folder = self.out.adapter_dir(stage)
            self.session.model.save_pretrained(folder, safe_serialization=True)
            for name, data in self.session.method.artifacts().items():  # beside the run and the stage's adapters
                self.out.write_artifact(name, data)
                RunDir(folder).write_artifact(name, data)
        tasks = [t.name for t in self.stages[stage - 1]]
        self.record["timings"]["stages"].append({"stage": stage, "tasks": tasks, **stats})
        self._save_manifest()  # kept should the row after it be stopped: a resumed run does not train it again

    def finish(self) -> RunResult:
        """Metrics with intervals, the method's summary and routing accuracy, written to results.json."""
        distributed.barrier()  # rank 0 has written every prediction that the metrics read
        method, names = self.session.method, [t.name for t in self.tasks]
        results = results_record(self.tasks, self.stages, self.matrix) | metrics_of(
            self.out, names, self.matrix, self.cfg.evaluation.bootstrap
        )
        summary = method.summary()
        if summary:
            results["method"] = summary
        adapters = method.task_adapters()
        if adapters:
            routing = routing_accuracy(self.out.read_jsonl("predictions.jsonl"), adapters, results["stages"])
            results["routing"] = routing | {"task_adapters": adapters}
        metrics = {f"metrics/{k}": v for k, v in results["metrics"].items() if v is not None}
        self.loggers.scalars(metrics, self.ends[-1])
        if self.main:
            self.out.write_json("results.json", results)
        self._save_manifest()
        distributed.barrier()  # every rank returns once the run's files are complete
        return RunResult(self.out.path, results["tasks"], self.matrix, results["metrics"])
