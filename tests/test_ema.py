"""The EMA presets against the formulas worked by hand, in the loop, on resume, in bf16 and in a Trainer."""

import math

import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig
from lcia.errors import Interrupted, LciaError
from lcia.mechanisms.weight_ema import PRESETS, DynamicEma, settings_for
from lcia.methods import build_method
from lcia.pipeline.checkpoints import Checkpoints


def _param(values, grad, dtype=torch.float32):
    p = torch.nn.Parameter(torch.tensor(values, dtype=dtype))
    p.grad = torch.tensor(grad, dtype=dtype)
    return p


def _step(engine, p, values, grad):
    with torch.no_grad():
        p.copy_(torch.tensor(values))
    p.grad = torch.tensor(grad, dtype=p.dtype)
    engine.update({"w": p})


def reference(settings, thetas, grads):
    """The formulas of docs/ema.md in plain Python on lists of floats: (coefficients, final EMA)."""
    l1 = lambda xs: sum(abs(x) for x in xs)  # noqa: E731
    scale = (lambda s, n: s / n) if settings.norm == "mean" else (lambda s, n: s)
    ema, coefficients = list(thetas[0]), []
    for t in range(1, len(thetas)):
        theta, g, n = thetas[t], grads[t], len(thetas[t])
        big_g = scale(l1(g), n)
        dist = scale(l1([a - b for a, b in zip(theta, ema)]), n)
        dgrad = scale(l1([a - b for a, b in zip(g, grads[t - 1])]), n)
        if settings.form == "fixed":
            c = settings.beta
        else:
            with_zero = dist * dgrad
            weight = 1 if settings.stability == "one" else big_g
            c = settings.multiplier * (weight + big_g) / with_zero if with_zero else math.inf
            if settings.form == "paper":
                c *= scale(l1([a - b for a, b in zip(theta, thetas[t - 1])]), n)
            if not (0 < c < 1):
                c = settings.fallback
        coefficients.append(c)
        w = c if settings.weighs == "new" else 1 - c
        ema = [(1 - w) * e + w * x for e, x in zip(ema, theta)]
    return coefficients, ema


def test_official_coefficient_worked_by_hand():
    engine = DynamicEma(PRESETS["official"])
    p = _param([1.0, -1.0], [0.5, 0.5])
    engine.update({"w": p})  # the EMA starts at the weights after the first step
    assert engine.ema["w"].tolist() == [1.0, -1.0]
    _step(engine, p, [3.0, -2.0], [0.1, -0.3])
    # |g|=0.4, |theta-ema|=3, |g-g_prev|=1.2: alpha = 2 * 1.4 / 3.6 = 7/9, on the new weights
    assert engine.last["coefficient"]["w"] == pytest.approx(7 / 9)
    assert engine.ema["w"].tolist() == pytest.approx([23 / 9, -16 / 9])
    assert engine.counts == {"updates": 1, "inside": 1, "out_of_range": 0, "nonfinite": 0, "first_step": 0}


def test_paper_coefficient_worked_by_hand():
    engine = DynamicEma(PRESETS["paper"])
    p = _param([1.0, -1.0], [0.5, 0.5])
    engine.update({"w": p})
    _step(engine, p, [3.0, -2.0], [0.1, -0.3])
    # beta = 1.4 * |theta - theta_prev| 3 / (3 * 1.2) = 7/6: outside (0, 1), so 0.99 on the old EMA
    assert engine.last["norms"]["raw"]["w"] == pytest.approx(7 / 6)
    assert engine.ema["w"].tolist() == pytest.approx([1.02, -1.01])
    _step(engine, p, [3.5, -2.0], [0.1, 0.5])
    beta = 1.6 * 0.5 / ((2.48 + 0.99) * 0.8)
    assert engine.last["coefficient"]["w"] == pytest.approx(beta)
    assert engine.ema["w"].tolist() == pytest.approx([beta * 1.02 + (1 - beta) * 3.5, beta * -1.01 - (1 - beta) * 2])
    assert engine.counts["inside"] == 1 and engine.counts["out_of_range"] == 1


@pytest.mark.parametrize("preset", ["official", "paper", "scaled", "fixed"])
def test_presets_follow_the_formulas_over_many_steps(preset):
    generator = torch.Generator().manual_seed(1)
    thetas = [torch.randn(6, generator=generator).tolist() for _ in range(8)]
    grads = [(torch.randn(6, generator=generator) * 3).tolist() for _ in range(8)]
    engine, p = DynamicEma(PRESETS[preset]), _param(thetas[0], grads[0], dtype=torch.float64)
    engine.update({"w": p})
    seen = []
    for theta, g in zip(thetas[1:], grads[1:]):
        _step(engine, p, theta, g)
        seen.append(engine.last["coefficient"]["w"])
    coefficients, ema = reference(PRESETS[preset], thetas, grads)
    assert seen == pytest.approx(coefficients)
    assert engine.ema["w"].tolist() == pytest.approx(ema, rel=1e-5, abs=1e-6)  # fp32 state


def test_sums_shrink_with_tensor_size_and_means_do_not():
    """The same per-element statistics in a tensor 16 times larger: official's coefficient shrinks, scaled's stays."""
    small = ([[0.0, 0.0], [0.4, -0.3]], [[0.02, -0.01], [0.01, 0.03]])
    big = tuple([[v for v in row] * 16 for row in rows] for rows in small)
    for preset, same in (("official", False), ("scaled", True)):
        raws = []
        for thetas, grads in (small, big):
            engine = DynamicEma(settings_for(preset, multiplier=1.0))
            p = _param(thetas[0], grads[0])
            engine.update({"w": p})
            _step(engine, p, thetas[1], grads[1])
            raws.append(engine.last["norms"]["raw"]["w"])
        assert (raws[0] == pytest.approx(raws[1])) == same, (preset, raws)


def test_every_fallback_is_counted_with_its_reason():
    engine = DynamicEma(settings_for("official", init="task_start"))
    p = _param([1.0, 2.0], [0.1, 0.1])
    engine.start_task({"w": p})
    engine.update({"w": p})  # no previous gradient yet
    _step(engine, p, [1.0, 2.0], [0.1, 0.1])  # theta = ema and g = g_prev: 0/0 is not a number
    _step(engine, p, [1.1, 2.0], [0.2, 0.1])  # 2 * 1.3 / (~0.1 * 0.1): far above 1
    assert engine.counts == {"updates": 3, "inside": 0, "out_of_range": 1, "nonfinite": 1, "first_step": 1}
    assert engine.last["coefficient"]["w"] == 0.01


def test_a_trainable_tensor_without_gradient_is_an_error():
    engine = DynamicEma(PRESETS["official"])
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(LciaError, match="w has no gradient"):
        engine.update({"w": p})


def test_bf16_weights_keep_fp32_state():
    thetas = [[1.0, -1.0, 0.5], [3.0, -2.0, 0.25], [3.5, -2.0, 0.125]]
    grads = [[0.5, 0.5, 0.0], [0.125, -0.25, 0.5], [0.25, 0.5, 0.0]]  # exact in bf16
    engine, p = DynamicEma(PRESETS["official"]), _param(thetas[0], grads[0], dtype=torch.bfloat16)
    engine.update({"w": p})
    for theta, g in zip(thetas[1:], grads[1:]):
        _step(engine, p, theta, g)
    assert engine.ema["w"].dtype == torch.float32 and engine.prev_grad["w"].dtype == torch.float32
    assert engine.ema["w"].tolist() == pytest.approx(reference(PRESETS["official"], thetas, grads)[1], rel=1e-6)
    engine.finish_task({"w": p})  # the EMA goes back into the bf16 weights, rounded once
    assert p.dtype == torch.bfloat16 and p.float().tolist() == pytest.approx(engine.ema["w"].tolist(), rel=1e-2)


class Recording:
    """Wraps a method: records each tensor's fp32 weights and gradient after every optimizer step."""

    def __init__(self, method):
        self.method, self.thetas, self.grads = method, {}, {}
        original = method.after_optimizer_step

        def after_optimizer_step(ctx):
            for name, p in ctx.model.named_parameters():
                if p.requires_grad:
                    self.thetas.setdefault(name, []).append(p.detach().float().flatten().tolist())
                    self.grads.setdefault(name, []).append(p.grad.float().flatten().tolist())
            original(ctx)

        method.after_optimizer_step = after_optimizer_step


def _train(make, method, steps=5, checkpoints=None, resume=False, **events):
    """Train a fresh tiny model; with ``checkpoints``, save into them (and with ``resume``, continue from them)."""
    tok, model, task, features = make()
    emitted = []
    if checkpoints is not None:
        events["save"] = lambda progress, opt, sch: checkpoints.save(progress, model, method, opt, sch)
    restored = checkpoints.restore(checkpoints.latest(), model, method) if resume else None
    cfg = TrainingConfig(batch_size=4, grad_accum=2, lr=1e-2, checkpoint_every=0)
    train(model, tok, method, [task], features, steps=steps, cfg=cfg, resume=restored,
          emit=lambda name, record: emitted.append((name, record)), **events)  # fmt: skip
    return model, emitted


@pytest.mark.parametrize("preset", ["official", "paper", "scaled"])
def test_dema_in_the_loop_with_accumulation_matches_the_formulas(tiny_lora, preset):
    method = build_method("dema", {"preset": preset, "log_every": 2})
    recording = Recording(method)
    model, emitted = _train(tiny_lora, method)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(recording.thetas) == len(trained) and all(len(v) == 5 for v in recording.thetas.values())
    for name, p in trained.items():
        coefficients, ema = reference(PRESETS[preset], recording.thetas[name], recording.grads[name])
        assert p.detach().flatten().tolist() == pytest.approx(ema, rel=1e-4, abs=1e-6)  # swapped in at the end
    assert [(n, r["step"]) for n, r in emitted] == [("ema_coefficients", 2), ("ema_coefficients", 4)]
    logged = [v for _, r in emitted for v in r["coefficient"].values()]
    assert logged and all(v == float(f"{v:.5g}") for v in logged)  # five significant digits: half the log's size
    counts = method.summary()["per_stage"][0]
    assert counts["updates"] == 4 * len(trained) == counts["inside"] + counts["out_of_range"] + counts["nonfinite"]


def test_fixed_ema_method_is_the_same_code_with_a_constant(tiny_lora):
    method = build_method("ema", {"beta": 0.5})
    recording = Recording(method)
    model, _ = _train(tiny_lora, method, steps=3)
    name, p = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    thetas = recording.thetas[name]
    expected = [0.25 * a + 0.25 * b + 0.5 * c for a, b, c in zip(*thetas)]
    assert p.detach().flatten().tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_a_stage_resumed_mid_way_ends_with_the_same_ema(tiny_lora, tmp_path):
    whole, _ = _train(tiny_lora, build_method("dema", {"preset": "paper"}), steps=6)
    checkpoints = Checkpoints(tmp_path)
    steps = iter(range(100))
    with pytest.raises(Interrupted):
        _train(
            tiny_lora,
            build_method("dema", {"preset": "paper"}),
            steps=6,
            checkpoints=checkpoints,
            should_stop=lambda: next(steps) == 2,
        )
    method = build_method("dema", {"preset": "paper"})
    resumed, _ = _train(tiny_lora, method, steps=6, checkpoints=checkpoints, resume=True)
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert method.engine.counts["updates"] == 5 * sum(p.requires_grad for p in resumed.parameters())


def test_method_parameters_are_checked():
    with pytest.raises(ValueError, match="bogus\n  Extra inputs are not permitted"):
        build_method("dema", {"bogus": 1})
    with pytest.raises(ValueError, match="preset\n  Input should be 'fixed', 'official', 'paper' or 'scaled'"):
        build_method("dema", {"preset": "nope"})


def test_the_callback_brings_the_dynamic_ema_to_a_stock_trainer(tiny_lora, tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from lcia.integrations import DynamicEmaCallback
    from lcia.models.forward import collate

    tok, model, _, features = tiny_lora()
    seen = {}

    class Record(TrainerCallback):  # runs before the EMA callback: the weights and gradients it sees
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            for name, p in model.named_parameters():
                if p.requires_grad:
                    seen.setdefault(name, ([], []))
                    seen[name][0].append(p.detach().flatten().tolist())
                    seen[name][1].append(p.grad.flatten().tolist())

    callback = DynamicEmaCallback("paper")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
    )
    data = [{"input_ids": f.input_ids, "labels": f.labels} for f in features]
    pad = lambda rows: {  # noqa: E731
        k: v for k, v in collate([type(features[0])(r["input_ids"], r["labels"], False) for r in rows], 0).items()
    }
    Trainer(model=model, args=args, train_dataset=data, data_collator=pad, callbacks=[Record, callback]).train()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(seen) == set(trained) and all(len(v[0]) == 4 for v in seen.values())
    for name, p in trained.items():
        _, ema = reference(PRESETS["paper"], *seen[name])
        assert p.detach().flatten().tolist() == pytest.approx(ema, rel=1e-4, abs=1e-6)
    assert callback.ema.counts["updates"] == 3 * len(trained)


def test_scaled_coefficient_ignores_the_scale_of_the_loss_and_of_the_weights():
    thetas, grads = [[0.0, 0.1], [0.4, -0.3], [0.5, -0.2]], [[0.02, -0.01], [0.01, 0.03], [0.02, 0.01]]
    raws = []
    for weight_scale, loss_scale in ((1, 1), (10, 1), (1, 100)):
        engine = DynamicEma(PRESETS["scaled"])
        p = _param([v * weight_scale for v in thetas[0]], [v * loss_scale / weight_scale for v in grads[0]])
        engine.update({"w": p})
        for theta, g in zip(thetas[1:], grads[1:]):
            _step(engine, p, [v * weight_scale for v in theta], [v * loss_scale / weight_scale for v in g])
        raws.append(engine.last["norms"]["raw"]["w"])
    assert raws == pytest.approx([raws[0]] * 3, rel=1e-5)


def test_a_bad_method_parameter_in_a_config_names_file_line_and_field(tmp_path):
    from lcia.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("method:\n  name: dema\n  params:\n    preset: paperr\n", encoding="utf-8")
    bad_preset = r"run.yaml:4: method.params.preset: Input should be 'fixed', 'official', 'paper' or 'scaled'"
    with pytest.raises(LciaError, match=bad_preset):
        load_config(str(path))


def test_dema_on_a_bf16_model_keeps_fp32_state_and_follows_the_formulas(tiny_model_dir):
    from lcia.data.prompts import encode_for_training
    from lcia.data.schema import Example
    from lcia.data.tasks import Task
    from lcia.models.loading import load_base_model, load_tokenizer
    from lcia.models.lora import add_lora, lora_config

    tok = load_tokenizer(tiny_model_dir)
    model = add_lora(load_base_model(tiny_model_dir, "bfloat16"), lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    examples = [Example("Name the color.", f"item {i}", "red") for i in range(16)]
    method = build_method("dema", {"preset": "official"})
    recording = Recording(method)
    train(
        model,
        tok,
        method,
        [Task("colors", examples, examples[:2])],
        [encode_for_training(tok, ex, 64) for ex in examples],
        stage=1,
        steps=4,
        cfg=TrainingConfig(batch_size=4, grad_accum=2, lr=1e-2, checkpoint_every=0, precision="bf16"),
        seed=0,
        precision="bf16",
    )
    assert next(model.parameters()).dtype == torch.bfloat16  # the frozen base stays bf16
    assert all(t.dtype == torch.float32 for t in method.engine.ema.values())
    assert all(t.dtype == torch.float32 for t in method.engine.prev_grad.values())
    for name, p in model.named_parameters():
        if p.requires_grad:
            _, ema = reference(PRESETS["official"], recording.thetas[name], recording.grads[name])
            assert p.detach().float().flatten().tolist() == pytest.approx(ema, rel=1e-3, abs=1e-5)


def test_sharding_that_would_give_a_shards_coefficient_is_refused():
    from lcia.mechanisms.weight_ema import refuse_unsupported_sharding

    with pytest.raises(LciaError, match="DeepSpeed"):
        refuse_unsupported_sharding(deepspeed=True, fsdp_version=None)
    with pytest.raises(LciaError, match="FSDP version 2"):
        refuse_unsupported_sharding(deepspeed=False, fsdp_version=1)
    refuse_unsupported_sharding(deepspeed=False, fsdp_version=2)
    refuse_unsupported_sharding(deepspeed=False, fsdp_version=None)
