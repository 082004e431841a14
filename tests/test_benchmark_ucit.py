"""The UCIT reader on a miniature copy in the release's exact layout (tests/benchmark_fixtures/ucit.py): every
task, its scorer and answer cap, the release's, MCITlib's and HiDe-LLaVA's scripts' folder and file names,
repeated training ids, the caption references, subsets and caps, one-line errors for bad layouts, the GPU
config, and one end-to-end ``lcia run`` (an accuracy and a caption task: METEOR's start alone takes ~20 s)
writing the full grid with UCIT's scorers."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest
from benchmark_fixtures.common import edit, run_on_fixture
from benchmark_fixtures.common import read as read_fixture
from benchmark_fixtures.ucit import CAPTIONS, make_ucit

from lcia.benchmarks import load_benchmark
from lcia.benchmarks.ucit import TASKS
from lcia.config import load_config
from lcia.errors import LciaError

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "configs" / "gpu" / "ucit-llava-1.5-7b.yaml"


@pytest.fixture
def ucit(tmp_path):
    return make_ucit(tmp_path / "UCIT")


read = partial(read_fixture, "ucit")


def test_every_task_is_read_in_the_scripts_order_with_its_scorer(ucit):
    tasks = read(ucit)
    assert [t.name for t in tasks] == list(TASKS)
    accuracy, captions = "ucit-accuracy", "coco-captions"
    assert [t.scorer for t in tasks] == [accuracy, accuracy, captions, accuracy, accuracy, captions]
    assert all(t.max_new_tokens == 128 and len(t.train) == 3 and len(t.test) == 3 for t in tasks)
    imagenet, vizwiz, clevr = tasks[0], tasks[2], tasks[4]
    test = imagenet.test[0]
    assert test.id == "ImageNet-R-test-0" and test.references == ("goldfish",)
    assert test.image == str(ucit / "datasets/ImageNet-R/test/n01443530/art_0.jpg")
    assert test.instruction.startswith("What is the object in the image?") and "<image>" not in test.instruction
    assert test.meta == {"image": "ImageNet-R/test/n01443530/art_0.jpg", "question": test.instruction}
    assert imagenet.train[0].messages[0]["content"].startswith("<image>\nWhat is the object")
    # The release's VizWiz, CLEVR and Flickr30k files repeat ids; VizWiz's records have no `id` at all.
    assert [ex.id for ex in clevr.train] == ["CLEVR-Math-0", "CLEVR-Math-0", "CLEVR-Math-1"]
    assert [ex.id for ex in vizwiz.train] == ["train-0", "train-1", "train-2"]
    # Test record k is scored against the captions of COCO image k + 1.
    assert [ex.references for ex in vizwiz.test] == [tuple(c) for c in CAPTIONS]
    assert vizwiz.test[1].output == CAPTIONS[1][0]


def test_mcitlib_layout_and_the_scripts_folder_names(tmp_path):
    mcitlib = make_ucit(tmp_path / "mcitlib", layout="mcitlib")
    assert (mcitlib / "CLEVR-Math" / "test.json").is_file()
    tasks = read(mcitlib)
    assert [t.name for t in tasks] == list(TASKS) and all(len(t.test) == 3 for t in tasks)
    release = make_ucit(tmp_path / "release")
    for name, script_name in (("VizWiz", "VizWiz-caption"), ("Flickr30k", "Flickr30k-cap")):
        (release / "instructions" / name).rename(release / "instructions" / script_name)
    assert [t.name for t in read(release, tasks=["VizWiz-caption", "Flickr30k"])] == ["VizWiz-caption", "Flickr30k"]


def test_another_single_train_file_is_taken_but_not_one_of_several(ucit):
    folder = ucit / "instructions" / "ArxivQA"
    (folder / "train_4w.json").rename(folder / "train_full.json")
    assert len(read(ucit, tasks=["ArxivQA"])[0].train) == 3
    shutil.copy(folder / "train_full.json", folder / "train_small.json")
    with pytest.raises(LciaError, match=r"ArxivQA: no train_4w.json and not one train\*.json to take instead"):
        read(ucit, tasks=["ArxivQA"])


def test_subsets_keep_the_order_and_caps_sample(ucit):
    tasks = load_benchmark("ucit", str(ucit), {"tasks": ["IconQA", "ImageNet-R"]}, 2, 1, 0)
    assert [t.name for t in tasks] == ["ImageNet-R", "IconQA"]
    assert [(len(t.train), len(t.test)) for t in tasks] == [(1, 2), (1, 2)]
    params = {"max_new_tokens": 8, "image_folder": "datasets"}
    assert read(ucit, tasks=["ArxivQA"], params=params)[0].max_new_tokens == 8


TASK = "instructions"


def _drop(field, k=0):
    return lambda records: records[k].pop(field)


@pytest.mark.parametrize(
    "task, file, change, expected",
    [
        ("IconQA", None, None, "UCIT: missing task folder IconQA/ of task IconQA (here or in instructions/)"),
        ("ImageNet-R", "test_3000.json", _drop("answer", 1), "ImageNet-R/test_3000.json:8: answer: missing required"),
        ("ArxivQA", "test_3000.json", _drop("question_id"), "ArxivQA/test_3000.json:2: question_id: missing required"),
        ("IconQA", "test_3000.json", lambda r: r[0].update(image="x.png"), "test_3000.json:2: image: record 'IconQA-"),
        ("CLEVR", "train_4w.json", lambda r: r[1].update(image="x.png"), "CLEVR/train_4w.json:16: image: record"),
        ("Flickr30k", "test_3000.json", lambda r: r.append(dict(r[0], question_id="x")), "val_coco_type_3000.json: "
         "annotations: no caption of image_id 4, which eval_caption.py scores test record 4 against"),
        ("VizWiz", "val_coco_type_3000.json", lambda r: r["annotations"][0].pop("caption"),
         "val_coco_type_3000.json: annotations[0]: expected {image_id: integer, caption: string}"),
        ("ImageNet-R", "test_3000.json", lambda r: r[0].update(text=3), "test_3000.json:2: text: expected a string"),
    ],
)  # fmt: skip
def test_a_bad_layout_stops_with_one_line_naming_path_and_field(ucit, task, file, change, expected):
    folder = ucit / TASK / task
    if file is None:
        shutil.rmtree(folder)
    else:
        edit(folder / file, change)
    with pytest.raises(LciaError) as err:
        read(ucit)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_files_and_folders_are_named(ucit):
    (ucit / TASK / "Flickr30k" / "val_coco_type_3000.json").unlink()
    with pytest.raises(LciaError, match=r"val_coco_type_3000.json: no COCO caption file here"):
        read(ucit, tasks=["Flickr30k"])
    (ucit / TASK / "IconQA" / "test_3000.json").unlink()
    with pytest.raises(LciaError, match=r"IconQA/test_3000.json: no test file \(test_3000.json or test.json\)"):
        read(ucit, tasks=["IconQA"])
    with pytest.raises(LciaError, match=r"nowhere: benchmark.params.image_folder: no images folder here"):
        read(ucit, tasks=["ArxivQA"], params={"image_folder": "nowhere"})


@pytest.mark.parametrize(
    "section, expected",
    [
        ("  variant: diverse\n", "benchmark.variant: ucit has no variant 'diverse' (variants: default)"),
        ("  tasks: [CLEVR]\n", "benchmark.tasks[0]: ucit order 'default' has no task 'CLEVR'"),
        ("  params: {max_new_tokens: 0}\n", "benchmark.params.max_new_tokens: Input should be greater than 0"),
        ("  params: {answer_suffix: x}\n", "benchmark.params.answer_suffix: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_stop_at_config_time(ucit, tmp_path, section, expected):
    path = tmp_path / "run.yaml"
    path.write_text(f"stream: ucit\nbenchmark:\n  root: {ucit}\n{section}")
    with pytest.raises(LciaError) as err:
        load_config(str(path))
    assert expected in str(err.value)


def test_the_gpu_config_validates_without_a_model():
    cfg = load_config(str(GPU_CONFIG))
    assert cfg.stream == "ucit" and cfg.data.test_size is None and cfg.method.name == "seq-lora"
    batch = cfg.training.batch_size * cfg.training.grad_accum
    assert (cfg.lora.r, cfg.lora.alpha, cfg.training.lr, batch, cfg.training.scheduler) == (16, 32, 2e-4, 64, "cosine")


@pytest.mark.slow
def test_lcia_run_on_the_fixture_writes_the_full_grid_with_ucits_scorers(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))
    root = make_ucit(tmp_path / "UCIT", per_task=2)
    settings = "  tasks: [VizWiz-caption, ImageNet-R]\n  params: {max_new_tokens: 4}\n"
    out = run_on_fixture(tmp_path, tiny_model_dir, "ucit", root, settings)
    results = out.read_json("results.json")
    assert results["tasks"] == ["ImageNet-R", "VizWiz-caption"]  # the scripts' order
    assert len(results["matrix"]) == 3 and all(len(row) == 2 for row in results["matrix"])
    predictions = out.read_jsonl("predictions.jsonl")
    assert len(predictions) == 3 * 2 * 2
    captions = [m for m in out.read_jsonl("task_metrics.jsonl") if m["task"] == "VizWiz-caption"]
    assert len(captions) == 3 and all({"Bleu_4", "METEOR", "CIDEr", "Average"} <= set(m["metrics"]) for m in captions)
    for m in captions:  # the cell is the task's Average of the seven caption metrics (results.json rounds it)
        assert results["matrix"][m["row"]][1] == pytest.approx(m["metrics"]["Average"], abs=1e-4)
