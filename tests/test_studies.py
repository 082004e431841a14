"""The committed studies and the scripts that continue them: every committed run is one its lane's command keeps
(the same config, so a study continues on any machine), and the GPU's tars bring back finished runs only,
without touching a run already finished here."""

import importlib.util
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import pytest

from lcia.compare import write_comparison
from lcia.sweep import _saved_config, finished

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
STUDIES = sorted(path.parent.name for path in (BENCHMARKS / "studies").glob("*/comparison.json"))


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lanes():
    return load("lanes", BENCHMARKS / "studies" / "lanes.py")


@pytest.fixture(scope="module")
def gpu_studies():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return load("gpu_studies", BENCHMARKS / "gpu_studies.py")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_committed_run_of_a_lane_is_one_its_command_keeps(lanes, monkeypatch):
    monkeypatch.chdir(lanes.ROOT)  # the commands' --out are relative to the repository
    committed = 0
    for command in {tuple(c) for lane in lanes.LANES.values() for c in lane}:
        for cfg in lanes.configs(list(command)):
            path = Path(cfg.run_dir())
            if finished(path):
                assert _saved_config(path) == cfg.model_dump(mode="json"), path
                committed += 1
    assert committed >= 12  # seeds-ni-cit at least


@pytest.mark.parametrize("study", STUDIES)
def test_a_committed_comparison_is_what_its_committed_runs_give_again(study, tmp_path, monkeypatch):
    """A fresh clone holds each study's small files only (no adapters, no checkpoints): from them, comparison.md
    and comparison.json are written again byte for byte, with the command the committed one records."""
    monkeypatch.chdir(BENCHMARKS.parent)  # the runs are named relative to the repository
    committed = BENCHMARKS / "studies" / study
    record, text = json.loads((committed / "comparison.json").read_text()), (committed / "comparison.md").read_text()
    runs = [run for setting in record["settings"] for run in setting["runs"]]
    command = shlex.split(text.split("Command: `", 1)[1].split("`", 1)[0])
    write_comparison(runs, tmp_path, command=command)
    assert (tmp_path / "comparison.md").read_text() == text
    assert json.loads((tmp_path / "comparison.json").read_text()) == record


def test_the_gpu_lane_takes_whole_studies_the_cpu_lane_reaches_last(lanes):
    """A study keeps to one kind of machine: the GPU's studies are the CPU lane's last (the H200's finished one
    aside), so neither is likely to have started one the other runs."""
    finished_h200, *rest = lanes.LANES["gpu"]
    assert rest == lanes.LANES["cpu"][-len(rest) :] and f"{lanes.OUT}/seeds-ni-cit-h200" in finished_h200
    assert all("ni-cit-diverse" not in " ".join(command) for command in lanes.LANES["gpu"])  # needs the embedder


def fake_run(path: Path, done: bool, text: str = "here") -> None:
    (path / "checkpoints").mkdir(parents=True)
    (path / "checkpoints" / "state.safetensors").write_text("weights")
    (path / "predictions.jsonl.gz").write_text(text)
    (path / "results.json").write_text(json.dumps({"metrics": {}} if done else {"rows": []}))


def test_the_tars_bring_back_finished_runs_without_weights_and_keep_runs_finished_here(gpu_studies, tmp_path):
    study = Path("benchmarks/studies/s")
    device, here = tmp_path / "device", tmp_path / "here"
    fake_run(device / study / "a-seed0", done=True, text="device")
    fake_run(device / study / "b-seed0", done=False, text="device")
    fake_run(device / study / "c-seed0", done=True, text="device")
    assert gpu_studies.pack(study, tmp_path / "s.tar.gz", root=device) == 2
    fake_run(here / study / "a-seed0", done=False)  # stopped here: replaced by the device's finished run
    fake_run(here / study / "c-seed0", done=True)  # finished here: kept as it is
    gpu_studies.unpack(tmp_path, root=here)
    assert (here / study / "a-seed0" / "predictions.jsonl.gz").read_text() == "device"
    assert not (here / study / "a-seed0" / "checkpoints").exists()  # weights stay on the device
    assert not (here / study / "b-seed0").exists()
    assert (here / study / "c-seed0" / "predictions.jsonl.gz").read_text() == "here"


def test_a_worker_finds_its_run_by_directory_and_status_counts_each_study(lanes, monkeypatch, capsys):
    monkeypatch.chdir(lanes.ROOT)
    with pytest.raises(SystemExit, match="no run of this lane"):  # a queue made before the lane's file changed
        lanes.one(lanes.LANES["cpu"], "benchmarks/studies/seeds-ni-cit/nope-seed0")
    lanes.status(lanes.LANES["cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(lanes.LANES["cpu"])
    totals = [int(line.split(" of ")[1].split(" finished")[0]) for line in lines if "/seeds-ni-cit:" in line]
    assert totals == [4 * 3, 19 * 3]  # the core four first, then every method, over three seeds


def test_a_run_is_expected_to_take_its_settings_time_else_its_methods_else_the_median(lanes, monkeypatch):
    monkeypatch.chdir(lanes.ROOT)
    r8, r16 = lanes.configs(lanes.frontier(8)), lanes.configs(lanes.frontier(16))  # rank 16: never run
    olora = lanes.configs(["compare", "configs/ni-cit.yaml", "--methods", "olora", "--seeds", "0", *lanes.NI,
                           "--set", "lora.r=16", "--out", "nowhere"])  # fmt: skip
    expected = lanes.expected_seconds(r8 + r16 + olora)
    took = {cfg.run_dir(): json.loads(Path(cfg.run_dir(), "manifest.json").read_text())["timings"] for cfg in r8}
    # a run resumed before total_seconds counted every process (ema at beta 0.9 here) took at least its stages and rows
    worked = {path: sum(s["seconds"] for s in t["stages"]) + sum(t["rows"]) for path, t in took.items()}
    wall = {path: max(t["total_seconds"], worked[path]) for path, t in took.items()}
    assert any(wall[path] > t["total_seconds"] for path, t in took.items())
    assert all(expected[path] == wall[path] for path in took)
    ewc = [wall[cfg.run_dir()] for cfg in r8 if cfg.method.name == "ewc"]
    assert [expected[cfg.run_dir()] for cfg in r16 if cfg.method.name == "ewc"] == [statistics.fmean(ewc)] * 3
    assert expected[olora[0].run_dir()] > 0  # no olora among them: the median of the others


def test_a_stopped_run_is_expected_to_take_at_least_what_it_has_spent(lanes, monkeypatch, tmp_path):
    monkeypatch.chdir(lanes.ROOT)
    [cfg] = lanes.configs(
        ["compare", "configs/ni-cit.yaml", "--methods", "gem", "--seeds", "0", "--out", str(tmp_path)]
    )
    Path(cfg.run_dir()).mkdir(parents=True)
    timings = {"stages": [{"seconds": 900.0}, {"seconds": 1800.0}], "rows": [20.0, 20.0]}  # stopped in stage 3
    Path(cfg.run_dir(), "manifest.json").write_text(json.dumps({"timings": timings}))
    assert lanes.expected_seconds([cfg]) == {cfg.run_dir(): 2740.0}


def test_near_the_deadline_a_shorter_run_starts_and_a_longer_one_waits(lanes):
    expected = {"gem": 7200.0, "seq-lora": 800.0}
    assert lanes.first_to_fit(["gem", "seq-lora"], expected, deadline=time.monotonic() + 1800) == "seq-lora"
    assert lanes.first_to_fit(["gem", "seq-lora"], expected, deadline=float("inf")) == "gem"
    assert lanes.first_to_fit(["gem"], expected, deadline=time.monotonic() + 1800) is None


def test_a_committed_copy_holds_its_sources_results_and_config_but_its_directory(lanes, monkeypatch):
    """A run a study copied (``--reuse``) is its source's run: the same results, predictions, log and manifest."""
    monkeypatch.chdir(lanes.ROOT)
    manifests = {m.parent: json.loads(m.read_text()) for m in sorted(Path(lanes.OUT).glob("*/*/manifest.json"))}
    copies = {path: manifest for path, manifest in manifests.items() if "copied_from" in manifest}
    for copy, manifest in copies.items():
        source = Path(manifest.pop("copied_from"))
        assert manifest == manifests[source], copy
        assert _saved_config(copy) == _saved_config(source) | {"output_dir": str(copy)}, copy
        for name in ("results.json", "predictions.jsonl.gz", "train_log.jsonl.gz"):
            assert (copy / name).read_bytes() == (source / name).read_bytes(), copy / name
    assert copies  # seeds-ni-cit's seed 0, from the frontier at rank 8


def test_the_machines_table_pairs_each_config_trained_on_two_kinds_once():
    """benchmarks/studies/machines.py over the committed runs: seq-lora and dema at seed 0 ran on the H200 and on a
    CPU; a copy of a run is not a second one."""
    machines = load("machines", BENCHMARKS / "studies" / "machines.py")
    pairs = machines.pairs_across_machines()
    assert {(a.config["method"]["name"], a.config["seed"]) for a, _ in pairs} >= {("seq-lora", 0), ("dema", 0)}
    assert all(a.machine == "CPU bf16" and b.machine == "NVIDIA H200 bf16" for a, b in pairs)
    assert len({str(a.path) for a, _ in pairs}) == len(pairs)
    seq_lora = next(pair for pair in pairs if pair[0].config["method"]["name"] == "seq-lora")
    assert machines.same_predictions(*seq_lora, row=0) == pytest.approx(0.922, abs=1e-3)
    order = [(a.config["seed"], machines.method_label(a.config)) for a, _ in pairs]
    assert order == sorted(order)
    text = machines.table(pairs)
    assert "| seq-lora | 0 | 0.260 / 0.373: +0.113 [" in text
    assert "- Avg.ACC by setting, mean difference over its pairs: dema " in text
