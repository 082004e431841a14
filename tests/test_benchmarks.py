"""The benchmark framework on a toy benchmark: settings checked at config time with file:line errors, caps by a
seeded sample in the files' order, whole test sets with ``data.test_size: null``, and a task-level metric kept
beside the predictions. Each real benchmark's reader has its own test file."""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from lcia.benchmarks import BENCHMARKS, Benchmark, BenchmarkParams, BenchmarkTask, load_benchmark
from lcia.benchmarks.base import register_benchmark
from lcia.config import load_config
from lcia.data.schema import Example
from lcia.data.streams import load_stream
from lcia.errors import LciaError
from lcia.evaluation.grid import Cell
from lcia.pipeline.run_files import RunDir
from lcia.scorers import SCORERS, Scored, get_scorer, register_scorer


class ToyParams(BenchmarkParams):
    prefix: str = Field("", description="prepended to every input")


@pytest.fixture
def toy(tmp_path):
    """A registered benchmark ``toy`` reading ``<root>/<task>.jsonl`` files of {q, a}; removed afterwards."""

    @register_benchmark("toy")
    class Toy(Benchmark):
        tasks = ("one", "two", "three")
        orders = {"forward": tasks, "backward": tasks[::-1]}
        variants = ("plain", "shouted")
        Params = ToyParams

        def read_task(self, name: str) -> BenchmarkTask:
            path = self.root / f"{name}.jsonl"
            if not path.is_file():
                raise LciaError(f"{path}: missing task file")
            records = [json.loads(line) for line in path.read_text().splitlines()]
            shout = str.upper if self.variant == "shouted" else str
            examples = [Example(shout("Answer."), self.params.prefix + r["q"], r["a"], id=r["q"]) for r in records]
            return BenchmarkTask(name, examples[:-4], examples[-4:], "exact")

    for task in Toy.tasks:
        lines = [json.dumps({"q": f"{task}-{i}", "a": str(i)}) for i in range(12)]
        (tmp_path / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
    yield tmp_path
    del BENCHMARKS["toy"]


def config(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_a_benchmark_stream_reads_its_order_subset_variant_and_params(toy):
    cfg = config(toy, f"stream: toy\nbenchmark:\n  root: {toy}\n  variant: shouted\n  order: backward\n"
                 "  tasks: [one, three]\n  params: {prefix: 'Q: '}\n")  # fmt: skip
    bench = cfg.benchmark
    tasks = load_benchmark("toy", bench.root, bench.model_dump(exclude={"root"}), None, None, 0)
    assert [t.name for t in tasks] == ["three", "one"]
    assert tasks[0].train[0] == Example("ANSWER.", "Q: three-0", "0", id="three-0")
    assert [len(t.test) for t in tasks] == [4, 4]  # test_size null: every test example


def test_caps_are_a_seeded_sample_in_file_order(toy):
    first = load_benchmark("toy", str(toy), {}, 2, 5, 0)
    again = load_benchmark("toy", str(toy), {}, 2, 5, 0)
    other = load_benchmark("toy", str(toy), {}, 2, 5, 1)
    assert [t.name for t in first] == ["one", "two", "three"]  # the first order by default
    assert [(t.train, t.test) for t in first] == [(t.train, t.test) for t in again]
    assert [t.train for t in first] != [t.train for t in other]
    ids = [int(ex.id.split("-")[1]) for ex in first[0].train]
    assert len(ids) == 5 and ids == sorted(ids)


@pytest.mark.parametrize(
    "section, expected",
    [
        ("  variant: loud\n", "run.yaml:4: benchmark.variant: toy has no variant 'loud' (variants: plain, shouted)"),
        ("  order: sideways\n", "run.yaml:4: benchmark.order: toy has no order 'sideways'"),
        ("  tasks: [one, four]\n", "benchmark.tasks[1]: toy order 'forward' has no task 'four'"),
        ("  params: {prefx: x}\n", "run.yaml:4: benchmark.params.prefx: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_stop_at_config_time_naming_line_and_field(toy, section, expected):
    with pytest.raises(LciaError) as err:
        config(toy, f"stream: toy\nbenchmark:\n  root: {toy}\n{section}")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_benchmark_needs_its_root_and_a_root_needs_a_benchmark(toy):
    with pytest.raises(LciaError, match="benchmark: stream 'toy' is a benchmark: give benchmark.root"):
        config(toy, "stream: toy\n")
    with pytest.raises(LciaError, match="stream 'ni-cit' is not a benchmark"):
        config(toy, f"stream: ni-cit\nbenchmark:\n  root: {toy}\n")
    with pytest.raises(LciaError, match=r"nowhere: benchmark.root: no toy benchmark folder here"):
        load_benchmark("toy", str(toy / "nowhere"), {}, None, None, 0)
    (toy / "two.jsonl").unlink()
    with pytest.raises(LciaError, match=r"two.jsonl: missing task file"):
        load_benchmark("toy", str(toy), {}, None, None, 0)


def test_a_split_task_needs_a_test_size():
    with pytest.raises(LciaError, match="add2: has no test set of its own: give data.test_size"):
        load_stream("ni-cit-small", None, None, 0)


def test_task_level_metrics_are_kept_trimmed_and_repeated(tmp_path):
    @register_scorer("toy-length")
    def length(predictions, examples):
        per_example = [float(p == ex.output) for p, ex in zip(predictions, examples)]
        return Scored(per_example, {"chars": 1.0 * len(predictions)})

    try:
        examples = [Example("i", "x", "a"), Example("i", "y", "b")]
        scored = get_scorer("toy-length")(["a", "c"], examples)
        assert scored == Scored([1.0, 0.0], {"chars": 2.0})
        out = RunDir(tmp_path)
        task = type("T", (), {"test": examples})
        for row in (0, 1):
            out.append_cell(Cell(row, "t", ["a", "c"], scored.per_example, [None, None], scored.metrics), task)
        out.keep_cells([[0.5]], ["t"])  # row 1 was cut short by a crash
        assert out.read_jsonl("task_metrics.jsonl") == [{"row": 0, "task": "t", "metrics": {"chars": 2.0}}]
        out.repeat_row(1)
        assert [r["row"] for r in out.read_jsonl("task_metrics.jsonl")] == [0, 1]
        assert len(out.read_jsonl("predictions.jsonl")) == 4
    finally:
        del SCORERS["toy-length"]
