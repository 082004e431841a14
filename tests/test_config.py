import pytest

from lcia.config import RunConfig, load_config
from lcia.errors import LciaError


def test_defaults_are_the_demo():
    cfg = RunConfig()
    assert cfg.stream == "ni-cit-small" and cfg.method.name == "seq-lora"
    assert cfg.run_dir() == "runs/ni-cit-small-seq-lora-seed0"


def test_overrides_parse_yaml_scalars(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  steps: 10\nmethod:\n  name: multitask\n")
    cfg = load_config(str(path), ["training.lr=5e-4", "lora.target_modules=[q_proj, k_proj]", "seed=3"])
    assert cfg.training.steps == 10 and cfg.training.lr == 5e-4
    assert cfg.lora.target_modules == ["q_proj", "k_proj"] and cfg.seed == 3 and cfg.method.name == "multitask"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("training:\n  steps: 10\n  lrr: 0.1\n", "run.yaml:3: training.lrr: Extra inputs are not permitted"),
        ("seed: 1\ntraining:\n  steps: -2\n", "run.yaml:3: training.steps: Input should be greater than 0"),
        ("method:\n  name: sgd\n", "run.yaml:2: method.name: unknown method 'sgd'"),
        ("training: [1, 2\n", "run.yaml:2: invalid YAML"),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(LciaError) as err:
        load_config(str(path))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_override_names_the_key():
    with pytest.raises(LciaError, match=r"^--set: training\.batch_size: Input should be greater than 0"):
        load_config(None, ["training.batch_size=0"])
    with pytest.raises(LciaError, match="expected key=value"):
        load_config(None, ["training.steps"])


def test_missing_config_file(tmp_path):
    with pytest.raises(LciaError, match="nope.yaml: file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_auto_precision_takes_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch):
    from lcia.core import precision

    zen3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
    sapphire_rapids = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert not precision.cpu_has_native_bf16(zen3)
    assert precision.cpu_has_native_bf16(sapphire_rapids)
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto") == "fp32"
    assert precision.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto") == "bf16"
    assert precision.resolve_precision("fp32") == "fp32"


def test_a_run_records_the_precision_it_resolved(tiny_config):
    import json

    from lcia.core.precision import resolve_precision
    from lcia.pipeline.stream_run import run

    tiny_config.training.steps = 1
    result = run(tiny_config, progress=False, log=lambda *a: None)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert tiny_config.training.precision == "auto"
    assert manifest["precision"] == resolve_precision("auto")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_answers_in_its_precision_and_lcia_eval_repeats_its_answers(tiny_config, monkeypatch, precision):
    import json

    import torch

    from lcia.core.precision import cpu_has_native_bf16
    from lcia.evaluation import generate
    from lcia.pipeline.session import evaluate_saved
    from lcia.pipeline.stream_run import run

    seen = set()  # (autocast on, attention) of every generation batch
    real = generate._generate_batch

    def spy(model, *args, **kwargs):
        seen.add((torch.is_autocast_enabled("cpu"), model.config._attn_implementation))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(generate, "_generate_batch", spy)
    tiny_config.training.precision = precision
    result = run(tiny_config, progress=False, log=lambda *a: None)
    bf16 = precision == "bf16"
    assert seen == {(bf16, "eager" if bf16 else "sdpa")}  # eager attention is the faster in bf16 on a CPU
    seen.clear()
    evaluate_saved(str(result.run_dir), progress=False)
    if bf16 and not cpu_has_native_bf16():  # `lcia eval` answers in fp32 where bf16 would be emulated
        assert seen == {(False, "sdpa")}
        return
    assert seen == {(bf16, "eager" if bf16 else "sdpa")}
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    last_row = [r["prediction"] for r in read(result.run_dir / "predictions.jsonl") if r["row"] == 2]
    assert [r["prediction"] for r in read(result.run_dir / "eval/stage-2.predictions.jsonl")] == last_row


def test_epochs_give_each_stage_its_passes_over_its_own_examples():
    from lcia.config import TrainingConfig
    from lcia.data.tasks import Task

    small, large = Task("small", [None] * 10, []), Task("large", [None] * 33, [])
    assert TrainingConfig(steps=7).stage_steps([small, large]) == 14  # steps per task, whatever their size
    by_epochs = TrainingConfig(epochs=1, batch_size=4, grad_accum=2)
    assert [by_epochs.stage_steps(stage) for stage in ([small], [large], [small, large])] == [2, 5, 6]
    assert TrainingConfig(epochs=0.1, batch_size=8).stage_steps([small]) == 1  # at least one step
    small.epochs = 3  # a benchmark's scripts train it three times over
    assert TrainingConfig(epochs="benchmark", batch_size=4).stage_steps([small, large]) == 16  # (30 + 33) / 4
    assert TrainingConfig(epochs=1, batch_size=4).stage_steps([small]) == 3
    assert TrainingConfig(warmup_ratio=0.03).warmup(1000) == 30 and TrainingConfig(warmup_steps=5).warmup(1000) == 5
