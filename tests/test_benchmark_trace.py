"""The TRACE reader on a miniature copy in TRACE's layout (tests/benchmark_fixtures/trace.py): every task in TRACE's
order with its scorer, the prompt verbatim, subsets and caps, one-line errors for bad layouts, the GPU config, and
one end-to-end ``lcia run`` writing the full grid with TRACE's scorers."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from benchmark_fixtures.common import edit, run_on_fixture
from benchmark_fixtures.common import read as read_fixture
from benchmark_fixtures.trace import INSTRUCTIONS, make_trace

from lcia.benchmarks import load_benchmark
from lcia.benchmarks.trace import SCORERS, TASKS
from lcia.config import load_config
from lcia.errors import LciaError

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "configs" / "gpu" / "trace-llama-2-7b-chat.yaml"


@pytest.fixture
def trace(tmp_path):
    return make_trace(tmp_path / "LLM-CL-Benchmark_5000")


read = partial(read_fixture, "trace")


def test_every_task_is_read_in_traces_order_with_its_scorer(trace):
    tasks = read(trace)
    assert [t.name for t in tasks] == list(TASKS) == list(INSTRUCTIONS)
    assert [t.scorer for t in tasks] == [SCORERS[name] for name in TASKS]
    assert [t.scorer for t in tasks][2:5] == ["trace-rougeL", "trace-py150", "trace-scienceqa"]
    assert all(len(t.train) == 3 and len(t.test) == 3 and t.max_new_tokens == 512 for t in tasks)
    stance = tasks[0].test[0]
    record = json.loads((trace / "C-STANCE" / "test.json").read_text(encoding="utf-8"))[0]
    # The model sees TRACE's prompt verbatim; grouping compares the task's instruction.
    assert stance.messages == ({"role": "user", "content": record["prompt"]},)
    instruction = INSTRUCTIONS["C-STANCE"]
    assert (stance.instruction, stance.input) == (instruction.strip(), record["prompt"][len(instruction) :])
    assert (stance.output, stance.references, stance.id) == (record["answer"], (record["answer"],), "C-STANCE-test-0")
    assert tasks[7].test[0].meta == {"source": tasks[7].test[0].messages[0]["content"]}  # 20Minuten's SARI source
    assert len({ex.instruction for t in tasks for ex in t.train}) == 7  # NumGLUE-cm and -ds share theirs


def test_a_prompt_without_the_instruction_is_kept_whole(trace):
    edit(trace / "Py150" / "test.json", lambda r: r[0].update(prompt="<s> import os <EOL>"))
    example = read(trace, tasks=["Py150"])[0].test[0]
    assert (example.input, example.messages[0]["content"]) == ("<s> import os <EOL>", "<s> import os <EOL>")
    assert example.instruction == "Continue writing the code."


def test_subsets_keep_traces_order_caps_sample_and_params(trace):
    tasks = load_benchmark(
        "trace", str(trace), {"tasks": ["20Minuten", "FOMC"], "params": {"max_new_tokens": 8}}, 2, 1, 0
    )
    found = [(t.name, len(t.train), len(t.test), t.max_new_tokens) for t in tasks]
    assert found == [("FOMC", 1, 2, 8), ("20Minuten", 1, 2, 8)]


@pytest.mark.parametrize(
    "task, file, change, expected",
    [
        ("FOMC", None, None, "LLM-CL-Benchmark_5000/FOMC: missing task folder FOMC"),
        ("FOMC", "test.json", None, "FOMC/test.json: missing test file"),
        (
            "MeetingBank",
            "test.json",
            lambda r: r[1].pop("answer"),
            "MeetingBank/test.json:6: [1].answer: missing required field",
        ),
        (
            "ScienceQA",
            "train.json",
            lambda r: r[2].update(prompt=7),
            "ScienceQA/train.json:10: [2].prompt: expected a string, got a number (7)",
        ),
        (
            "Py150",
            "test.json",
            lambda r: r.append(["x"]),
            "Py150/test.json:14: [3]: expected a JSON object with prompt and answer",
        ),
        (
            "20Minuten",
            "test.json",
            lambda r: r[0].update(answer=None),
            None,
        ),  # a null answer is "" (TRACE's get_answer)
    ],
)
def test_a_bad_layout_stops_with_one_line_naming_path_and_field(trace, task, file, change, expected):
    folder = trace / task
    if change is not None:
        edit(folder / file, change)
    elif file is not None:
        (folder / file).unlink()
    else:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    if expected is None:
        assert read(trace, tasks=[task])[0].test[0].output == ""
        return
    with pytest.raises(LciaError) as err:
        read(trace)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "section, expected",
    [
        ("  variant: v2\n", "benchmark.variant: trace has no variant 'v2' (variants: default)"),
        ("  order: order2\n", "benchmark.order: trace has no order 'order2' (orders: default)"),
        ("  tasks: [Papyrus-f]\n", "benchmark.tasks[0]: trace order 'default' has no task 'Papyrus-f'"),
        ("  params: {max_new_tokens: 0}\n", "benchmark.params.max_new_tokens: Input should be greater than 0"),
    ],
)
def test_bad_settings_stop_at_config_time(trace, tmp_path, section, expected):
    path = tmp_path / "run.yaml"
    path.write_text(f"stream: trace\nbenchmark:\n  root: {trace}\n{section}")
    with pytest.raises(LciaError) as err:
        load_config(str(path))
    assert expected in str(err.value)


def test_the_gpu_config_validates_without_a_model():
    cfg = load_config(str(GPU_CONFIG))
    assert cfg.stream == "trace" and cfg.data.test_size is None and cfg.method.name == "seq-lora"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.training.lr) == (8, 32, 0.1, 1e-4)
    assert (cfg.training.batch_size * cfg.training.grad_accum, cfg.training.max_length) == (64, 1536)
    assert (cfg.training.epochs, cfg.training.scheduler) == ("benchmark", "cosine")


@pytest.mark.slow
def test_lcia_run_on_the_fixture_writes_the_full_grid_with_traces_scorers(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))
    root = make_trace(tmp_path / "TRACE", per_task=2)
    training = "  epochs: benchmark\n  batch_size: 4\n"
    out = run_on_fixture(tmp_path, tiny_model_dir, "trace", root, "  params: {max_new_tokens: 4}\n", training)
    # TRACE's 5, 3, 7, 5, 3, 5, 5, 7 epochs over 2 training records at batch 4: ceil(epochs / 2) steps each
    assert [s["steps"] for s in out.read_json("manifest.json")["timings"]["stages"]] == [3, 2, 4, 3, 2, 3, 3, 4]
    results = out.read_json("results.json")
    assert results["tasks"] == list(TASKS)
    assert len(results["matrix"]) == 9 and all(len(row) == 8 for row in results["matrix"])
    assert len(out.read_jsonl("predictions.jsonl")) == 9 * 8 * 2
    metrics = {(m["row"], m["task"]): m["metrics"] for m in out.read_jsonl("task_metrics.jsonl")}
    assert len(metrics) == 9 * 8
    assert set(metrics[8, "20Minuten"]) == {"bleu-1", "bleu-4", "rouge-L", "sari"}
    assert set(metrics[8, "Py150"]) == {"similarity"} and set(metrics[0, "ScienceQA"]) >= {"accuracy", "rouge-L"}
