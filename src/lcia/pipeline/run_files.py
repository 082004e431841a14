"""The files of a run directory, written as the run goes (each JSON replaced atomically).

config.yaml          the resolved run config (every default filled in)
manifest.json        versions, git commit, seed, hardware, timings per stage and row
results.json         task names, stages, the (rows x tasks) matrix, metrics with intervals
predictions.jsonl    one line per (row, task, test example): prediction, references, score
task_metrics.jsonl   one line per (row, task) whose scorer reports task-level metrics (BLEU-4, METEOR, ...)
train_log.jsonl      one line per optimizer step: loss, learning rate, method scalars
<name>.jsonl         a method's own log (``ctx.emit``; the method's docstring names it)
<name>.json          a method's artifacts (JSON, or <name>.safetensors for tensors), also kept in each
                     adapters/stage-K/
adapters/stage-K/    the PEFT adapter(s) after stage K (adapter_config.json + safetensors; one
                     subfolder per adapter when a method keeps several)
checkpoints/         the last two checkpoints, to resume from (see lcia.pipeline.checkpoints)
tensorboard/, wandb/ live logs, when logging.tensorboard / logging.wandb ask for them
.lock                held by the process writing the run

A finished run of a study (``lcia compare`` / ``lcia sweep``) is packed: each ``<name>.jsonl`` becomes
``<name>.jsonl.gz`` (about a tenth of the size, byte-identical for identical lines), so a study's small
files can be committed; reading works either way, and a packed run resumed or extended is unpacked first.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import yaml
from safetensors.torch import save_file

from lcia.config import RunConfig, load_config
from lcia.core.files import disk_full, read_json, replace_atomic, write_atomic, write_json
from lcia.data.tasks import Task
from lcia.errors import LciaError, input_error
from lcia.evaluation.grid import Cell

CELL_FILES = ("predictions.jsonl", "task_metrics.jsonl")  # keyed by (row, task), not by training step


def metrics_file(predictions_file: str) -> str:
    """The task-level metrics file beside a predictions file (``eval/stage-2.predictions.jsonl`` too)."""
    return predictions_file.replace("predictions.jsonl", "task_metrics.jsonl")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def lock(self):
        """Hold an exclusive lock on the run directory: a second process writing the same run is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise LciaError(
                    f"{self.path}: in use by another lcia process (pid {handle.read().strip() or '?'})"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    def create(self, overwrite: bool = False) -> None:
        """Start a fresh run here: refuse to replace a run unless asked, then clear what a previous one left."""
        if (self.path / "manifest.json").exists() and not overwrite:
            raise LciaError(
                f"{self.path}: holds a run; resume it with --resume, choose another output_dir or pass --overwrite"
            )
        ours = (self.path / "manifest.json").exists()  # a previous run: its method logs and files go too
        for pattern in ("*.json*", "*.safetensors") if ours else ():
            for path in self.path.glob(pattern):
                path.unlink()
        for name in ("predictions.jsonl", "train_log.jsonl", "results.json"):
            (self.path / name).unlink(missing_ok=True)
        for folder in ("checkpoints", "adapters", "eval", "tensorboard", "wandb"):
            shutil.rmtree(self.path / folder, ignore_errors=True)

    def write_json(self, name: str, data) -> None:
        write_json(self.path / name, data)

    def write_artifact(self, name: str, data) -> None:
        """A method's artifact: JSON, or safetensors for a name ending in ``.safetensors`` (a dict of tensors)."""
        if not name.endswith(".safetensors"):
            return self.write_json(name, data)
        tensors = {k: v.detach().cpu().contiguous() for k, v in data.items()}
        replace_atomic(self.path / name, lambda tmp: save_file(tensors, tmp))

    def read_json(self, name: str):
        if not (self.path / name).exists():
            raise input_error(f"no {name}: not a run directory, or the run has not started", file=self.path)
        return read_json(self.path / name)

    def config(self) -> RunConfig:
        """The run's own config.yaml, its output_dir this directory: a run moved elsewhere continues where it lies."""
        return load_config(str(self.path / "config.yaml"), [f"output_dir={self.path}"])

    def write_config(self, config: dict) -> None:
        write_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def append(self, name: str, records: list[dict]) -> None:
        """Lines added at the end; a full disk may leave the last one half written, which readers skip and a
        resumed run drops (``keep_cells``, ``keep_train_log``)."""
        try:
            with open(self.path / name, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(record) + "\n" for record in records))
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.path / name, "its earlier lines are intact") from None
            raise

    def append_cell(self, cell: Cell, task: Task, name: str = "predictions.jsonl") -> None:
        """One line per test example of ``task``: prediction, references, score, answering adapter (and image);
        the scorer's task-level metrics, when it has any, as one line of the matching ``task_metrics.jsonl``."""
        if cell.metrics:
            self.append(metrics_file(name), [{"row": cell.row, "task": cell.task, "metrics": cell.metrics}])
        self.append(
            name,
            [
                {
                    "row": cell.row,
                    "task": cell.task,
                    "id": ex.id,
                    "prediction": p,
                    "references": list(ex.references),
                    "score": s,
                    "adapter": a,
                    **({"image": ex.image} if ex.image else {}),
                }
                for ex, p, s, a in zip(task.test, cell.predictions, cell.scores, cell.adapters)
            ],
        )

    def has(self, name: str) -> bool:
        """Whether the run has the JSON-lines file ``name``, plain or packed."""
        return (self.path / name).exists() or (self.path / f"{name}.gz").exists()

    def read_jsonl(self, name: str) -> list[dict]:
        # A crash can leave a last line half written: it is not a record.
        records, path = [], self.path / name
        opened = open(path, encoding="utf-8") if path.exists() or not self.has(name) else gzip.open(f"{path}.gz", "rt")
        with opened as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    if line.endswith("\n"):
                        raise
        return records

    def per_example_scores(self, tasks: list[str], rows: int) -> list[list[list[float]]]:
        """``scores[row][task]``: per-example scores, in test order, from predictions.jsonl."""
        scores = [[[] for _ in tasks] for _ in range(rows)]
        column = {name: i for i, name in enumerate(tasks)}
        for record in self.read_jsonl("predictions.jsonl"):
            scores[record["row"]][column[record["task"]]].append(record["score"])
        return scores

    def rewrite_jsonl(self, name: str, keep) -> None:
        """Keep the lines of ``name`` for which ``keep(record)`` holds (atomically)."""
        if (self.path / name).exists():
            kept = [r for r in self.read_jsonl(name) if keep(r)]
            write_atomic(self.path / name, "".join(json.dumps(r) + "\n" for r in kept))

    def keep_cells(self, matrix: list[list[float]], tasks: list[str]) -> None:
        """Drop predictions of cells not recorded in results.json's matrix (a row, or an extended run's new
        columns of a row, cut short by a crash): row r covers the first len(matrix[r]) tasks."""
        covered = {(r, task) for r, row in enumerate(matrix) for task in tasks[: len(row)]}
        for name in CELL_FILES:
            self.rewrite_jsonl(name, lambda record: (record["row"], record["task"]) in covered)

    def keep_train_log(self, checkpoint: dict | None) -> None:
        """Drop training-log lines (and the methods' own logs) past the checkpoint
        a resumed run continues from."""
        reached = (checkpoint["stage"], checkpoint["step"]) if checkpoint else (0, 0)
        for path in sorted(self.path.glob("*.jsonl")):
            if path.name not in CELL_FILES:
                self.rewrite_jsonl(path.name, lambda r: (r["stage"], r["step"]) <= reached)

    def repeat_row(self, row: int, tasks: list[str] | None = None) -> None:
        """Row ``row`` of a method that never trains: row 0's predictions (of ``tasks``; default: all), unchanged."""
        for name in CELL_FILES:
            if (self.path / name).exists():
                records = self.read_jsonl(name)
                repeated = [r for r in records if r["row"] == 0 and (tasks is None or r["task"] in tasks)]
                self.append(name, [{**r, "row": row} for r in repeated])

    def pack(self) -> None:
        """Gzip each JSON-lines file of a finished run (no timestamp in the header: the same lines, the same bytes)."""
        for path in sorted(self.path.glob("*.jsonl")):
            packed = gzip.compress(path.read_bytes(), mtime=0)
            replace_atomic(self.path / f"{path.name}.gz", lambda tmp: Path(tmp).write_bytes(packed))
            path.unlink()

    def unpack(self) -> None:
        """The plain JSON-lines files back, for a run that goes on writing them."""
        for packed in sorted(self.path.glob("*.jsonl.gz")):
            lines = gzip.decompress(packed.read_bytes())
            replace_atomic(packed.with_suffix(""), lambda tmp: Path(tmp).write_bytes(lines))
            packed.unlink()

    def adapter_dir(self, stage: int) -> Path:
        return self.path / "adapters" / f"stage-{stage}"
