import json
import subprocess
import sys

from peft import PeftModel

from lcia.evaluation.metrics import compute_metrics
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.stream_run import run


def test_run_writes_a_complete_grid_and_everything_to_trust_it(tiny_config):
    result = run(tiny_config, progress=False, log=lambda *_: None)
    out = RunDir(result.run_dir)
    results = out.read_json("results.json")
    assert results["tasks"] == ["colors", "echo"] and results["stages"] == [["colors"], ["echo"]]
    assert len(results["matrix"]) == 3 and all(len(row) == 2 for row in results["matrix"])
    assert results["metrics"] == compute_metrics(results["matrix"])
    assert set(results["intervals"]) == set(results["metrics"])
    predictions = out.read_jsonl("predictions.jsonl")
    assert len(predictions) == 3 * 2 * 6 and {"prediction", "references", "score", "id"} <= set(predictions[0])
    for row in range(3):  # each cell's score is the mean of its per-example scores
        for col, task in enumerate(results["tasks"]):
            s = [p["score"] for p in predictions if p["row"] == row and p["task"] == task]
            assert abs(sum(s) / len(s) - results["matrix"][row][col]) < 1e-4
    manifest = out.read_json("manifest.json")
    assert manifest["seed"] == 0 and manifest["packages"]["torch"] and len(manifest["timings"]["stages"]) == 2
    assert (result.run_dir / "config.yaml").exists()
    assert len(out.read_jsonl("train_log.jsonl")) == 2 * 4
    for stage in (1, 2):
        adapter = out.adapter_dir(stage)
        assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()


def test_same_seed_same_matrix(tiny_config, tmp_path):
    first = run(tiny_config, progress=False, log=lambda *_: None)
    second = run(
        tiny_config.model_copy(update={"output_dir": str(tmp_path / "again")}), progress=False, log=lambda *_: None
    )
    assert first.matrix == second.matrix
    a = [p["prediction"] for p in RunDir(first.run_dir).read_jsonl("predictions.jsonl")]
    b = [p["prediction"] for p in RunDir(second.run_dir).read_jsonl("predictions.jsonl")]
    assert a == b


def test_zero_shot_repeats_row_zero_and_multitask_is_one_stage(tiny_config, tmp_path):
    zero = tiny_config.model_copy(update={"output_dir": str(tmp_path / "zero")})
    zero.method.name = "zero-shot"
    result = run(zero, progress=False, log=lambda *_: None)
    assert result.matrix[0] == result.matrix[1] == result.matrix[2]
    assert not (result.run_dir / "adapters").exists()

    joint = tiny_config.model_copy(update={"output_dir": str(tmp_path / "joint")}, deep=True)
    joint.method.name = "multitask"
    result = run(joint, progress=False, log=lambda *_: None)
    assert len(result.matrix) == 2 and result.metrics["BWT"] is None and result.metrics["Avg.ACC"] is not None
    assert len(RunDir(result.run_dir).read_jsonl("train_log.jsonl")) == 8  # steps x tasks in one stage


def test_saved_adapter_loads_in_plain_peft(tiny_config, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    result = run(tiny_config, progress=False, log=lambda *_: None)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(RunDir(result.run_dir).adapter_dir(2))
    )
    weights = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(torch.count_nonzero(w) for w in weights), "the trained adapter was saved"


def test_refuses_to_overwrite_a_run(tiny_config):
    import pytest

    from lcia.errors import LciaError

    run(tiny_config, progress=False, log=lambda *_: None)
    with pytest.raises(LciaError, match="--overwrite"):
        run(tiny_config, progress=False, log=lambda *_: None)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lcia", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_run_metrics_and_eval(tiny_config, tmp_path):
    from lcia.config import RunConfig

    cfg_path = tmp_path / "run.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    done = _cli("run", str(cfg_path), "--quiet", "--set", f"output_dir={tmp_path / 'cli'}")
    assert done.returncode == 0, done.stderr
    assert "Avg.ACC" in done.stdout and "BWT" in done.stdout
    metrics = _cli("metrics", str(tmp_path / "cli"), "--json")
    assert metrics.returncode == 0, metrics.stderr
    stored = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert json.loads(metrics.stdout) == {"metrics": stored["metrics"], "intervals": stored["intervals"]}
    evaluated = _cli("eval", str(tmp_path / "cli"), "--stage", "2", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    saved = json.loads((tmp_path / "cli" / "eval" / "stage-2.json").read_text())
    assert saved["scores"] == {t: stored["matrix"][2][i] for i, t in enumerate(stored["tasks"])}
    assert RunConfig  # the config round-trips through YAML


def test_cli_bad_input_is_one_line_and_non_zero(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a" "output": "b"}\n')
    (tmp_path / "s.yaml").write_text("- name: x\n  train: d.jsonl\n")
    done = _cli("run", "--set", f"stream={tmp_path / 's.yaml'}", "--set", f"output_dir={tmp_path / 'r'}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "d.jsonl:2: malformed JSON" in lines[0]
    assert not (tmp_path / "r").exists(), "nothing is written before the stream validates"
    (tmp_path / "s.yaml").write_text("- add2\n- add7\n")
    done = _cli("run", "--set", f"stream={tmp_path / 's.yaml'}")
    assert done.returncode == 2 and "s.yaml:2: tasks[1]: unknown task 'add7'" in done.stderr


def test_over_long_examples_are_counted_in_one_warning_per_task(tiny_config):
    cfg = tiny_config.model_copy(deep=True)
    cfg.training.max_length = 16
    lines = []
    run(cfg, progress=False, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert (
        len(warnings) == 2
        and "task colors: 18 of 18 training examples exceed training.max_length (16 tokens)" in warnings[0]
    )


def test_dema_run_records_coefficients_and_fallbacks(tiny_config, tmp_path):
    cfg = tiny_config.model_copy(
        update={
            "method": tiny_config.method.model_copy(update={"name": "dema", "params": {"log_every": 2}}),
            "output_dir": str(tmp_path / "dema"),
        }
    )
    result = run(cfg, progress=False, log=lambda *_: None)
    out = RunDir(result.run_dir)
    summary = out.read_json("results.json")["method"]
    assert summary["preset"] == "official" and summary["settings"]["multiplier"] == 2.0
    assert [s["stage"] for s in summary["per_stage"]] == [1, 2]
    stages = out.read_json("manifest.json")["timings"]["stages"]
    assert [s["method"] for s in stages] == [{k: v for k, v in s.items() if k != "stage"} for s in summary["per_stage"]]
    counts = summary["counts"]
    assert counts["updates"] == counts["inside"] + counts["out_of_range"] + counts["nonfinite"] > 0
    records = out.read_jsonl("ema_coefficients.jsonl")
    assert [(r["stage"], r["step"]) for r in records] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert set(records[0]["coefficient"]) == set(records[0]["norms"]["raw"])
    assert all("ema_coefficient_median" in r for r in out.read_jsonl("train_log.jsonl") if r["step"] > 1)
    out.keep_train_log({"stage": 1, "step": 3})  # what a resumed run does: method logs are cut too
    assert [(r["stage"], r["step"]) for r in out.read_jsonl("ema_coefficients.jsonl")] == [(1, 2)]
