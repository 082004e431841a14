"""The MLLM-DCL reader on a miniature copy in the release's exact layout (tests/benchmark_fixtures/mllm_dcl.py):
every domain in MLLM-CL's order with its scorer, the prompts of its model_*.py, subsets and caps, one-line errors
for bad layouts, the GPU config, and one end-to-end ``lcia run`` writing the full grid with MLLM-CL's scorers."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest
from benchmark_fixtures.common import edit, run_on_fixture
from benchmark_fixtures.common import read as read_fixture
from benchmark_fixtures.mllm_dcl import make_mllm_dcl

from lcia.benchmarks import load_benchmark
from lcia.benchmarks.mllm_dcl import FIN_CHOICE, FIN_YES_NO, MED_SUFFIX, TASKS
from lcia.config import load_config
from lcia.errors import LciaError

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIG = REPO / "configs" / "gpu" / "mllm-dcl-llava-1.5-7b.yaml"
SCORERS = ["mllm-dcl-ai2d", "mllm-dcl-pvqa", "mllm-dcl-ai2d", "mllm-dcl-sci", "mllm-dcl-finvis"]


@pytest.fixture
def dcl(tmp_path):
    return make_mllm_dcl(tmp_path / "Domain_data")


read = partial(read_fixture, "mllm-dcl")


def test_every_domain_is_read_in_mllm_cls_order_with_its_scorer(dcl):
    tasks = read(dcl)
    assert [t.name for t in tasks] == list(TASKS) == ["RS", "Med", "AD", "Sci", "Fin"]
    assert [t.scorer for t in tasks] == SCORERS
    assert all(t.max_new_tokens == 128 and len(t.train) == 3 and len(t.test) == 3 for t in tasks)
    rs, med, sci, fin = tasks[0], tasks[1], tasks[3], tasks[4]
    test = rs.test[0]
    assert (test.id, test.references, test.instruction) == ("0", ("yes",), "Is there a harbor in the image?")
    assert test.image == str(dcl / "RS/images/test/P0000.png")
    assert rs.train[0].messages[0]["content"] == "<image>\nIs there a harbor in the image?"
    assert med.test[0].instruction == "What organ is shown?"  # model_ai2d.py: the question as it is
    # eval_sci.py tells its sources apart by the image's file name and reads MapQA's question.
    assert [ex.meta["image"] for ex in sci.test] == ["images/test/AI2D_0.png", "images/test/TQA_1.png",
                                                     "images/test/MapQA_2.png"]  # fmt: skip
    assert sci.test[2].meta["question"] == "Which states have the highest value?"
    # model_fin.py: a yes/no suffix for Yes / No answers, the letter one otherwise.
    assert [ex.instruction.endswith(FIN_YES_NO) for ex in fin.test] == [True, False, True]
    assert fin.test[1].instruction.endswith(FIN_CHOICE) and fin.test[1].meta["question"].endswith("B. 2020")


def test_params_subsets_and_caps(dcl):
    med = read(dcl, tasks=["Med"], params={"med_answer_suffix": True, "max_new_tokens": 16})[0]
    assert med.test[0].instruction == "What organ is shown?" + MED_SUFFIX and med.max_new_tokens == 16
    tasks = load_benchmark("mllm-dcl", str(dcl), {"tasks": ["Fin", "RS"]}, 2, 1, 0)
    assert [(t.name, len(t.train), len(t.test)) for t in tasks] == [("RS", 1, 2), ("Fin", 1, 2)]


def test_a_repeated_question_id_is_scored_against_its_last_record(dcl):
    # eval_*.py key the annotations by question_id: the later record's answer wins for both predictions.
    edit(dcl / "RS" / "test.json", lambda r: r[2].update(question_id=0))
    rs = read(dcl, tasks=["RS"])[0]
    assert [ex.references for ex in rs.test] == [("yes",), ("no",), ("yes",)]
    assert rs.test[0].output == "yes"


def _drop(field, k=0):
    return lambda records: records[k].pop(field)


@pytest.mark.parametrize(
    "task, file, change, expected",
    [
        ("AD", None, None, "Domain_data/AD: missing domain folder AD/"),
        ("Med", "test.json", _drop("answer", 1), "Med/test.json:8: answer: missing required field"),
        ("Sci", "test.json", _drop("question_id"), "Sci/test.json:2: question_id: missing required field"),
        ("Fin", "test.json", lambda r: r[0].update(image="x.png"), "Fin/test.json:2: image: record '0': image not"),
        ("RS", "train.json", lambda r: r[1].update(image="x.png"), "RS/train.json:16: image: record 'RS-1': image"),
        ("AD", "train.json", _drop("conversations"), "AD/train.json:2: conversations: missing required field"),
        ("Sci", "test.json", lambda r: r[0].update(answer=1), "Sci/test.json:2: answer: expected a string"),
    ],
)
def test_a_bad_layout_stops_with_one_line_naming_path_and_field(dcl, task, file, change, expected):
    if file is None:
        shutil.rmtree(dcl / task)
    else:
        edit(dcl / task / file, change)
    with pytest.raises(LciaError) as err:
        read(dcl)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_files_are_named(dcl):
    (dcl / "Fin" / "test.json").unlink()
    with pytest.raises(LciaError, match=r"Fin/test.json: no test.json in the domain folder"):
        read(dcl, tasks=["Fin"])


@pytest.mark.parametrize(
    "section, expected",
    [
        ("  order: ability\n", "benchmark.order: mllm-dcl has no order 'ability' (orders: default)"),
        ("  tasks: [OCR]\n", "benchmark.tasks[0]: mllm-dcl order 'default' has no task 'OCR'"),
        ("  params: {med_answer_suffix: maybe}\n", "benchmark.params.med_answer_suffix: Input should be a valid"),
    ],
)
def test_bad_settings_stop_at_config_time(dcl, tmp_path, section, expected):
    path = tmp_path / "run.yaml"
    path.write_text(f"stream: mllm-dcl\nbenchmark:\n  root: {dcl}\n{section}")
    with pytest.raises(LciaError) as err:
        load_config(str(path))
    assert expected in str(err.value)


def test_the_gpu_config_validates_without_a_model():
    cfg = load_config(str(GPU_CONFIG))
    assert cfg.stream == "mllm-dcl" and cfg.data.test_size is None and cfg.method.name == "seq-lora"
    training = cfg.training
    batch = training.batch_size * training.grad_accum
    assert (cfg.lora.r, cfg.lora.alpha, training.lr, batch, training.scheduler) == (128, 256, 2e-5, 64, "cosine")


@pytest.mark.slow
def test_lcia_run_on_the_fixture_writes_the_full_grid_with_mllm_cls_scorers(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))
    root = make_mllm_dcl(tmp_path / "Domain_data", per_task=2)
    out = run_on_fixture(tmp_path, tiny_model_dir, "mllm-dcl", root, "  params: {max_new_tokens: 4}\n")
    results = out.read_json("results.json")
    assert results["tasks"] == list(TASKS)
    assert len(results["matrix"]) == 6 and all(len(row) == 5 for row in results["matrix"])
    predictions = out.read_jsonl("predictions.jsonl")
    assert len(predictions) == 6 * 5 * 2
    assert {p["task"] for p in predictions if p["row"] == 5} == set(TASKS)
