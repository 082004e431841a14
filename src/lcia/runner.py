"""The stream as a sequence of (stage, task) cells: train a stage, save its adapter, evaluate every task.

    row 0                 evaluate the untrained model on every task
    for each stage k:     train (method hooks around the loop) -> save adapter -> evaluate every task (row k)
    at the end            metrics with bootstrap intervals -> results.json, summary table

Every task is evaluated in every row, future tasks included, so the matrix is complete. All data is
read and validated before the model is loaded, so bad input fails in seconds, not hours in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import set_seed

from lcia.config import RunConfig
from lcia.data.streams import load_stream
from lcia.data.tasks import Task
from lcia.evaluation.grid import Cell, evaluate_task
from lcia.evaluation.metrics import bootstrap_metrics, compute_metrics
from lcia.methods import build_method
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.reporting.manifest import manifest
from lcia.run_dir import RunDir
from lcia.training.loop import train_stage


@dataclass
class RunResult:
    run_dir: Path
    tasks: list[str]
    matrix: list[list[float]]
    metrics: dict


def results_record(tasks: list[Task], stages: list[list[Task]], matrix: list[list[float]]) -> dict:
    return {
        "tasks": [t.name for t in tasks],
        "stages": [[t.name for t in stage] for stage in stages],
        "matrix": matrix,
        "n_test": {t.name: len(t.test) for t in tasks},
        "majority_baseline": {t.name: round(t.majority_baseline(), 4) for t in tasks},
        "families": {t.name: t.family for t in tasks},
    }


def run(cfg: RunConfig, *, overwrite: bool = False, progress: bool = True, log=print) -> RunResult:
    started = time.perf_counter()
    out = RunDir(cfg.run_dir())
    tasks = load_stream(cfg.stream, cfg.data.test_size, cfg.data.train_size, cfg.data.split_seed)
    method = build_method(cfg.method.name, cfg.method.params)
    out.create(overwrite)
    out.write_config(cfg.model_dump(mode="json"))
    record = manifest(cfg.seed)
    record["timings"] = {"stages": [], "rows": []}
    out.write_json("manifest.json", record)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    accelerator = Accelerator(mixed_precision="bf16" if cfg.training.precision == "bf16" else "no")
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_base_model(cfg.model.name_or_path, cfg.model.dtype)
    lora = lora_config(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
    model = method.setup(model, lora).to(accelerator.device)
    model.eval()

    stages = method.stages(tasks)
    matrix: list[list[float]] = []

    def evaluate_row(row: int) -> None:
        t0 = time.perf_counter()
        cells: list[Cell] = []
        for task in tasks:
            cell = evaluate_task(model, tokenizer, task, row, route=method.route,
                                 batch_size=cfg.evaluation.batch_size, max_length=cfg.evaluation.max_length, progress=progress)
            out.append_cell(cell, [ex.id for ex in task.test], [ex.references for ex in task.test])
            cells.append(cell)
        matrix.append([round(c.score, 4) for c in cells])
        record["timings"]["rows"].append(round(time.perf_counter() - t0, 2))
        out.write_json("results.json", results_record(tasks, stages, matrix))
        out.write_json("manifest.json", record)
        log(f"row {row}: " + "  ".join(f"{c.task}={c.score:.3f}" for c in cells))

    evaluate_row(0)
    for stage, stage_tasks in enumerate(stages, start=1):
        if method.capabilities.trains:
            stats = train_stage(
                model, tokenizer, method, stage_tasks, method.train_examples(stage_tasks),
                stage=stage, steps=cfg.training.steps * len(stage_tasks), cfg=cfg.training, seed=cfg.seed,
                accelerator=accelerator, on_step=lambda r: out.append("train_log.jsonl", [r]), progress=progress,
            )
            model.save_pretrained(out.adapter_dir(stage), safe_serialization=True)
            record["timings"]["stages"].append({"stage": stage, "tasks": [t.name for t in stage_tasks], **stats})
            log(f"stage {stage} ({'+'.join(t.name for t in stage_tasks)}): {stats['steps']} steps in {stats['seconds']:.0f}s, "
                f"final loss {stats['final_loss']:.3f}")
            evaluate_row(stage)
        else:  # the model did not change: greedy decoding gives row 0 again
            _repeat_row(out, tasks, matrix, stage)
            out.write_json("results.json", results_record(tasks, stages, matrix))

    results = results_record(tasks, stages, matrix)
    results["metrics"] = compute_metrics(matrix)
    if cfg.evaluation.bootstrap:
        scores = out.per_example_scores(results["tasks"], len(matrix))
        results["intervals"] = bootstrap_metrics(scores, n_resamples=cfg.evaluation.bootstrap, seed=cfg.seed)
    out.write_json("results.json", results)
    record["timings"]["total_seconds"] = round(time.perf_counter() - started, 2)
    out.write_json("manifest.json", record)
    return RunResult(out.path, results["tasks"], matrix, results["metrics"])


def _repeat_row(out: RunDir, tasks: list[Task], matrix: list[list[float]], row: int) -> None:
    """Row ``row`` of a method that never trains: the previous row's predictions, unchanged."""
    previous = [r for r in out.read_jsonl("predictions.jsonl") if r["row"] == row - 1]
    out.append("predictions.jsonl", [{**r, "row": row} for r in previous])
    matrix.append(list(matrix[row - 1]))
