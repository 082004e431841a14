"""The CoIN reader on a miniature copy in CoIN's exact layout (tests/benchmark_fixtures/coin.py): every task, its
scorer and answer cap, the variants and the refined release's folder names, subsets and caps, one-line errors
for bad layouts, the GPU config, and one end-to-end ``lcia run`` writing the full grid with CoIN's scorers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from benchmark_fixtures.coin import make_coin
from benchmark_fixtures.common import edit, run_on_fixture
from benchmark_fixtures.common import read as read_fixture

from lcia.benchmarks import load_benchmark
from lcia.benchmarks.coin import SPECS, TASKS
from lcia.config import load_config
from lcia.errors import LciaError

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "configs" / "gpu" / "coin-llava-1.5-7b.yaml"


@pytest.fixture
def coin(tmp_path):
    return make_coin(tmp_path / "CoIN", variants=("original", "diverse"))


read = partial(read_fixture, "coin")


def test_every_task_is_read_in_coin_order_with_its_scorer_and_cap(coin):
    tasks = read(coin)
    assert [t.name for t in tasks] == list(TASKS)
    assert [(t.scorer, t.max_new_tokens) for t in tasks] == [(s.scorer, s.max_new_tokens) for s in SPECS.values()]
    assert [t.scorer for t in tasks][1:8:2] == ["m4c-textvqa", "coin-gqa", "coin-grounding", "coin-ocrvqa"]
    assert all(len(t.train) == 3 and len(t.test) == 3 for t in tasks)
    science, textvqa, grounding = tasks[0], tasks[1], tasks[5]
    assert science.test[-1].image == "" and science.train[-1].image == ""  # text-only questions
    assert science.test[0].references == ("A",) and science.test[0].id == "ScienceQA-3"
    assert science.test[0].image == str(coin / "cl_dataset/ScienceQA/images/test/3/image.png")
    # The training turn's <image> moves to the front, as LLaVA's preprocess_multimodal puts it.
    assert science.train[0].messages[0]["content"].startswith("<image>\nWhich color is shown?")
    assert len(textvqa.test[0].references) == 10 and textvqa.test[0].id == "3"
    assert grounding.test[0].meta == {"answer_bbox": [0.1, 0.2, 0.5, 0.6], "size": [32, 24]}
    assert "<image>" not in tasks[3].test[0].instruction and tasks[3].test[0].output == "red"


def test_variants_and_the_refined_release(coin, tmp_path):
    diverse = read(coin, variant="diverse", tasks=["GQA"])[0]
    assert diverse.test[0].instruction.endswith("Give a short answer to the question about the image.")
    refined = make_coin(tmp_path / "refined", variants=("original", "10type"), refined=True)
    assert (refined / "playground" / "Instructions" / "GQA").is_dir()
    assert [t.name for t in read(refined, tasks=["OCRVQA", "ScienceQA"])] == ["ScienceQA", "OCRVQA"]
    assert read(refined, variant="10type", tasks=["VQAv2"])[0].scorer == "coin-vqav2"


def test_subsets_keep_coins_order_and_caps_sample(coin):
    tasks = load_benchmark("coin", str(coin), {"tasks": ["VizWiz", "TextVQA"]}, 2, 1, 0)
    assert [t.name for t in tasks] == ["TextVQA", "VizWiz"]
    assert [(len(t.train), len(t.test)) for t in tasks] == [(1, 2), (1, 2)]
    again = load_benchmark("coin", str(coin), {"tasks": ["VizWiz", "TextVQA"]}, 2, 1, 0)
    assert [t.test for t in tasks] == [t.test for t in again]


def test_params(coin, tmp_path):
    params = {"grounding_off_by_one": False, "max_new_tokens": 7}
    grounding = read(coin, tasks=["Grounding"], params=params)[0]
    assert (grounding.scorer, grounding.max_new_tokens) == ("grounding", 7)
    (coin / "playground/Instructions_Original/VizWiz/val.json").rename(
        coin / "playground/Instructions_Original/VizWiz/test.json"
    )
    assert len(read(coin, tasks=["VizWiz"], params={"test_files": {"VizWiz": "test.json"}})[0].test) == 3
    moved = tmp_path / "elsewhere"
    (coin / "playground").rename(moved)
    (coin / "cl_dataset").rename(tmp_path / "images")
    params = {"instructions_folder": str(moved), "image_folder": str(tmp_path / "images")}
    assert read(coin, tasks=["TextVQA"], params=params)[0].test[0].image.startswith(str(tmp_path / "images"))


TASK = "playground/Instructions_Original"


def _drop(field, index=0):
    return lambda records: records[index].pop(field)


@pytest.mark.parametrize(
    "task, file, change, expected",
    [
        ("GQA", None, None, "Instructions_Original/GQA: missing task folder GQA (variant original)"),
        ("GQA", "test.json", _drop("answer", 1), "GQA/test.json:8: answer: missing required field"),
        ("VQAv2", "val.json", _drop("question_id"), "VQAv2/val.json:2: question_id: missing required field"),
        ("Grounding", "test.json", _drop("answer_bbox"), "Grounding/test.json:2: answer_bbox: missing required"),
        ("Grounding", "test.json", lambda r: r[0].update(size=[32]), "test.json:2: size: expected the image's"),
        ("ScienceQA", "test.json", lambda r: r[0].update(answer="red"), "test.json:2: answer: expected an option"),
        ("TextVQA", "val.json", lambda r: r[0].update(question_id=99), "val.json:2: question_id: '99' is not in"),
        ("OCRVQA", "test.json", lambda r: r[0].update(image="x.jpg"), "test.json:2: image: record 'OCRVQA-3': image"),
        ("ImageNet", "train.json", lambda r: r[1].update(image="x.jpg"), "ImageNet/train.json:16: image: record"),
    ],
)
def test_a_bad_layout_stops_with_one_line_naming_path_and_field(coin, task, file, change, expected):
    folder = coin / TASK / task
    if file is None:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    else:
        edit(folder / file, change)
    with pytest.raises(LciaError) as err:
        read(coin)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_folders_and_annotations_are_named(coin):
    with pytest.raises(LciaError, match=r"playground: benchmark.variant: no Instructions_10Type/ here"):
        read(coin, variant="10type")
    (coin / "cl_dataset/TextVQA/TextVQA_0.5.1_val.json").unlink()
    with pytest.raises(LciaError, match=r"TextVQA_0.5.1_val.json: benchmark.params.textvqa_annotations: no TextVQA"):
        read(coin, tasks=["TextVQA"])
    with pytest.raises(LciaError, match=r"nowhere: benchmark.params.image_folder: no images folder here"):
        read(coin, tasks=["GQA"], params={"image_folder": "nowhere"})


@pytest.mark.parametrize(
    "section, expected",
    [
        ("  variant: type2\n", "benchmark.variant: coin has no variant 'type2' (variants: original, diverse, 10type)"),
        ("  tasks: [RefCOCO]\n", "benchmark.tasks[0]: coin order 'coin' has no task 'RefCOCO'"),
        ("  params: {test_files: {RefCOCO: a.json}}\n", "benchmark.params.test_files: Value error, CoIN has no task"),
    ],
)
def test_bad_settings_stop_at_config_time(coin, tmp_path, section, expected):
    path = tmp_path / "run.yaml"
    path.write_text(f"stream: coin\nbenchmark:\n  root: {coin}\n{section}")
    with pytest.raises(LciaError) as err:
        load_config(str(path))
    assert expected in str(err.value)


def test_the_gpu_config_validates_without_a_model():
    cfg = load_config(str(GPU_CONFIG))
    assert cfg.stream == "coin" and cfg.benchmark.variant == "original" and cfg.data.test_size is None
    assert (cfg.lora.r, cfg.lora.alpha, cfg.training.lr) == (128, 256, 2e-4)


@pytest.mark.slow
def test_lcia_run_on_the_fixture_writes_the_full_grid_with_coins_scorers(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))
    root = make_coin(tmp_path / "CoIN", per_task=2)
    out = run_on_fixture(tmp_path, tiny_model_dir, "coin", root, "  params: {max_new_tokens: 2}\n")
    results = out.read_json("results.json")
    assert results["tasks"] == list(TASKS)
    assert len(results["matrix"]) == 9 and all(len(row) == 8 for row in results["matrix"])
    predictions = out.read_jsonl("predictions.jsonl")
    assert len(predictions) == 9 * 8 * 2
    assert {p["task"] for p in predictions if p["row"] == 8} == set(TASKS)
    science = [m for m in out.read_jsonl("task_metrics.jsonl") if m["task"] == "ScienceQA"]
    assert len(science) == 9 and all("img_accuracy" in m["metrics"] for m in science)
