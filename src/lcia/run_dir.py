"""The files of a run directory, written as the run goes (each JSON replaced atomically).

    config.yaml          the resolved run config (every default filled in)
    manifest.json        versions, git commit, seed, hardware, timings per stage and row
    results.json         task names, stages, the (rows x tasks) matrix, metrics with intervals
    predictions.jsonl    one line per (row, task, test example): prediction, references, score
    train_log.jsonl      one line per optimizer step: loss, learning rate, method scalars
    adapters/stage-K/    the PEFT adapter after stage K (adapter_config.json + safetensors)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from lcia.errors import LciaError, input_error
from lcia.evaluation.grid import Cell


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary sibling, then rename: a crash never leaves half a file behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def create(self, overwrite: bool = False) -> None:
        if (self.path / "results.json").exists() and not overwrite:
            raise LciaError(f"{self.path}: holds a finished or started run; choose another output_dir or pass --overwrite")
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("predictions.jsonl", "train_log.jsonl"):
            (self.path / name).unlink(missing_ok=True)

    def write_json(self, name: str, data) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2) + "\n")

    def read_json(self, name: str):
        path = self.path / name
        if not path.exists():
            raise input_error(f"no {name}: not a run directory, or the run has not started", file=self.path)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise input_error(f"invalid JSON: {err.msg}", file=path, line=err.lineno) from None

    def write_config(self, config: dict) -> None:
        write_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def append(self, name: str, records: list[dict]) -> None:
        with open(self.path / name, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")

    def append_cell(self, cell: Cell, test_ids: list[str], references: list[tuple[str, ...]]) -> None:
        self.append("predictions.jsonl", [
            {"row": cell.row, "task": cell.task, "id": i, "prediction": p, "references": list(r), "score": s, "adapter": a}
            for i, p, r, s, a in zip(test_ids, cell.predictions, references, cell.scores, cell.adapters)
        ])

    def read_jsonl(self, name: str) -> list[dict]:
        with open(self.path / name, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def per_example_scores(self, tasks: list[str], rows: int) -> list[list[list[float]]]:
        """``scores[row][task]``: per-example scores, in test order, from predictions.jsonl."""
        scores = [[[] for _ in tasks] for _ in range(rows)]
        column = {name: i for i, name in enumerate(tasks)}
        for record in self.read_jsonl("predictions.jsonl"):
            scores[record["row"]][column[record["task"]]].append(record["score"])
        return scores

    def adapter_dir(self, stage: int) -> Path:
        return self.path / "adapters" / f"stage-{stage}"
