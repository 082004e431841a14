"""MR-LoRA: routing requests and their scoring worked by hand on a stub, the router learning in the loop, a saved
stage routing again as the run did."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import train, write_jsonl

from lcia.config import TrainingConfig, load_config
from lcia.core.precision import accelerator_for
from lcia.data.prompts import IGNORE_INDEX, encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import build_method, mrlora
from lcia.methods.mrlora import (
    ROUTER_TAIL,
    MrLora,
    letter,
    routing_example,
    sequence_log_likelihoods,
    shared_prompt_log_likelihoods,
)
from lcia.models.forward import answer_forward, batch_inputs
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.pipeline import stream_run
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import evaluate_saved
from lcia.training.loop import Learner


def test_defaults_follow_the_official_router():
    params = build_method("mrlora").params
    assert (params.replay_per_task, params.router_lr, params.router_r) == (20, 2.5e-4, None)
    with pytest.raises(ValueError, match="replay_per_task"):
        build_method("mrlora", {"replay_per_task": 0})


def test_a_routing_request_lists_the_experts_by_letter_and_asks_for_the_instances_one():
    assert [letter(i) for i in (0, 1, 25, 26, 27, 701, 702)] == ["A", "B", "Z", "AA", "AB", "ZZ", "AAA"]
    request = routing_example(Example("Name the color.", "item 3", "red", id="c3"), [["colors"], ["echo"]], 1)
    assert (request.output, request.input, request.id, request.image) == ("B", "", "c3", "")
    assert "between 2 expert models" in request.instruction and "letter (A, B)" in request.instruction
    assert "- A: an expert in colors\n- B: an expert in echo\n" in request.instruction
    assert request.instruction.endswith("The user's request: Name the color.\nitem 3" + ROUTER_TAIL)
    # an image stays with the request; its placeholder is put back at the turn's start by the prompt, not here
    pictured = routing_example(Example("<image>\nWhat shape?", "", "circle", image="easy-vqa:train/1"), [["a"]], 0)
    assert pictured.image == "easy-vqa:train/1" and "<image>" not in pictured.instruction
    assert pictured.instruction.endswith("request: What shape?" + ROUTER_TAIL) and pictured.output == "A"
    assert routing_example(Example("Q", "", "x"), [["a"]]).output == ""  # for scoring: no target


def test_sequence_log_likelihoods_sum_each_rows_answer_tokens():
    # two rows; row 0 answers at positions 1 and 2 (tokens 2 then 0), row 1 at position 2 (token 1)
    labels = torch.tensor([[-100, 2, 0], [-100, -100, 1]])
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]]))  # rows already softmaxed
    # row 0: log 0.25 (token 2 from the first row) + log 0.2 (token 0 from the second); row 1: log 0.7
    expected = torch.tensor([math.log(0.25 * 0.2), math.log(0.7)])
    assert torch.allclose(sequence_log_likelihoods(logits, labels), expected)


def test_a_shared_prompt_scores_each_answer_as_the_plain_forward_does(tiny_model_dir):
    """Runs of three requests, one prompt each (of different lengths), answers of one and of several tokens:
    encoding each prompt once and its answers on its cache gives the plain forward's scores."""
    tokenizer = load_tokenizer(tiny_model_dir)
    model = _routable(load_base_model(tiny_model_dir), tokenizer).eval()
    holds = [["colors"], ["echo"], ["sums"]]
    instances = [Example("Name the color.", "item 3", "red"), Example("Repeat the word twice, please.", "w7 w7 w7", "")]
    requests = [routing_example(ex, holds, i) for ex in instances for i in range(3)]
    requests[1] = dataclasses.replace(requests[1], output="B, the echo expert")  # a longer answer in each run
    requests[5] = dataclasses.replace(requests[5], output="C or A")
    features = [encode_for_training(tokenizer, request, 512) for request in requests]
    assert not any(f.truncated for f in features)
    assert len({f.labels.count(IGNORE_INDEX) for f in features}) == 2  # two prompts of different lengths
    assert len({len(f.input_ids) - f.labels.count(IGNORE_INDEX) for f in features}) == 3  # answers of 3 lengths
    batch = batch_inputs(features, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        plain = sequence_log_likelihoods(answer_forward(model, batch).logits, batch["labels"])
        shared = shared_prompt_log_likelihoods(model, batch, 3)
        mixed = shared_prompt_log_likelihoods(model, batch, 2)  # runs that straddle two prompts: the plain forward
    assert torch.allclose(shared, plain, atol=1e-4) and torch.equal(mixed, plain)


class Bigram(torch.nn.Module):
    """A stub model: the next token's log-probabilities depend on the current token and the active adapter only."""

    def __init__(self, tables: dict[str, torch.Tensor]):
        super().__init__()
        self.tables, self.active_adapter, self.switches = tables, "expert-2", []
        self.head = torch.nn.Identity()  # answer_forward hands it the answer-predicting positions only

    def get_output_embeddings(self):
        return self.head

    def set_adapter(self, name, inference_mode=False):
        self.switches.append(name)
        self.active_adapter = name

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False):
        # a bigram needs no past tokens: its cache, for routing's prompt-then-answers passes, holds nothing
        cache = cache or SimpleNamespace(batch_repeat_interleave=lambda repeats: None)
        return SimpleNamespace(logits=self.head(self.tables[self.active_adapter][input_ids]), cache=cache)


def _stub_inputs(seen: list):
    """Tokens: 0 end, 1 the prompt, 2 "A", 3 "B"; each request is [prompt, letter, end] with the answer labelled."""

    def inputs(examples):
        seen.extend(examples)
        ids = torch.tensor([[1, {"A": 2, "B": 3}[ex.output], 0] for ex in examples])
        labels = ids.clone()
        labels[:, 0] = IGNORE_INDEX
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    return inputs


def test_routing_scores_each_experts_letter_under_the_router_and_switches_back():
    log = lambda *p: torch.log(torch.tensor(p))  # noqa: E731
    router = torch.stack(
        [log(0.7, 0.1, 0.1, 0.1), log(0.1, 0.1, 0.2, 0.6), log(0.5, 0.3, 0.1, 0.1), log(0.25, 0.25, 0.25, 0.25)]
    )
    tables = {"router": router, "expert-1": torch.zeros(4, 4), "expert-2": torch.zeros(4, 4)}  # experts: uniform
    method = build_method("mrlora")
    state = {"experts": ["expert-1", "expert-2"], "holds": {"expert-1": ["colors"], "expert-2": ["echo"]}}
    method.load_state_dict(state | {"replay": {}, "router_log": []})
    unbound = method.explain_route(Example("Name the color.", "", ""))
    assert unbound.adapter is None and "needs the model" in unbound.rule

    model, seen = Bigram(tables), []
    method.bind(model, _stub_inputs(seen))
    route = method.explain_route(Example("Name the color.", "", ""))
    # A: P(A | prompt) P(end | A) = 0.2 * 0.5 = 0.1;  B: 0.6 * 0.25 = 0.15, so B (expert-2). Uniform expert
    # tables would give both log(1/16) and pick A: the scores are the router's.
    assert route.scores == pytest.approx({"expert-1": math.log(0.1), "expert-2": math.log(0.15)})
    assert route.adapter == "expert-2" and route.holds == {"expert-1": "colors", "expert-2": "echo"}
    assert [ex.output for ex in seen] == ["A", "B"] and all(ex.instruction == seen[0].instruction for ex in seen)
    assert model.switches == ["router", "expert-2"] and model.active_adapter == "expert-2"  # switched back
    assert method.route(Example("Name the color.", "", "red")) == "expert-2"


def _task(name, instruction, answer, n=24):
    # clearly different tasks: each input repeats its task's word, which the tiny random model can key on
    examples = [Example(instruction, " ".join([name] * 12) + f" {i}", answer(i), id=f"{name}-{i}") for i in range(n)]
    return Task(name, examples[:16], examples[16:])


TASKS = [("colors", "Name the color.", lambda i: "red"), ("echo", "Repeat the word.", lambda i: f"w{i}")]


def _routable(model, tokenizer):
    """The tiny model with a random end-of-turn row: the fixture's (its pad row) is zero, so with tied embeddings no
    LoRA could ever raise the logit of a router's answer's end."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        row = model.get_input_embeddings().weight[tokenizer.eos_token_id]
        row.copy_(torch.randn(row.shape, generator=generator) * 0.2)
    return model


def test_in_the_loop_the_router_learns_each_tasks_expert(tiny_model_dir, monkeypatch):
    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = TrainingConfig(steps=2, batch_size=4, lr=1e-3)
    params = {"replay_per_task": 4, "router_steps": 30, "router_lr": 3e-2, "router_batch_size": 4}
    method = build_method("mrlora", params)
    targets = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
    model = method.setup(_routable(load_base_model(tiny_model_dir), tokenizer), lora_config(4, 8, 0.0, targets))
    tasks = [_task(*spec) for spec in TASKS]
    for stage, task in enumerate(tasks, 1):
        features = [encode_for_training(tokenizer, ex, cfg.max_length) for ex in task.train]
        stats = train(model, tokenizer, method, [task], features, steps=2, cfg=cfg, stage=stage)
    # the stage's expert is the one trainable adapter again once the router has trained
    assert {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad} == {"expert-2"}
    [log] = method.router_log  # trained once: after stage 1 a single expert answers everything
    assert log["requests"] == 8 and log["steps"] == 30 and log["final_loss"] < log["first_loss"] / 5
    assert stats["method"]["router_loss"] == log["final_loss"]
    method.bind(model, Learner(model, tokenizer, method, accelerator_for("fp32")).inputs(cfg))
    model.eval()
    expected = method.task_adapters()
    assert expected == {"colors": "expert-1", "echo": "expert-2"}
    routed = [method.route(ex) == expected[task.name] for task in tasks for ex in task.test]
    assert sum(routed) / len(routed) == 1.0  # routing accuracy on the held-out instances

    # A test set is routed in batches (evaluation's route_all): the scores of routing one instance at a time
    test = [ex for task in tasks for ex in task.test]
    one_by_one = [method.explain_route(ex).scores for ex in test]
    flat = lambda scores: [v for s in scores for v in s.values()]  # noqa: E731
    for rows in (32, 6):  # every instance in one pass; three instances (six requests) a pass
        monkeypatch.setattr(mrlora, "ROUTE_ROWS", rows)
        batched = method._scores(test)
        assert [list(s) for s in batched] == [list(s) for s in one_by_one]
        assert flat(batched) == pytest.approx(flat(one_by_one), abs=1e-4)
        assert method.route_all(test) == [method.route(ex) for ex in test]


@pytest.fixture
def routable_run(tiny_model_dir, tmp_path):
    """A run config of the tiny model (random end-of-turn row) on the two clearly different tasks."""
    tokenizer = load_tokenizer(tiny_model_dir)
    _routable(load_base_model(tiny_model_dir), tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    lines = []
    for name, instruction, answer in TASKS:
        records = [
            {"instruction": ex.instruction, "input": ex.input, "output": ex.output}
            for ex in _task(name, instruction, answer).train
        ]
        write_jsonl(tmp_path / f"{name}.jsonl", records)
        lines.append(f"  - name: {name}\n    train: {name}.jsonl\n    max_new_tokens: 3\n")
    (tmp_path / "stream.yaml").write_text("tasks:\n" + "".join(lines), encoding="utf-8")
    overrides = ["training.steps=2", "training.batch_size=4", "data.test_size=4", "evaluation.bootstrap=10", "lora.r=4"]
    params = "method.params={replay_per_task: 4, router_steps: 30, router_lr: 0.03, router_batch_size: 4}"
    paths = [
        f"stream={tmp_path / 'stream.yaml'}",
        f"model.name_or_path={tmp_path / 'model'}",
        f"output_dir={tmp_path / 'run'}",
    ]
    return load_config(None, [*paths, *overrides, "method.name=mrlora", params])


def test_a_saved_stage_routes_as_the_run_did(routable_run):
    result = stream_run.run(routable_run, progress=False, log=lambda *_: None)
    out = RunDir(result.run_dir)
    routing = out.read_json("results.json")["routing"]
    assert routing["task_adapters"] == {"colors": "expert-1", "echo": "expert-2"} and routing["final"] == 1.0
    stage = out.adapter_dir(2)
    assert all((stage / name / "adapter_config.json").exists() for name in ("expert-1", "expert-2", "router"))
    line = MrLora.report_lines(SimpleNamespace(results=out.read_json("results.json")))[0]
    assert line.startswith("MR-LoRA router, retrained after each stage on the replay set: stage 2: 8 requests, loss ")
    saved = out.read_json("adapters/stage-2/mrlora.json")
    assert saved["experts"] == ["expert-1", "expert-2"] and [len(v) for v in saved["replay"].values()] == [4, 4]

    evaluate_saved(str(result.run_dir), progress=False)
    again = RunDir(out.path / "eval").read_jsonl("stage-2.predictions.jsonl")
    run = [r for r in out.read_jsonl("predictions.jsonl") if r["row"] == 2]
    assert {r["adapter"] for r in run} == {"expert-1", "expert-2"}  # both experts answer: the router chose
    assert [(r["adapter"], r["prediction"]) for r in again] == [(r["adapter"], r["prediction"]) for r in run]
