"""The Python API (``lcia.run``, ``lcia.load``): the same runs as the command line, as objects and frames."""

from __future__ import annotations

import pytest

import lcia
from lcia.errors import LciaError
from lcia.pipeline.session import open_saved


@pytest.fixture(scope="module")
def api_run(tiny_model_dir, tmp_path_factory):
    from conftest import write_jsonl

    folder = tmp_path_factory.mktemp("api")
    write_jsonl(folder / "colors.jsonl", [{"instruction": "Name the color.", "input": f"item {i}",
                                          "output": ["red", "blue"][i % 2]} for i in range(24)])  # fmt: skip
    write_jsonl(folder / "echo.jsonl", [{"prompt": f"Repeat the word w{i}.", "completion": f"w{i}"} for i in range(24)])
    (folder / "stream.yaml").write_text(
        "tasks:\n  - name: colors\n    train: colors.jsonl\n    max_new_tokens: 3\n"
        "  - name: echo\n    train: echo.jsonl\n    instruction: Repeat the word.\n    max_new_tokens: 3\n"
    )
    run = lcia.run(
        stream=str(folder / "stream.yaml"),
        model={"name_or_path": tiny_model_dir},
        output_dir=str(folder / "run"),
        method={"name": "grouping", "params": {"threshold": 0.5}},
        progress=False,
        log=lambda *_: None,
        **{"training.steps": 4, "training.batch_size": 4, "data.test_size": 6, "evaluation.bootstrap": 50, "lora.r": 4},
    )
    return run, folder


def test_a_run_from_python_gives_its_results_as_objects_and_frames(api_run):
    run, _ = api_run
    assert run.tasks == ["colors", "echo"] and len(run.matrix) == 3
    assert run.config.training.steps == 4 and run.config.method.params == {"threshold": 0.5}
    frame = run.matrix_frame()
    assert frame.shape == (3, 2) and list(frame.columns) == ["colors", "echo"]
    assert frame.index[0] == "before training" and frame.loc["after echo", "echo"] == run.matrix[2][1]
    assert set(run.metrics) >= {"Avg.ACC", "BWT"} and set(run.intervals) == set(run.metrics)
    predictions = run.predictions_frame()
    assert len(predictions) == 3 * 2 * 6 and {"row", "task", "prediction", "score", "adapter"} <= set(predictions)
    assert lcia.load(run.path).matrix == run.matrix


def test_ask_answers_as_the_saved_run_and_says_the_route(api_run):
    run, _ = api_run
    answer = run.ask("Repeat the word.", "w3", max_new_tokens=3)
    route, text = open_saved(run.path)[0].ask("Repeat the word.", "w3", 3)
    assert (answer.text, answer.adapter) == (text, route.adapter) and answer.adapter == "group-1"
    assert answer.route.scores == route.scores


def test_bad_overrides_and_paths_are_one_line_errors(api_run, tmp_path):
    with pytest.raises(LciaError, match="--set: training.steps: Input should be a valid integer"):
        lcia.run(training={"steps": "many"})
    with pytest.raises(LciaError, match="no manifest.json"):
        lcia.load(tmp_path)
