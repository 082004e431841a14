"""benchmarks/gpu_check.py's own parts: the data it carries gives the same tasks, the model's parts join only
when they are the prepared ones, and a step is stopped at its limit or skipped when the part's time is spent."""

import hashlib
import importlib.util
import lzma
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_model_joins_only_from_its_own_parts(gpu_check, tmp_path):
    model = bytes(range(256)) * 1000
    packed = lzma.compress(model)
    (tmp_path / "a").write_bytes(packed[:100]), (tmp_path / "b").write_bytes(packed[100:])
    sha = hashlib.sha256(model).hexdigest()
    gpu_check.join([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "model.gguf", sha)
    assert (tmp_path / "out" / "model.gguf").read_bytes() == model
    with pytest.raises(SystemExit, match="SHA-256"):
        gpu_check.join([tmp_path / "a", tmp_path / "b"], tmp_path / "other.gguf", "0" * 64)


def test_the_model_takes_as_many_calls_as_the_working_tree_leaves_room_for(gpu_check, tmp_path, monkeypatch):
    assert gpu_check.part_sizes(100, first=30, room=40) == [30, 40, 30]
    assert gpu_check.part_sizes(100, first=60, room=40) == [60, 40]
    assert gpu_check.part_sizes(50, first=60, room=40) == [50]
    with pytest.raises(SystemExit, match="no room"):
        gpu_check.part_sizes(100, first=-5, room=40)  # call 1's payload alone is over the limit
    monkeypatch.setattr(gpu_check, "GPU", tmp_path)
    monkeypatch.setattr(gpu_check, "CALL1", tmp_path / "call1")
    (tmp_path / "call1").mkdir()
    (tmp_path / "call1" / "manifest.json").write_text('{"model": {"parts": 3}}')
    assert gpu_check.model_parts() == [tmp_path / f"call{k}" / f"model.part{k}" for k in (1, 2, 3)]
    calls = gpu_check.commands({"call_bytes": [1, 2, 3]}).splitlines()[1:]
    assert [call.split("carry=")[1].split("]")[0] for call in calls] == [f"['.gpu/call{k}'" for k in (1, 2, 3)]
    assert "part1" in calls[0] and "ls .gpu" in calls[1] and "part2" in calls[2]


def test_a_step_is_stopped_at_its_limit_and_skipped_when_the_time_is_spent(gpu_check, tmp_path):
    steps = gpu_check.Steps(budget=40, env={}, log=tmp_path / "log")
    assert steps.run("quick", [sys.executable, "-c", "print('hi')"], limit=30)
    assert not steps.run("slow", [sys.executable, "-c", "import time; time.sleep(60)"], limit=1)
    assert steps.records["slow"]["status"] != "ok" and steps.records["slow"]["seconds"] < 30
    # a stop condition that never comes true gives up at the step's limit, which then ends the process
    waited = []
    never = lambda process, until: waited.append(gpu_check.stop_in_stage(process, until, tmp_path / "none", 2))  # noqa: E731
    assert not steps.run("stuck", [sys.executable, "-c", "import time; time.sleep(60)"], limit=1, stop=never)
    assert waited and steps.records["stuck"]["seconds"] < 30
    steps.deadline = 0  # the part's budget spent
    assert not steps.run("late", [sys.executable, "-c", "pass"], limit=30)
    assert steps.records["late"]["status"].startswith("skipped")
    assert "hi" in (tmp_path / "log").read_text()
