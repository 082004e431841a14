"""The stream as a sequence of cells: row 0, then for each stage: train, checkpoint, evaluate.

    row 0                 evaluate the untrained model on every task
    for each stage k:     train (method hooks around the loop) -> checkpoint + adapter -> row k
    at the end            metrics with bootstrap intervals (and routing accuracy) -> results.json

Every task is evaluated in every row, future tasks included, so the matrix is complete. All data is
read, validated and tokenised before the model is loaded, so bad input fails in seconds, not hours in.
``resume=True`` continues a stopped run from its last checkpoint and the rows already in results.json;
the finished matrix equals that of an uninterrupted run.
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
from lcia.core.precision import accelerator_for, inference_autocast, resolve_precision, set_attention
from lcia.data.images import uses_images
from lcia.data.prompts import encode_for_training
from lcia.data.streams import load_stream, order_tasks
from lcia.data.tasks import Task
from lcia.errors import Interrupted
from lcia.evaluation.grid import evaluate_task
from lcia.evaluation.metrics import bootstrap_metrics, compute_metrics
from lcia.evaluation.routing import routing_accuracy
from lcia.methods import build_method
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.models.prealign import prealign
from lcia.models.vision import ENCODER, EncoderFeatures, image_slots, load_vision_language_model, lora_targets
from lcia.pipeline.checkpoints import Checkpoints
from lcia.pipeline.run_files import RunDir
from lcia.reporting.loggers import RunLoggers
from lcia.reporting.manifest import manifest
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


def run(
    cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True, log=print
) -> RunResult:
    try:
        return _run(cfg, overwrite=overwrite, resume=resume, progress=progress, log=log)
    except Interrupted as err:
        raise Interrupted(f"{err}; continue with: lcia run --resume {cfg.run_dir()}") from None


def _open_run_dir(out: RunDir, cfg: RunConfig, processes: dict, *, overwrite: bool, resume: bool, log) -> None:
    """Create the run directory, or cut a stopped one back to its last row and checkpoint."""
    if resume:
        record = out.read_json("manifest.json")
        started_with = record.get("distributed", {"processes": 1})["processes"]
        if started_with != processes["processes"]:
            log(
                f"note: resumed on {processes['processes']} processes, started on {started_with}: the same batches, "
                "but a resumed stage's LoRA dropout masks differ from an uninterrupted run's"
            )
        rows = len(out.read_json("results.json")["matrix"]) if (out.path / "results.json").exists() else 0
        out.keep_rows(rows)
        latest = Checkpoints(out.path).latest()
        out.keep_train_log(latest)
        log(
            f"resuming {out.path}: {rows} rows done, "
            + (f"checkpoint at stage {latest['stage']} step {latest['step']}" if latest else "no checkpoint")
        )
    else:
        out.create(overwrite)
        out.write_config(cfg.model_dump(mode="json"))
        record = manifest(cfg.seed)
        record["timings"] = {"stages": [], "rows": []}
        record["distributed"] = processes
    # A resumed run keeps the precision it started in, whatever `auto` would pick on this machine.
    record.setdefault("precision", resolve_precision(cfg.training.precision))
    out.write_json("manifest.json", record)


def vision_record(cfg: RunConfig, model, images, device, tokenizer, progress: bool) -> dict:
    """Pre-align the packaged model's projector (cached) and say what the run's vision side is."""
    if not isinstance(images, EncoderFeatures):
        return {"model": "hugging-face", "image_tokens": images.slots.count}
    vision = cfg.vision
    model.to(device)
    aligned = prealign(
        model,
        tokenizer,
        images,
        name_or_path=cfg.model.name_or_path,
        steps=vision.prealign_steps,
        batch_size=vision.prealign_batch_size,
        lr=vision.prealign_lr,
        seed=cfg.seed,
        max_length=cfg.training.max_length,
        progress=progress,
    )
    return {"model": "packaged", "encoder": ENCODER, "image_tokens": images.slots.count, "prealign": aligned}


def _run(cfg: RunConfig, *, overwrite: bool, resume: bool, progress: bool, log) -> RunResult:
    started = time.perf_counter()
    state = distributed.process_state()
    main = state.is_main_process  # only rank 0 writes the run directory and logs; every rank reads it
    if not main:
        log, progress = (lambda *_: None), False
    out = RunDir(cfg.run_dir())
    tasks = order_tasks(
        load_stream(cfg.stream, cfg.data.test_size, cfg.data.train_size, cfg.data.split_seed), cfg.data.order
    )
    method = build_method(cfg.method.name, cfg.method.params)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    # A stream with images runs on a vision-language model (lcia.models.vision); prompts then hold image tokens.
    slots = image_slots(cfg.model.name_or_path, tokenizer) if uses_images(ex for t in tasks for ex in t.train) else None
    encode = lambda ex: encode_for_training(tokenizer, ex, cfg.training.max_length, slots)  # noqa: E731
    encoded = {ex: encode(ex) for task in tasks for ex in task.train}
    for task in tasks:
        cut = sum(encoded[ex].truncated for ex in task.train)
        if cut:
            log(
                f"warning: task {task.name}: {cut} of {len(task.train)} training examples exceed training.max_length "
                f"({cfg.training.max_length} tokens): their prompts keep head and tail"
            )

    distributed.refuse_unsupported(state, method)
    with out.lock() if main else nullcontext():
        if main:
            processes = {"processes": state.num_processes, "type": state.distributed_type.value}
            _open_run_dir(out, cfg, processes, overwrite=overwrite, resume=resume, log=log)
        distributed.barrier()
        record = out.read_json("manifest.json")
        matrix = out.read_json("results.json")["matrix"] if resume and (out.path / "results.json").exists() else []
        precision = record["precision"]  # a resumed run keeps the one it started in
        checkpoints = Checkpoints(out.path)
        latest = checkpoints.latest() if resume else None

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        set_seed(cfg.seed)
        accelerator = accelerator_for(precision)
        images, targets, whole = None, cfg.lora.target_modules, None
        if slots is None:
            model = load_base_model(cfg.model.name_or_path, cfg.model.dtype, cfg.model.quantization, accelerator.device)
        else:
            model, images = load_vision_language_model(
                cfg.model.name_or_path, cfg.model.dtype, cfg.model.quantization, accelerator.device, slots, cfg.seed
            )
            record.setdefault("vision", vision_record(cfg, model, images, accelerator.device, tokenizer, progress))
            targets, whole = lora_targets(model, cfg.lora.target_modules)
        lora = lora_config(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, targets, whole)
        model = method.setup(model, lora).to(accelerator.device)
        set_attention(model, precision, accelerator.device)  # after the pre-alignment, which is fp32 and cached
        model.eval()
        stages = method.stages(tasks)

        ends = [cfg.training.steps * sum(map(len, stages[:k])) for k in range(len(stages) + 1)]  # global steps
        resumed_at = ends[latest["stage"] - 1] + latest["step"] if latest else None
        with closing(RunLoggers(cfg, out.path, resumed_at, enabled=main)) as loggers:
            with stop_on_signals() as should_stop:

                def evaluate_row(row: int) -> None:
                    t0, scores = time.perf_counter(), []
                    # bf16 weight copies made once for the row, not per task (generate_answers nests)
                    with inference_autocast(model, precision, accelerator.device):
                        for task in tasks:
                            if distributed.any_rank(should_stop()):
                                raise Interrupted(f"stopped while evaluating row {row}; it is redone on resume")
                            cell = evaluate_task(
                                model,
                                tokenizer,
                                task,
                                row,
                                route=method.route,
                                batch_size=cfg.evaluation.batch_size,
                                max_length=cfg.evaluation.max_length,
                                progress=progress,
                                images=images,
                                precision=precision,
                            )
                            if main:
                                out.append_cell(cell, task)
                            scores.append(round(cell.score, 4))
                    matrix.append(scores)
                    record["timings"]["rows"].append(round(time.perf_counter() - t0, 2))
                    if main:
                        out.write_json("results.json", results_record(tasks, stages, matrix))
                        out.write_json("manifest.json", record)
                    log(f"row {row}: " + "  ".join(f"{t.name}={s:.3f}" for t, s in zip(tasks, scores)))
                    loggers.scalars({f"score/{t.name}": s for t, s in zip(tasks, scores)}, ends[row])

                def on_step(record: dict, offset: int) -> None:
                    out.append("train_log.jsonl", [record])
                    scalars = {k: v for k, v in record.items() if k not in ("stage", "step", "skipped")}
                    loggers.scalars({f"train/{k}": v for k, v in scalars.items()}, offset + record["step"])

                if latest is not None:  # weights and method state (a stage's examples may depend on it, e.g. replay)
                    checkpoints.restore(latest, model, method)
                if not matrix:
                    evaluate_row(0)
                for stage, stage_tasks in enumerate(stages, start=1):
                    done = latest is not None and (
                        stage < latest["stage"] or (stage == latest["stage"] and latest["step"] == latest["steps"])
                    )
                    if method.capabilities.trains and not done:
                        mid_stage = latest if latest is not None and latest["stage"] == stage else None
                        examples = method.train_examples(stage_tasks)
                        features = [encoded.get(ex) or encode(ex) for ex in examples]
                        stats = train_stage(
                            model,
                            tokenizer,
                            method,
                            stage_tasks,
                            features,
                            stage=stage,
                            steps=cfg.training.steps * len(stage_tasks),
                            cfg=cfg.training,
                            seed=cfg.seed,
                            accelerator=accelerator,
                            checkpoints=checkpoints,
                            resume=mid_stage,
                            should_stop=should_stop,
                            on_step=(lambda r, offset=ends[stage - 1]: on_step(r, offset)) if main else None,
                            emit=(lambda name, r: out.append(f"{name}.jsonl", [r])) if main else None,
                            progress=progress,
                            images=images,
                        )
                        steps = cfg.training.steps * len(stage_tasks)
                        checkpoints.save(
                            {"stage": stage, "step": steps, "steps": steps, "skipped_steps": stats["skipped_steps"]},
                            model,
                            method,
                        )
                        if main:
                            model.save_pretrained(out.adapter_dir(stage), safe_serialization=True)
                            for name, data in method.artifacts().items():  # beside the run and the stage's adapters
                                out.write_artifact(name, data)
                                RunDir(out.adapter_dir(stage)).write_artifact(name, data)
                        record["timings"]["stages"].append(
                            {"stage": stage, "tasks": [t.name for t in stage_tasks], **stats}
                        )
                        trained = stats["steps"] - stats["resumed_at_step"]
                        log(
                            f"stage {stage} ({'+'.join(t.name for t in stage_tasks)}): {trained} steps "
                            f"in {stats['seconds']:.0f}s, final loss {stats['final_loss']:.3f}"
                            + "".join(f", {k} {v}" for k, v in stats.get("method", {}).items())
                        )
                    if len(matrix) > stage:
                        continue
                    if method.capabilities.trains:
                        evaluate_row(stage)
                    else:  # the model did not change: greedy decoding gives row 0 again
                        matrix.append(list(matrix[stage - 1]))
                        if main:
                            out.repeat_row(stage)
                            out.write_json("results.json", results_record(tasks, stages, matrix))

            distributed.barrier()  # rank 0 has written every prediction that the metrics read
            results = results_record(tasks, stages, matrix) | metrics_of(
                out, [t.name for t in tasks], matrix, cfg.evaluation.bootstrap
            )
            summary = method.summary()
            if summary:
                results["method"] = summary
            if method.task_adapters():
                results["routing"] = routing_accuracy(
                    out.read_jsonl("predictions.jsonl"), method.task_adapters(), results["stages"]
                )
            loggers.scalars({f"metrics/{k}": v for k, v in results["metrics"].items() if v is not None}, ends[-1])
            record["timings"]["total_seconds"] = round(
                record["timings"].get("total_seconds", 0) + time.perf_counter() - started, 2
            )
            if main:
                out.write_json("results.json", results)
                out.write_json("manifest.json", record)
    return RunResult(out.path, results["tasks"], matrix, results["metrics"])
