"""lcia compare: method specs, one config per (method, seed), and the comparison over real tiny runs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from lcia.cli import main
from lcia.compare import compare_configs, parse_method, run_compare, split_methods, write_comparison
from lcia.errors import LciaError
from lcia.pipeline.run_files import RunDir


def test_method_specs():
    assert split_methods("seq-lora,ewc:lam=1e5,gamma=0.9,lwf") == ["seq-lora", "ewc:lam=1e5,gamma=0.9", "lwf"]
    assert parse_method("ewc:lam=1e5,gamma=0.9") == ("ewc", {"lam": 1e5, "gamma": 0.9})
    assert parse_method("replay:sampling=reservoir") == ("replay", {"sampling": "reservoir"})
    with pytest.raises(LciaError, match="no method before it"):
        split_methods("lam=1,ewc")
    with pytest.raises(LciaError, match="key=value"):
        parse_method("ewc:lam")


def test_configs_differ_only_in_method_and_seed(tiny_config, tmp_path):
    configs = compare_configs(tiny_config, ["seq-lora", "ewc:lam=10"], [1, 2], tmp_path)
    assert [(c.method.name, c.method.params, c.seed) for c in configs] == [  # every method of a seed, then the next
        ("seq-lora", {}, 1),
        ("ewc", {"lam": 10}, 1),
        ("seq-lora", {}, 2),
        ("ewc", {"lam": 10}, 2),
    ]
    assert configs[3].run_dir() == str(tmp_path / "ewc-lam10-seed2")
    dumps = [c.model_dump(mode="json") for c in configs]
    for dump in dumps:
        for key in ("method", "seed", "output_dir"):
            dump.pop(key)
    assert all(d == dumps[0] for d in dumps)


@pytest.mark.parametrize(
    "methods, message",
    [
        (["nope"], "unknown method 'nope'"),
        (["ewc:lamda=1"], "method.params.lamda: Extra inputs"),
        (["lwf", "lwf"], "twice"),
    ],
)
def test_bad_methods_fail_before_any_run(tiny_config, tmp_path, methods, message):
    with pytest.raises(LciaError, match=message):
        compare_configs(tiny_config, methods, [0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compare_two_methods_over_two_seeds(tiny_config, tmp_path, capsys):
    out = tmp_path / "cmp"
    methods = ["seq-lora", "replay:buffer_size=4"]
    path = run_compare(tiny_config, methods, [0, 1], out, progress=False, log=lambda *_: None)
    record = json.loads((out / "comparison.json").read_text())
    assert [s["method"] for s in record["settings"]] == ["seq-lora", "replay (buffer_size=4)"]
    for setting in record["settings"]:
        assert setting["seeds"] == [0, 1]
        results = [RunDir(run).read_json("results.json") for run in setting["runs"]]
        for column, cell in setting["cells"].items():
            if column in record["tasks"]:
                values = [r["matrix"][-1][record["tasks"].index(column)] for r in results]
            else:
                values = [r["metrics"][column] for r in results]
            if cell is None:
                assert None in values
                continue
            assert cell["values"] == values
            assert cell["mean"] == pytest.approx(statistics.fmean(values))
            assert cell["std"] == pytest.approx(statistics.stdev(values))
    text = path.read_text()
    assert "| replay (buffer_size=4) | 2 (0, 1) |" in text and "Avg.ACC" in text

    # replay against seq-lora (the first listed), run against run with the same seed
    (difference,) = record["differences"]
    assert difference["setting"] == "replay (buffer_size=4)" and difference["seeds"] == [0, 1]
    ours, theirs = ([RunDir(run).read_json("results.json")["metrics"] for run in s["runs"]] for s in record["settings"])
    for name in ("Avg.ACC", "Forgetting"):
        paired = difference["metrics"][name]
        gaps = [a[name] - b[name] for a, b in zip(ours, theirs)]
        assert paired["difference"] == pytest.approx(statistics.fmean(gaps), abs=1e-3)  # the matrices are rounded
        low, high = paired["interval"]
        assert low <= paired["difference"] <= high and 0 <= paired["p"] <= 1
        t_test = stats.ttest_rel([a[name] for a in ours], [b[name] for b in theirs]).pvalue
        assert paired["t_test_p"] == (None if math.isnan(t_test) else pytest.approx(t_test))
    assert "## Paired differences" in text and "minus `seq-lora`" in text
    assert "### Paired differences" in (out / "report.md").read_text()
    assert (out / "report.md").exists()

    # the command line, again: it keeps the finished runs and prints the table
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")), encoding="utf-8")
    argv = ["compare", str(config), "--methods", "seq-lora,replay:buffer_size=4", "--seeds", "0,1", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished, kept") == 4 and "replay (buffer_size=4)" in printed and "comparison.md" in printed


def test_cli_compare_rejects_a_bad_method_with_one_line(tmp_path, capsys):
    assert main(["compare", "--methods", "seq-lora,nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown method 'nope'" in err


def test_a_committed_study_continues_on_a_machine_without_its_checkpoints(tiny_config, tmp_path, monkeypatch):
    """A study's small files are committed (benchmarks/studies/); its adapters and checkpoints are not. Continued
    from a clone, a stopped run keeps the rows it recorded, trains again from stage 1 (seeded, so to the same
    weights) and records where its second part ran."""
    import shutil
    from contextlib import contextmanager

    from lcia.errors import Interrupted
    from lcia.pipeline import stream_run as runner

    tiny_config.method.name = "dema"  # a method with state of its own (the EMA), lost with the checkpoints
    tiny_config.method.params = {"log_every": 1}
    reference = runner.run(
        tiny_config.model_copy(update={"output_dir": str(tmp_path / "ref")}), progress=False, log=lambda *_: None
    )
    out = tmp_path / "study"
    (cfg,) = compare_configs(tiny_config, ["dema:log_every=1"], [0], out)
    log = out / "dema-log_every1-seed0" / "train_log.jsonl"

    @contextmanager
    def stop_in_stage_2():
        yield lambda: log.exists() and len(log.read_text().splitlines()) == 4 + 2

    with monkeypatch.context() as patch:
        patch.setattr(runner, "stop_on_signals", stop_in_stage_2)
        with pytest.raises(Interrupted, match="stopped at stage 2, step 2"):
            runner.run(cfg, progress=False, log=lambda *_: None)
    run = RunDir(cfg.run_dir())
    for weights in ("adapters", "checkpoints"):  # what a clone of the committed study lacks
        shutil.rmtree(run.path / weights)
    printed = []

    run_compare(tiny_config, ["dema:log_every=1"], [0], out, progress=False, log=printed.append)

    assert any("resuming" in line for line in printed)
    ref = RunDir(reference.run_dir)
    assert run.read_json("results.json")["matrix"] == reference.matrix
    assert run.read_jsonl("predictions.jsonl") == ref.read_jsonl("predictions.jsonl")
    assert run.read_jsonl("train_log.jsonl") == ref.read_jsonl("train_log.jsonl")
    assert run.read_jsonl("ema_coefficients.jsonl") == ref.read_jsonl("ema_coefficients.jsonl")
    (where,) = run.read_json("manifest.json")["resumed"]
    assert where["rows_done"] == 2 and where["checkpoint"] is None
    assert json.loads((out / "comparison.json").read_text())["settings"][0]["runs"] == [str(run.path)]
    assert (run.path / "predictions.jsonl.gz").exists() and not (run.path / "predictions.jsonl").exists()  # packed


def test_a_packed_run_reads_reports_and_resumes_as_a_plain_one(tiny_config, tmp_path):
    from lcia.pipeline import stream_run as runner
    from lcia.reporting.report import write_report

    result = runner.run(tiny_config, progress=False, log=lambda *_: None)
    run = RunDir(result.run_dir)
    names = sorted(p.name for p in run.path.glob("*.jsonl"))
    assert {"predictions.jsonl", "train_log.jsonl"} <= set(names)
    plain = {name: run.read_jsonl(name) for name in names}
    run.pack()
    assert sorted(p.name for p in run.path.glob("*.jsonl*")) == sorted(f"{name}.gz" for name in names)
    assert {name: run.read_jsonl(name) for name in names} == plain and run.has("predictions.jsonl")
    packed = (run.path / "predictions.jsonl.gz").read_bytes()
    run.unpack()
    run.pack()  # the same lines give the same bytes: a committed study does not change when packed again
    assert (run.path / "predictions.jsonl.gz").read_bytes() == packed
    assert "Avg.ACC" in write_report([str(run.path)], tmp_path / "report").read_text()

    again = runner.run(tiny_config, resume=True, progress=False, log=lambda *_: None)  # unpacked, then kept
    assert again.matrix == result.matrix
    assert sorted(p.name for p in run.path.glob("*.jsonl*")) == names
    assert {name: run.read_jsonl(name) for name in names} == plain


def test_a_joint_run_is_left_out_of_the_paired_differences(tmp_path):
    """multitask trains all tasks in one stage (a two-row matrix): no stage of it pairs with a sequential run's."""
    study = Path(__file__).resolve().parents[1] / "benchmarks" / "studies" / "compare-coin-mini"
    runs = [str(study / f"{name}-seed0") for name in ("seq-lora", "multitask", "gem")]
    write_comparison(runs, tmp_path)
    record = json.loads((tmp_path / "comparison.json").read_text())
    assert [s["method"] for s in record["settings"]] == ["seq-lora", "multitask", "gem"]
    assert [d["setting"] for d in record["differences"]] == ["gem"]
    assert record["differences"][0]["metrics"]["Avg.ACC"]["difference"] == pytest.approx(0.836 - 0.259, abs=2e-3)


def test_orders_name_their_runs_and_change_nothing_but_the_order(tiny_config, tmp_path):
    configs = compare_configs(tiny_config, ["seq-lora", "lcia"], [0], tmp_path, ["original", "reverse"])
    assert [(c.method.name, c.data.order, Path(c.run_dir()).name) for c in configs] == [
        ("seq-lora", "original", "seq-lora-seed0"),  # the stream's own order: the name of a plain compare's run
        ("lcia", "original", "lcia-seed0"),
        ("seq-lora", "reverse", "seq-lora-reverse-seed0"),
        ("lcia", "reverse", "lcia-reverse-seed0"),
    ]


def test_orders_are_replicates_paired_by_seed_and_order(tmp_path):
    """Two methods over two task orders (seed 0): the orders pool like seeds, each task's final score is read by
    its name whatever its column, and each lcia run pairs with seq-lora's of the same order."""
    from test_report import make_run

    from lcia.reporting.report import write_report

    ends = {  # (method, order): the last row, in training order (original: a, b; reverse: b, a)
        ("seq-lora", "original"): [0.2, 0.8],  # Avg.ACC 0.50
        ("seq-lora", "reverse"): [0.3, 0.8],  # 0.55; task b ends at 0.3, a at 0.8
        ("lcia", "original"): [0.7, 0.8],  # 0.75: +0.25 on seq-lora
        ("lcia", "reverse"): [0.6, 0.8],  # 0.70: +0.15
    }
    runs = []
    for (method, order), end in ends.items():
        tasks = ["a", "b"] if order == "original" else ["b", "a"]
        suffix = "" if order == "original" else f"-{order}"
        matrix = [[0.0, 0.0], [0.8, 0.0], end]
        path = tmp_path / f"{method}{suffix}-seed0"
        runs.append(str(make_run(path, method, matrix=matrix, tasks=tasks, order=order, examples=20).path))
    text = write_comparison(runs, tmp_path / "out", command=["lcia", "compare"]).read_text()
    record = json.loads((tmp_path / "out" / "comparison.json").read_text())
    seq, lcia = record["settings"]
    assert seq["orders"] == ["original", "reverse"] and seq["seeds"] == [0, 0]
    assert seq["cells"]["Avg.ACC"]["values"] == pytest.approx([0.5, 0.55])
    assert seq["cells"]["a"]["values"] == pytest.approx([0.2, 0.8]) and lcia["cells"]["b"]["mean"] == pytest.approx(0.7)
    (difference,) = record["differences"]
    assert difference["orders"] == ["original", "reverse"]
    avg = difference["metrics"]["Avg.ACC"]
    assert avg["difference"] == pytest.approx(0.20)
    assert avg["t_test_p"] == pytest.approx(stats.ttest_rel([0.75, 0.70], [0.50, 0.55]).pvalue)
    assert "| lcia | 2 (0, reverse 0) | +0.200 [" in text and "; orders p " in text
    assert "Task orders count as seeds here" in text
    assert "differs from the others only in its method, seed and task order." in text
    report = write_report(runs, tmp_path / "report").read_text()  # lcia report keeps each order a setting
    assert "# lcia report: 4 runs, 4 settings" in report and "| lcia [data.order=reverse] | 1 (reverse 0) |" in report
    assert "data.order" not in text


def test_reuse_copies_a_finished_run_of_the_same_config_and_machine_and_nothing_else(tmp_path):
    """Studies that share a baseline run it once: ``--reuse`` copies a finished run whose config differs only in
    its directory and which trained on this kind of machine, with its config naming the new directory and its
    manifest the source; another seed, or the same config from another kind of machine, is no copy."""
    from test_report import make_run

    from lcia.config import load_config
    from lcia.core.precision import resolve_precision
    from lcia.reporting.manifest import hardware
    from lcia.sweep import identical_run, run_or_resume

    def trained(path, here: bool):
        run = make_run(path, examples=3)
        gpu = {} if here else {"cuda": True, "gpu": "NVIDIA H200"}
        manifest = run.read_json("manifest.json") | {
            "hardware": hardware() | gpu,
            "precision": resolve_precision("auto"),
        }
        run.write_json("manifest.json", manifest)

    source, elsewhere = tmp_path / "studies" / "first" / "seq-lora-seed0", tmp_path / "gpu" / "seq-lora-seed0"
    trained(elsewhere, here=False)
    trained(source, here=True)
    (source / "adapters").mkdir()  # weights stay where they were trained
    same, other = (
        load_config(None, [f"output_dir={tmp_path / 'second' / 'seq-lora-seed0'}", f"seed={s}"]) for s in (0, 1)
    )
    printed = []

    run_or_resume([same], progress=False, log=printed.append, reuse=tmp_path / "studies")

    copy = RunDir(same.run_dir())
    assert printed == [f"[1/1] {copy.path}: copied from {source}", f"[1/1] {copy.path}: finished, kept"]
    assert copy.read_jsonl("predictions.jsonl") == RunDir(source).read_jsonl("predictions.jsonl")
    assert copy.read_json("results.json") == RunDir(source).read_json("results.json")
    assert yaml.safe_load((copy.path / "config.yaml").read_text())["output_dir"] == str(copy.path)
    assert copy.read_json("manifest.json") == RunDir(source).read_json("manifest.json") | {"copied_from": str(source)}
    assert not (copy.path / "adapters").exists()
    assert identical_run(other, tmp_path / "studies") is None
    assert identical_run(same, tmp_path / "second") is None  # a run is not its own source
    assert identical_run(same, tmp_path / "gpu") is None  # another kind of machine made another run


def test_runs_on_two_kinds_of_machine_are_named_and_so_are_pairs_across_them(tmp_path):
    """The same config on a CPU and a GPU gives two different runs: the comparison names each setting's machines,
    and every difference whose pairs cross two kinds."""
    from test_report import make_run

    runs = []
    for method, seed in [("seq-lora", 0), ("seq-lora", 1), ("ewc", 0), ("ewc", 1)]:
        run = make_run(tmp_path / f"{method}-seed{seed}", method, seed=seed, examples=20)
        if (method, seed) == ("ewc", 1):  # this one trained on a GPU
            manifest = run.read_json("manifest.json")
            manifest["hardware"] |= {"cuda": True, "gpu": "NVIDIA H200"}
            run.write_json("manifest.json", manifest)
        runs.append(str(run.path))
    text = write_comparison(runs, tmp_path / "out", command=["lcia", "compare"]).read_text()

    assert "| seq-lora | 2 (0, 1) | CPU | `seq-lora-seed0`, `seq-lora-seed1` |" in text
    assert "| ewc | 2 (0, 1) | CPU 1, NVIDIA H200 1 |" in text
    assert "The runs trained on more than one kind of machine (CPU 3, NVIDIA H200 1)" in text
    assert "Pairs across two kinds of machine: ewc (1 of 2: NVIDIA H200 against CPU)" in text
    (difference,) = json.loads((tmp_path / "out" / "comparison.json").read_text())["differences"]
    assert difference["machines"] == ["CPU", "NVIDIA H200 against CPU"]
    one_kind = write_comparison(runs[:2] + runs[2:3], tmp_path / "one", command=["lcia", "compare"]).read_text()
    assert "kind of machine" not in one_kind and "kinds of machine" not in one_kind
