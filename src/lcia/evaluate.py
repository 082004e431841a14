"""Evaluate a finished run's adapter (``lcia eval``): the saved run used again, on any stream."""

from __future__ import annotations

from peft import PeftModel

from lcia.checkpoint import refuse_pickles
from lcia.config import load_config
from lcia.data.streams import load_stream
from lcia.errors import input_error
from lcia.evaluation.grid import evaluate_task
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.run_dir import RunDir


def evaluate_run(
    run_dir: str, stage: int | None = None, stream: str | None = None, progress: bool = True
) -> dict[str, float]:
    """Scores of the adapter after ``stage`` (default: the last) on every task of ``stream`` (default: the run's).

    Writes ``eval/stage-K.json`` and ``eval/stage-K.predictions.jsonl`` into the run directory.
    """
    out = RunDir(run_dir)
    cfg = load_config(str(out.path / "config.yaml"))
    stages = (
        sorted(int(p.name.split("-")[1]) for p in (out.path / "adapters").glob("stage-*"))
        if (out.path / "adapters").exists()
        else []
    )
    if stage is None and stages:
        stage = stages[-1]
    if stage is not None and stage not in stages:
        raise input_error(f"no adapter for stage {stage} (saved: {stages or 'none'})", file=out.path / "adapters")
    tasks = load_stream(stream or cfg.stream, cfg.data.test_size, cfg.data.train_size, cfg.data.split_seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_base_model(cfg.model.name_or_path, cfg.model.dtype)
    if stage is not None:
        refuse_pickles(out.adapter_dir(stage))  # PEFT would fall back to a pickled adapter_model.bin
        model = PeftModel.from_pretrained(model, str(out.adapter_dir(stage)))
    model.eval()
    (out.path / "eval").mkdir(exist_ok=True)
    name = f"stage-{stage if stage is not None else 0}"
    eval_dir = RunDir(out.path / "eval")
    (eval_dir.path / f"{name}.predictions.jsonl").unlink(missing_ok=True)
    scores = {}
    for task in tasks:
        cell = evaluate_task(
            model,
            tokenizer,
            task,
            stage or 0,
            batch_size=cfg.evaluation.batch_size,
            max_length=cfg.evaluation.max_length,
            progress=progress,
        )
        eval_dir.append_cell(cell, task, f"{name}.predictions.jsonl")
        scores[task.name] = round(cell.score, 4)
    eval_dir.write_json(f"{name}.json", {"stage": stage, "stream": stream or cfg.stream, "scores": scores})
    return scores
