"""HiDe-LLaVA: the lower-layer fusion and the kept top layer worked by hand, routing to the nearest task
prototype, the mechanism in the training loop, and a run whose saved stage routes and answers again."""

import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig, load_config
from lcia.core.precision import accelerator_for
from lcia.data.prompts import encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.mechanisms.similarity import TfidfSimilarity
from lcia.methods import TrainContext, build_method
from lcia.methods.hide import HiDe, fuse, sample, top_layer_indices
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import open_saved
from lcia.pipeline.stream_run import run


def _hide_model(tiny_model_dir, params=None, targets=("q_proj",), r=2):
    method = build_method("hide", params or {})
    model = method.setup(load_base_model(tiny_model_dir), lora_config(r, 2 * r, 0.0, list(targets)))
    return method, model


def _context(model, stage, tasks=()):
    return TrainContext(model, None, accelerator_for("fp32"), stage, list(tasks))


def _task(name, instruction, inputs):
    examples = [Example(instruction, text, "x") for text in inputs]
    return Task(name, examples, examples[:1])


def test_defaults_are_the_official_code_and_dora_is_refused():
    params = HiDe().params
    assert (params.top_layers, params.fusion, params.similarity) == (1, "sum", "tfidf")  # layer 31 of 32; weight 1.0
    assert HiDe.capabilities.lora_variants == {"lora", "rslora"} and not HiDe.capabilities.needs_old_data
    with pytest.raises(ValueError, match="fusion"):
        build_method("hide", {"fusion": "ties"})


def test_fusion_rules_and_the_top_layers_on_small_tensors():
    a1, a2, a3 = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0]), torch.tensor([2.0, 5.0])
    assert torch.equal(fuse(None, a1, 1, "sum"), a1)
    assert torch.equal(fuse(fuse(a1, a2, 2, "sum"), a3, 3, "sum"), torch.tensor([6.0, 3.0]))  # the official sum
    # mean: (1 + 3) / 2 = 2, (-2 + 0) / 2 = -1; then (2 * 2 + 2) / 3 = 2, (-1 * 2 + 5) / 3 = 1
    assert torch.equal(fuse(fuse(a1, a2, 2, "mean"), a3, 3, "mean"), torch.tensor([2.0, 1.0]))
    names = [f"model.layers.{i}.self_attn.q_proj.lora_A.task-1.weight" for i in (0, 1, 2, 3)] + ["lm_head.lora_A.w"]
    assert top_layer_indices(names, 1) == [3] and top_layer_indices(names, 2) == [2, 3]
    assert top_layer_indices(names, 0) == [] and top_layer_indices(names, 9) == [0, 1, 2, 3]


def _set(model, adapter, layer, a, b):
    """Fill ``adapter``'s q_proj LoRA in ``layer``: every entry of A is ``a``, of B ``b``."""
    q = model.base_model.model.model.layers[layer].self_attn.q_proj
    with torch.no_grad():
        q.lora_A[adapter].weight.fill_(a)
        q.lora_B[adapter].weight.fill_(b)
    return q


def _entries(model, adapter, layer):
    q = model.base_model.model.model.layers[layer].self_attn.q_proj
    a, b = q.lora_A[adapter].weight, q.lora_B[adapter].weight
    assert (a == a.flatten()[0]).all() and (b == b.flatten()[0]).all()
    return a.flatten()[0].item(), b.flatten()[0].item()


@pytest.mark.parametrize("fusion, lower", [("sum", (111.0, 222.0)), ("mean", (37.0, 74.0))])
def test_lower_layers_are_fused_over_the_tasks_and_the_top_layer_stays_each_tasks_own(tiny_model_dir, fusion, lower):
    method, model = _hide_model(tiny_model_dir, {"fusion": fusion})  # 2 layers: layer 1 is the top one
    values = {1: (1.0, 2.0, 3.0, 4.0), 2: (10.0, 20.0, 30.0, 40.0), 3: (100.0, 200.0, 300.0, 400.0)}
    for stage, (a0, b0, a1, b1) in values.items():
        method.before_task(ctx := _context(model, stage, [_task(f"t{stage}", f"do {stage}", ["x"])]))
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            n for n, _ in model.named_parameters() if f".task-{stage}." in n
        }  # the new adapter alone trains
        _set(model, f"task-{stage}", 0, a0, b0)  # "training" task `stage`
        _set(model, f"task-{stage}", 1, a1, b1)
        method.after_task(ctx)
    # layer 0 of every adapter: sum A = 1 + 10 + 100, B = 2 + 20 + 200; mean: a third of those
    assert all(_entries(model, f"task-{k}", 0) == lower for k in (1, 2, 3))
    assert [_entries(model, f"task-{k}", 1) for k in (1, 2, 3)] == [(3.0, 4.0), (30.0, 40.0), (300.0, 400.0)]
    assert method.top == [1] and method.fused_tensors == 2  # layer 0's A and B

    # layer 0 answers as the official inference: scaling * (sum B)(sum A) x, cross terms included;
    # x = ones(64), r = 2, scaling = 4 / 2: each output gains 2 * (2 * B (64 * A))
    model.set_adapter("task-2")
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.ones(1, 64)
    with torch.no_grad():
        gain = q(x) - q.base_layer(x)
    assert torch.allclose(gain, torch.full_like(gain, 2 * 2 * lower[1] * 64 * lower[0]))


def test_top_layers_zero_fuses_everything_and_a_large_value_keeps_every_layer(tiny_model_dir):
    for top_layers, kept in [(0, []), (5, [0, 1])]:
        method, model = _hide_model(tiny_model_dir, {"top_layers": top_layers})
        for stage in (1, 2):
            method.before_task(ctx := _context(model, stage, [_task(f"t{stage}", "do", ["x"])]))
            _set(model, f"task-{stage}", 0, stage, stage)
            method.after_task(ctx)
        assert method.top == kept
        expected = [(3.0, 3.0)] * 2 if not kept else [(1.0, 1.0), (2.0, 2.0)]
        assert [_entries(model, a, 0) for a in ("task-1", "task-2")] == expected


def test_a_module_trained_whole_is_one_module_trained_on_through_the_tasks(tiny_model_dir):
    # a vision model's projector: here the final norm stands in for it
    method = build_method("hide")
    model = method.setup(load_base_model(tiny_model_dir), lora_config(2, 4, 0.0, ["q_proj"], ["model.norm"]))

    def copies():
        return {n.split(".")[-2]: p for n, p in model.named_parameters() if ".modules_to_save." in n}

    for stage, value in [(1, 5.0), (2, 7.0)]:
        method.before_task(ctx := _context(model, stage, [_task(f"t{stage}", "do", ["x"])]))
        if stage == 2:  # the new copy starts where task 1's ended
            assert (copies()["task-2"] == 5.0).all()
        assert copies()[f"task-{stage}"].requires_grad
        with torch.no_grad():
            copies()[f"task-{stage}"].fill_(value)
        method.after_task(ctx)
    assert all((p == 7.0).all() for p in copies().values()) and copies().keys() == {"task-1", "task-2"}


def test_routing_picks_the_most_similar_prototype_by_the_mean_similarity():
    method = HiDe()
    method.prototypes = {"task-1": ["red apple", "green pear"], "task-2": ["blue car"]}
    method.tasks = {"task-1": ["fruit"], "task-2": ["cars"]}
    route = method.explain_route(Example("red apple", "", ""))  # task-1: mean(1, 0); task-2: nothing shared
    assert route.adapter == "task-1" and route.scores == {"task-1": pytest.approx(0.5), "task-2": 0.0}
    assert route.holds == {"task-1": "fruit", "task-2": "cars"}
    # route(example) compares the instruction with the input: "Name it.\nblue car"
    example = Example("Name it.", "blue car", "")
    pair = TfidfSimilarity.pair("Name it.\nblue car", "blue car")
    assert method.explain_route(example).scores["task-2"] == pytest.approx(pair)
    assert method.route(example) == "task-2" and method.task_adapters() == {"fruit": "task-1", "cars": "task-2"}
    assert HiDe().explain_route(Example("anything", "", "")).adapter is None  # nothing trained: the active adapter
    assert sample([f"t{i}" for i in range(10)], 4) == ["t0", "t2", "t5", "t7"]  # 10 * i // 4
    assert sample(["a", "b", "a"], 4) == ["a", "b"]


def _stream(tokenizer):
    colors = [Example("Name the color.", f"item {i}", ["red", "blue"][i % 2]) for i in range(16)]
    echo = [Example("Repeat the word.", f"w{i}", f"w{i}") for i in range(16)]
    return [(Task(name, exs, exs[:2]), [encode_for_training(tokenizer, ex, 64) for ex in exs])
            for name, exs in (("colors", colors), ("echo", echo))]  # fmt: skip


def _lora(model, adapter):
    return {n.replace(f".{adapter}.", "."): p.detach().clone() for n, p in model.named_parameters() if adapter in n}


def test_in_the_loop_each_task_trains_its_own_adapter_and_the_lower_layers_carry_the_sum(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    method, model = _hide_model(tiny_model_dir, targets=("q_proj", "v_proj", "up_proj"), r=4)
    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = TrainingConfig(batch_size=4, lr=1e-2, checkpoint_every=0)
    snapshots = []
    for stage, (task, features) in enumerate(_stream(tokenizer), start=1):
        train(model, tokenizer, method, [task], features, stage=stage, steps=3, cfg=cfg)
        snapshots.append({a: _lora(model, a) for a in method.adapters})
    first, second = snapshots
    lower = [n for n in first["task-1"] if ".layers.0." in n]
    top = [n for n in first["task-1"] if ".layers.1." in n]
    assert method.adapters == ["task-1", "task-2"] and method.top == [1] and len(lower) == len(top) == 6
    assert all(torch.equal(first["task-1"][n], second["task-1"][n]) for n in top)  # task 1's top layer kept
    assert not any(torch.equal(second["task-1"][n], second["task-2"][n]) for n in top if "lora_B" in n)
    for n in lower:  # both adapters hold task 1's tensors plus what task 2 trained
        assert torch.equal(second["task-1"][n], second["task-2"][n])
        if "lora_B" in n:
            assert not torch.equal(second["task-2"][n], first["task-1"][n])
    assert method.route(Example("Repeat the word.", "w99", "")) == "task-2"
    assert method.route(Example("Name the color.", "item 99", "")) == "task-1"
    assert method.task_adapters() == {"colors": "task-1", "echo": "task-2"}
    assert len(method.prototypes["task-1"]) == 16  # all 16 distinct instances (prototype_size 32)
    folder = RunDir(tmp_path)  # a saved stage's artifact, read back as lcia eval | route do
    for name, data in method.artifacts().items():
        folder.write_artifact(name, data)
    reloaded = HiDe()
    reloaded.load_artifacts(tmp_path)
    request = Example("Repeat the word.", "", "")
    assert reloaded.explain_route(request) == method.explain_route(request)
    assert reloaded.task_adapters() == method.task_adapters()


@pytest.fixture(scope="module")
def hide_run(tiny_model_dir, stream_file_module, tmp_path_factory):
    cfg = load_config(
        None,
        [
            f"stream={stream_file_module}",
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path_factory.mktemp('hide-run')}",
            "method.name=hide",
            "method.params.prototype_size=8",
            "training.steps=2",
            "training.batch_size=4",
            "data.test_size=4",
            "evaluation.bootstrap=0",
            "lora.r=4",
        ],
    )
    return run(cfg, progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def stream_file_module(tmp_path_factory):
    import json

    folder = tmp_path_factory.mktemp("hide-stream")
    for name, records in [
        ("colors", [{"instruction": "Name the color.", "input": f"item {i}", "output": ["red", "blue"][i % 2]}
                    for i in range(24)]),
        ("echo", [{"instruction": "Repeat the word.", "input": f"w{i}", "output": f"w{i}"} for i in range(24)]),
    ]:  # fmt: skip
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "stream.yaml").write_text(
        "".join(f"- name: {n}\n  train: {n}.jsonl\n  max_new_tokens: 3\n" for n in ("colors", "echo")), encoding="utf-8"
    )
    return folder / "stream.yaml"


def test_a_run_routes_every_test_instance_to_its_task_and_a_saved_stage_routes_the_same(hide_run):
    out = RunDir(hide_run.run_dir)
    results = out.read_json("results.json")
    assert results["routing"]["final"] == 1.0
    assert results["method"]["adapters"] == ["task-1", "task-2"] and results["method"]["top_layer_indices"] == [1]
    saved = RunDir(out.adapter_dir(2)).read_json("hide.json")
    assert saved["tasks"] == {"task-1": ["colors"], "task-2": ["echo"]} and len(saved["prototypes"]["task-1"]) == 8
    session, _ = open_saved(str(hide_run.run_dir), model=False)  # lcia route: the artifacts alone
    assert session.method.explain_route(Example("Repeat the word.", "", "")).adapter == "task-2"
    answering, _ = open_saved(str(hide_run.run_dir))  # lcia ask and serve route the whole request, as evaluation
    route, _ = answering.ask("Name the color.", "item 99", max_new_tokens=2)
    request = Example("Name the color.", "item 99", "")
    assert route.scores == answering.method.explain_route(request).scores
    assert route.scores != answering.method.explain_route(Example("Name the color.", "", "")).scores
