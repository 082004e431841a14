"""`accelerate launch` with 2 CPU processes (gloo DDP) gives the 1-process run's results.

Same config, same global batch: the 2-process run splits each batch over the ranks and the evaluation
over the test sets. What may differ is float summation order (gradients averaged across ranks,
padding to another width), so weights and losses are compared within a tolerance and the matrix and
every prediction exactly (tests/two_processes.py). Every case runs in one launch, one after another, so the
processes start once. A run stopped by SIGTERM (a preemption) resumes to the same results.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from two_processes import (
    COMPARED_STAGES,
    TOLERANCE,
    assert_each,
    assert_same_run,
    launch,
    launch_runs,
    method_cases,
    one_process,
    stop_with_sigterm,
    two_task_config,
)

pytestmark = pytest.mark.slow  # every method trained in 2 processes and in 1 (about 4 minutes); run in CI


@pytest.fixture
def config_file(tiny_model_dir, tmp_path):
    return two_task_config(tiny_model_dir, tmp_path)


CASES = {  # test id: config overrides
    # Every built-in method that trains and declares DDP support. Their DDP paths differ: new adapters per stage
    # (grouping, lcia, olora), a teacher forward (lwf), routers (moelora), the EMA, gradient pulls (ewc, l2), a
    # buffer (replay), one joint stage (multitask).
    **method_cases(lambda capabilities: capabilities.ddp),
    # 17 training examples in batches of 2: each epoch ends on a batch of 1, which leaves rank 1
    # without an example (it trains on one with weight 0); accumulation skips the all-reduce between.
    "seq-lora-uneven-batches": ["method.name=seq-lora", "training.batch_size=2", "training.grad_accum=2"],
    "dema-nf4": ["method.name=dema", "model.quantization=nf4"],  # a 4-bit base model (bitsandbytes) under DDP
}


def test_every_case_in_two_processes_gives_the_one_process_run(config_file, tmp_path):
    done = launch_runs(config_file, CASES, tmp_path / "two")
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert_each(CASES, lambda case: _assert_case(case, config_file, tmp_path))


def _assert_case(case: str, config_file, tmp_path) -> None:
    ours, reference = tmp_path / "two" / case, one_process(config_file, CASES[case], tmp_path / "one" / case)
    kind = "nf4" if "nf4" in case else "drifts" if case == "seq-lora-uneven-batches" else "fp32"
    tolerance, stages = TOLERANCE[kind], COMPARED_STAGES[kind]
    assert_same_run(ours, reference, tolerance, stages)
    manifest = json.loads((ours / "manifest.json").read_text())
    assert manifest["distributed"] == {"processes": 2, "type": "MULTI_CPU"}
    if case.startswith("dema"):  # every rank used the coefficient of the 1-process run
        records = lambda run: [  # noqa: E731
            r["coefficient"]
            for r in map(json.loads, (run / "ema_coefficients.jsonl").open())
            if stages is None or r["stage"] in stages
        ]
        ours_records, theirs = records(ours), records(reference)
        assert ours_records and [sorted(c) for c in ours_records] == [sorted(c) for c in theirs]
        for a, b in zip(ours_records, theirs):
            assert list(a.values()) == pytest.approx(list(b.values()), rel=tolerance[2])


def test_a_preempted_two_process_run_resumes_to_the_same_results(config_file, tmp_path):
    reference = one_process(config_file, ["method.name=dema"], tmp_path / "one")
    out = tmp_path / "two"
    stop_with_sigterm(launch(str(config_file), "--set", "method.name=dema", "--set", f"output_dir={out}"), out, 3)
    stopped_at = json.loads((out / "results.json").read_text())["matrix"] if (out / "results.json").exists() else []
    assert len(stopped_at) < 3

    resumed = subprocess.run(launch("--resume", str(out)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert resumed.stdout.count("written to") == 1  # rank 0 reports, rank 1 stays quiet
    assert_same_run(out, reference)
    assert list((out / "checkpoints").glob("ckpt-*"))


def test_two_processes_give_the_one_process_run_on_images(tiny_model_dir, tmp_path, monkeypatch):
    """The packaged vision-language model under DDP: each rank encodes its share's images, the projector's
    gradient is averaged like LoRA's, and the pre-aligned projector is trained once (rank 0) and shared."""
    from PIL import Image

    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))  # the launched processes inherit it
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    records = []
    for i in range(20):
        color = list(colors)[i % 2]
        Image.new("RGB", (16, 16), colors[color]).save(tmp_path / f"{i}.png")
        question = {"from": "human", "value": "<image>\nWhat color is it?"}
        records.append(
            {"id": str(i), "image": f"{i}.png", "conversations": [question, {"from": "gpt", "value": color}]}
        )
    (tmp_path / "colors.json").write_text(json.dumps(records))
    (tmp_path / "stream.yaml").write_text(
        "tasks:\n  - {name: colors, train: colors.json, scorer: vqa, max_new_tokens: 2}\n"
        "  - {name: again, train: colors.json, instruction: Name the colour., scorer: vqa, max_new_tokens: 2}\n"
    )
    (tmp_path / "run.yaml").write_text(
        f"stream: {tmp_path / 'stream.yaml'}\n"
        f"model: {{name_or_path: {tiny_model_dir}}}\n"
        "method: {name: dema}\n"
        "training: {steps: 6, batch_size: 4, lr: 0.01, precision: fp32}\n"
        "data: {test_size: 5}\n"
        "evaluation: {bootstrap: 0, batch_size: 2}\n"
        "lora: {r: 4}\n"
        "vision: {prealign_steps: 2, prealign_batch_size: 4}\n"
        "threads: 1\n"  # both runs on one thread, however pytest runs (other thread counts sum in other orders)
    )
    config = tmp_path / "run.yaml"
    reference = one_process(config, [], tmp_path / "one")
    done = subprocess.run(launch(str(config), f"--set=output_dir={tmp_path / 'two'}"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(tmp_path / "two", reference)
