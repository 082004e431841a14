"""Evaluate a finished run's adapters (``lcia eval``): the saved run used again, on any stream."""

from __future__ import annotations

import torch

from lcia.core.precision import inference_autocast
from lcia.data.streams import load_stream
from lcia.evaluation.grid import evaluate_task
from lcia.pipeline.run_files import RunDir
from lcia.trained_run import TrainedRun


def evaluate_run(
    run_dir: str, stage: int | None = None, stream: str | None = None, progress: bool = True
) -> dict[str, float]:
    """Scores of the adapters after ``stage`` (default: the last) on every task of ``stream`` (default: the run's).

    Test instances are routed as in the run (by the stage's codebook, when the method keeps groups).
    Writes ``eval/stage-K.json`` and ``eval/stage-K.predictions.jsonl`` into the run directory.
    """
    trained = TrainedRun(run_dir, stage)
    cfg = trained.cfg
    tasks = load_stream(stream or cfg.stream, cfg.data.test_size, cfg.data.train_size, cfg.data.split_seed)
    (trained.out.path / "eval").mkdir(exist_ok=True)
    name = f"stage-{trained.stage or 0}"
    eval_dir = RunDir(trained.out.path / "eval")
    (eval_dir.path / f"{name}.predictions.jsonl").unlink(missing_ok=True)
    scores = {}
    with inference_autocast(trained.model, trained.precision, torch.device("cpu")):  # once for every task
        for task in tasks:
            cell = evaluate_task(
                trained.model,
                trained.tokenizer,
                task,
                trained.stage or 0,
                route=trained.route_example,
                batch_size=cfg.evaluation.batch_size,
                max_length=cfg.evaluation.max_length,
                progress=progress,
                images=trained.images,
                precision=trained.precision,
            )
            eval_dir.append_cell(cell, task, f"{name}.predictions.jsonl")
            scores[task.name] = round(cell.score, 4)
    eval_dir.write_json(f"{name}.json", {"stage": trained.stage, "stream": stream or cfg.stream, "scores": scores})
    return scores
