"""``lcia extend``: a finished 2-task run extended with a third task equals one run over the 3-task stream."""

from __future__ import annotations

import pytest
from conftest import builtin_methods, write_jsonl

from lcia.cli import main
from lcia.errors import LciaError
from lcia.methods import METHODS
from lcia.pipeline import stream_run
from lcia.pipeline.extend import extend_run
from lcia.pipeline.run_files import RunDir
from lcia.reporting.report import write_report

TASKS = {  # name: (file, the stream entry's extra lines)
    "colors": ("colors.jsonl", "    max_new_tokens: 3\n"),
    "echo": ("echo.jsonl", "    instruction: Repeat the word.\n    max_new_tokens: 3\n"),
    "shout": ("shout.jsonl", "    max_new_tokens: 3\n"),
}


def stream_yaml(path, names):
    path.write_text("tasks:\n" + "".join(f"  - name: {n}\n    train: {TASKS[n][0]}\n{TASKS[n][1]}" for n in names))
    return path


@pytest.fixture
def streams(stream_file):
    folder = stream_file.parent
    write_jsonl(
        folder / "shout.jsonl",
        [{"instruction": "Write the word in capitals.", "input": f"w{i}", "output": f"W{i}"} for i in range(24)],
    )
    return stream_yaml(folder / "first.yaml", ["colors", "echo"]), stream_yaml(folder / "more.yaml", ["shout"]), \
        stream_yaml(folder / "all.yaml", ["colors", "echo", "shout"])  # fmt: skip


# inflora's threshold schedule spreads over the stream's stages unless ``sessions`` fixes them: extending a run
# changes the stages it counts, so the two runs agree only with the schedule fixed
PARAMS = {"inflora": {"sessions": 3}}


def config(tiny_config, stream, folder, method):
    cfg = tiny_config.model_copy(deep=True)
    cfg.stream, cfg.output_dir, cfg.method.name = str(stream), str(folder), method
    cfg.method.params = PARAMS.get(method, {})
    return cfg


def cells(run_dir) -> list[tuple]:
    records = RunDir(run_dir).read_jsonl("predictions.jsonl")
    return sorted((r["row"], r["task"], r["id"], r["prediction"], r["adapter"]) for r in records)


EXTENDABLE = [name for name in builtin_methods() if name != "multitask"]


@pytest.mark.parametrize("method", EXTENDABLE)
def test_an_extended_run_equals_one_run_over_the_longer_stream(method, tiny_config, streams, tmp_path):
    first, more, whole = streams
    quiet = dict(progress=False, log=lambda *_: None)
    reference = stream_run.run(config(tiny_config, whole, tmp_path / "whole", method), **quiet)
    stream_run.run(config(tiny_config, first, tmp_path / "run", method), **quiet)
    extended = extend_run(tmp_path / "run", more, **quiet)
    assert extended.tasks == ["colors", "echo", "shout"]
    assert extended.matrix == reference.matrix and extended.metrics == reference.metrics
    assert cells(tmp_path / "run") == cells(tmp_path / "whole")
    ours, theirs = (RunDir(tmp_path / name).read_json("results.json") for name in ("run", "whole"))
    assert ours.get("method") == theirs.get("method") and ours.get("routing") == theirs.get("routing")
    report = write_report([tmp_path / "run"], tmp_path / "report").read_text()
    assert "| setting | seeds | colors | echo | shout |" in report and "(3 tasks" in report


def test_a_stopped_extension_resumes_and_a_joint_method_is_refused(tiny_config, streams, tmp_path, monkeypatch, capsys):
    first, more, whole = streams
    quiet = dict(progress=False, log=lambda *_: None)
    reference = stream_run.run(config(tiny_config, whole, tmp_path / "whole", "lcia"), **quiet)
    stream_run.run(config(tiny_config, first, tmp_path / "run", "lcia"), **quiet)
    log = tmp_path / "run" / "train_log.jsonl"
    stopped_at = len(log.read_text().splitlines()) + 2  # two steps into the new task's stage

    def stop():
        from contextlib import contextmanager

        @contextmanager
        def flag():
            yield lambda: len(log.read_text().splitlines()) >= stopped_at

        return flag()

    with monkeypatch.context() as patch:
        patch.setattr(stream_run, "stop_on_signals", stop)
        assert main(["extend", str(tmp_path / "run"), str(more), "--quiet"]) == 130
    assert main(["run", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert RunDir(tmp_path / "run").read_json("results.json")["matrix"] == reference.matrix
    assert cells(tmp_path / "run") == cells(tmp_path / "whole")

    stream_run.run(config(tiny_config, first, tmp_path / "joint", "multitask"), **quiet)
    with pytest.raises(LciaError, match="trains the tasks together"):
        extend_run(tmp_path / "joint", more, **quiet)
    capsys.readouterr()
    assert main(["extend", str(tmp_path / "run"), str(more)]) == 2  # shout is in the run already
    assert "task 'shout' is already in the run" in capsys.readouterr().err
    assert METHODS["lcia"].capabilities.trains
