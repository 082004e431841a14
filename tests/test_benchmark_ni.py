"""The Long-Sequence and SuperNI readers on miniature copies of O-LoRA's and SAPT's ``CL_Benchmark`` folders
(tests/benchmark_fixtures/long_sequence.py, superni.py): tasks, orders, variants and prompts, one-line errors for
bad layouts, the GPU configs, and an end-to-end ``lcia run`` of each writing the full grid with its scorer.

The expected prompts were built from the same fixture files by the repositories' own loaders: O-LoRA's
``uie_dataset_lora.py`` + ``uie_collator.py`` get_instruction (cmnfriend/O-LoRA 07117e1, add_task_name and
add_dataset_name on, as in all its scripts) and SAPT's ``cl_dataset.py`` + ``cl_collator.py`` get_instruction
(circle-hit/SAPT 52a52b9); every prompt of the fixtures (90 per layout) matched, these are three of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_fixtures.common import edit, read, run_on_fixture
from benchmark_fixtures.long_sequence import make_olora, make_sapt
from benchmark_fixtures.superni import make_superni

from lcia.benchmarks.long_sequence import LongSequence
from lcia.benchmarks.superni import SuperNI
from lcia.config import load_config
from lcia.errors import LciaError

REPO = Path(__file__).resolve().parents[1]
OLORA_MNLI = (
    'Task:NLI\nDataset:MNLI\nWhat is the logical relationship between the "sentence 1" and the "sentence 2"? Choose '
    "one from the option.\nOption: neutral, entailment, contradiction \nsentence 1: The cat 3 sleeps.\nsentence 2: An "
    "animal 3 rests.\nAnswer:"
)
SAPT_MNLI = (
    'What is the logical relationship between the "sentence 1" and the "sentence 2"?\nsentence 1: The cat 3 sleeps.\n'
    "sentence 2: An animal 3 rests.\nOutput: "
)
SUPERNI_QUOREF = (
    "Definition: In this task you answer about the item (task002_quoref_answer_generation).\n\nNow complete the "
    "following example -\nInput: Passage: Item 4 is described here.\nQuestion: What is it?\nOutput: "
)


@pytest.fixture
def olora(tmp_path):
    return make_olora(tmp_path / "O-LoRA" / "CL_Benchmark")


@pytest.fixture
def sapt(tmp_path):
    root = tmp_path / "SAPT" / "CL_Benchmark"
    return make_superni(make_sapt(root))


def prompt(example):
    return example.messages[0]["content"]


def test_long_sequence_in_olora_layout(olora):
    tasks = read("long-sequence", olora)
    assert [t.name for t in tasks] == list(LongSequence.orders["order4"])
    assert all(t.scorer == "ni-em" and t.max_new_tokens == 50 and len(t.test) == 3 for t in tasks)
    mnli, copa = tasks[0].test[0], tasks[3].test[0]
    assert prompt(mnli) == OLORA_MNLI and mnli.references == ("neutral",) and mnli.meta == {"answer_prefix": "Answer:"}
    head = OLORA_MNLI[: OLORA_MNLI.index("sentence 1:")]
    assert mnli.instruction == head.strip() and OLORA_MNLI == head + mnli.input + "\nAnswer:"
    assert prompt(copa) == f"Task:COPA\nDataset:COPA\n{copa.input}\nAnswer:"  # COPA has no instruction, no options
    assert [t.family for t in tasks[:4]] == ["NLI", "NLI", "WiC", "COPA"]


def test_long_sequence_in_sapt_layout(sapt):
    tasks = read("long-sequence", sapt, variant="sapt")
    assert [t.name for t in tasks] == list(LongSequence.orders["order4"])
    mnli, copa = tasks[0].test[0], tasks[3].test[0]
    assert prompt(mnli) == SAPT_MNLI and mnli.meta == {"answer_prefix": "Output:"} and mnli.id == "mnli-test-0"
    assert prompt(copa) == f"{copa.input}\nOutput: " and copa.instruction == "copa"  # an empty Definition


def test_orders_are_the_papers(olora):
    orders = LongSequence.orders
    # scripts/long.sh of O-LoRA (its order 6; SAPT's gen_script_long_*.py "Order 4")
    assert orders["order6"][:4] == ("yelp", "amazon", "mnli", "cb") and orders["order6"][-1] == "wic"
    assert all(sorted(orders[o]) == sorted(LongSequence.tasks) for o in ("order4", "order5", "order6"))
    assert [t.name for t in read("long-sequence", olora, order="order3")] == ["yahoo", "amazon", "agnews", "dbpedia"]
    assert sorted(SuperNI.orders["order1"]) == sorted(SuperNI.orders["order2"]) and len(SuperNI.tasks) == 15


def test_superni(sapt):
    chosen = ["task875_emotion_classification", "task002_quoref_answer_generation"]
    tasks = read("superni", sapt, order="order2", tasks=chosen)
    assert [t.name for t in tasks] == ["task002_quoref_answer_generation", "task875_emotion_classification"]
    quoref, emotion = tasks
    assert (quoref.scorer, quoref.family, emotion.family) == ("ni-rougeL", "Question Answering", "Sentiment Analysis")
    assert prompt(quoref.test[1]) == SUPERNI_QUOREF
    assert quoref.test[0].references == ("Answer 3.", "answer number 3") and quoref.test[0].output == "Answer 3."
    assert emotion.test[0].references == ("NEG",)  # a string output
    assert SUPERNI_QUOREF.startswith(quoref.test[1].instruction + "\n\nNow complete the following example -\nInput: ")
    assert quoref.test[1].input == "Passage: Item 4 is described here.\nQuestion: What is it?"


@pytest.mark.parametrize(
    "name, variant, file, change, expected",
    [
        ("long-sequence", "o-lora", "NLI/CB", None, "NLI/CB: missing task folder of 'cb'"),
        ("long-sequence", "o-lora", "WiC/WiC/labels.json", None, "WiC/labels.json: no such file"),
        (
            "long-sequence",
            "o-lora",
            "SC/yelp/test.json",
            lambda r: r[2].pop("label"),
            "yelp/test.json:10: [2].label: missing required field",
        ),
        (
            "long-sequence",
            "o-lora",
            "TC/yahoo/labels.json",
            lambda r: r.append(3),
            "yahoo/labels.json:5: expected a label string, got a number (3)",
        ),
        (
            "long-sequence",
            "sapt",
            "Long_Sequence",
            None,
            "CL_Benchmark: benchmark.variant: no Long_Sequence folder here (variant sapt)",
        ),
        ("long-sequence", "sapt", "Long_Sequence/rte/train.json", None, "rte/train.json: missing train file"),
        (
            "long-sequence",
            "sapt",
            "Long_Sequence/qqp/test.json",
            lambda t: t["Instances"][1].pop("output"),
            "qqp/test.json: Instances[1].output: missing required field",
        ),
        (
            "long-sequence",
            "sapt",
            "Long_Sequence/boolq/test.json",
            lambda t: t.pop("Definition"),
            "boolq/test.json:1: Definition: missing required field",
        ),
        (
            "superni",
            None,
            "SuperNI/task181_outcome_extraction/test.json",
            lambda t: t.update(Definition=[]),
            "task181_outcome_extraction/test.json: Definition: is empty",
        ),
        (
            "superni",
            None,
            "SuperNI/task591_sciq_answer_generation/train.json",
            lambda t: t["Instances"][0].update(output=[]),
            "train.json: Instances[0].output: expected a string or a non-empty list of strings, got a list",
        ),
        (
            "superni",
            None,
            "SuperNI/task1290_xsum_summarization/test.json",
            lambda t: t.update(Instances={}),
            "test.json:1: Instances: expected a non-empty list, got an object",
        ),
    ],
)
def test_a_bad_layout_stops_with_one_line_naming_path_and_field(olora, sapt, name, variant, file, change, expected):
    root = olora if variant == "o-lora" else sapt
    path = root / file
    if change is not None:
        edit(path, change)
    elif path.is_dir():
        for child in sorted(path.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        path.rmdir()
    else:
        path.unlink()
    with pytest.raises(LciaError) as err:
        read(name, root, **({"variant": variant} if variant else {}))
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "stream, section, expected",
    [
        (
            "long-sequence",
            "  variant: lfpt5\n",
            "benchmark.variant: long-sequence has no variant 'lfpt5' (variants: o-lora, sapt)",
        ),
        (
            "long-sequence",
            "  order: long\n",
            "long-sequence has no order 'long' (orders: order4, order5, order6, order1",
        ),
        (
            "long-sequence",
            "  order: order1\n  tasks: [mnli]\n",
            "benchmark.tasks[0]: long-sequence order 'order1' has no task 'mnli'",
        ),
        (
            "superni",
            "  tasks: [task001_quoref_question_generation]\n",
            "superni order 'order1' has no task 'task001_quoref",
        ),
    ],
)
def test_bad_settings_stop_at_config_time(sapt, tmp_path, stream, section, expected):
    path = tmp_path / "run.yaml"
    path.write_text(f"stream: {stream}\nbenchmark:\n  root: {sapt}\n{section}")
    with pytest.raises(LciaError) as err:
        load_config(str(path))
    assert expected in str(err.value)


def test_the_gpu_configs_validate_without_a_model():
    long = load_config(str(REPO / "configs/gpu/long-sequence-llama-7b.yaml"))
    assert (long.stream, long.benchmark.variant, long.benchmark.order) == ("long-sequence", "o-lora", "order1")
    assert (long.lora.r, long.lora.alpha, long.training.lr, long.method.params) == (
        8,
        32,
        1e-4,
        {"orth": 0.5, "l2": 0.0},
    )
    assert (long.training.epochs, long.training.batch_size * long.training.grad_accum) == (1, 64)
    superni = load_config(str(REPO / "configs/gpu/superni-llama-2-7b.yaml"))
    assert (superni.stream, superni.lora.r, superni.training.lr, superni.data.test_size) == ("superni", 4, 5e-5, None)
    assert superni.training.epochs == 50


def run_lcia(tmp_path, tiny_model_dir, stream, root, extra):
    return run_on_fixture(tmp_path, tiny_model_dir, stream, root, extra + "  params: {max_new_tokens: 4}\n")


@pytest.mark.slow
def test_lcia_run_on_the_fixtures_writes_the_full_grids_with_their_scorers(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))
    olora = make_olora(tmp_path / "O-LoRA", per_task=2)
    long = run_lcia(tmp_path, tiny_model_dir, "long-sequence", olora, "  order: order1\n")
    results = long.read_json("results.json")
    assert results["tasks"] == ["dbpedia", "amazon", "yahoo", "agnews"] and len(results["matrix"]) == 5
    assert len(long.read_jsonl("predictions.jsonl")) == 5 * 4 * 2
    assert all(set(m["metrics"]) == {"exact_match", "rouge1", "rougeL"} for m in long.read_jsonl("task_metrics.jsonl"))
    sapt = make_superni(tmp_path / "SAPT", per_task=2)
    three = "  tasks: [task1572_samsum_summary, task363_sst2_polarity_classification, task591_sciq_answer_generation]\n"
    superni = run_lcia(tmp_path, tiny_model_dir, "superni", sapt, three)
    results = superni.read_json("results.json")
    assert results["tasks"][0] == "task1572_samsum_summary" and len(results["matrix"]) == 4
    assert all(len(row) == 3 for row in results["matrix"]) and len(superni.read_jsonl("task_metrics.jsonl")) == 12
