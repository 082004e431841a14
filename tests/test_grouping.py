"""Instruction grouping, adapter expansion and routing: similarity backends, the codebook, the
``grouping`` and ``lcia`` methods in runs, saved adapters in plain PEFT, ``lcia route`` / ``ask``."""

import json
import math

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from lcia.cli import main
from lcia.config import load_config
from lcia.core.precision import accelerator_for, inference_autocast, set_attention
from lcia.data.schema import Example
from lcia.data.streams import load_stream
from lcia.data.tasks import Task
from lcia.errors import LciaError
from lcia.evaluation.generate import generate_answers
from lcia.evaluation.routing import routing_accuracy
from lcia.mechanisms.codebook import Codebook
from lcia.mechanisms.similarity import TfidfSimilarity, build_similarity, resolve_threshold
from lcia.methods import METHODS, TrainContext, build_method, register
from lcia.methods.grouping import Lcia
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import open_saved
from lcia.pipeline.stream_run import run


def test_tfidf_is_the_per_pair_vectorizer_with_english_stop_words():
    # Fitted on the pair alone with smooth idf: idf(red) = 1, idf(apple) = idf(car) = 1 + ln(3/2);
    # the vectors (1, a, 0) and (1, 0, a) have cosine 1 / (1 + a^2). Stop words ("the", "a") drop out.
    a = 1 + math.log(1.5)
    assert TfidfSimilarity.pair("red apple", "red car") == pytest.approx(1 / (1 + a * a))
    assert TfidfSimilarity.pair("the red apple", "a red car") == pytest.approx(1 / (1 + a * a))
    assert TfidfSimilarity.pair("red apple", "green pear") == 0.0
    assert TfidfSimilarity.pair("the", "the") == 1.0 and TfidfSimilarity.pair("the", "a") == 0.0  # stop words only


def test_embedding_similarity_survives_paraphrases_where_tfidf_does_not():
    embedding, tfidf = build_similarity("embedding"), build_similarity("tfidf")
    para = ["Solve the arithmetic problem.", "Work out the result of this calculation and reply with the number."]
    other = "Classify the sentiment of this review."
    assert tfidf.matrix(para[:1], para[1:])[0, 0] == 0.0
    sims = embedding.matrix(para, [para[0], para[1], other])
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5) and sims[0, 1] > 2 * sims[0, 2]


def test_threshold_presets_and_numbers():
    assert resolve_threshold("tfidf", "original") == 0.90 and resolve_threshold("tfidf", "diverse") == 0.30
    assert resolve_threshold("embedding", 0.4) == 0.4
    with pytest.raises(ValueError, match="unknown threshold preset"):
        resolve_threshold("tfidf", "loose")


def test_codebook_assigns_by_the_mean_over_pairs_and_routes_by_the_nearest_instruction():
    codebook = Codebook(TfidfSimilarity(), threshold=0.5)
    codebook.add("group-0", ["red apple", "green pear"], "fruit")
    decision = codebook.assign(["red apple"])  # pairs: 1.0 and 0.0
    assert decision.similarities == {"group-0": pytest.approx(0.5)} and decision.best == "group-0" and decision.reused
    codebook.threshold = 0.6
    assert not codebook.assign(["red apple"]).reused
    codebook.add("group-1", ["blue car"], "cars")
    assert codebook.route("green pear") == ("group-0", {"group-0": pytest.approx(1.0), "group-1": 0.0})  # nearest
    assert codebook.route("red car")[0] == "group-0"  # matches nothing well: the most similar group
    assert codebook.task_adapters() == {"fruit": "group-0", "cars": "group-1"}
    restored = Codebook.from_json(json.loads(json.dumps(codebook.to_json())), TfidfSimilarity())
    assert restored.to_json() == codebook.to_json()


def test_routing_accuracy_counts_only_tasks_already_trained():
    records = [
        {"row": 1, "task": "a", "adapter": "g0"},
        {"row": 1, "task": "b", "adapter": "g0"},  # b not trained yet in row 1: not counted
        {"row": 2, "task": "a", "adapter": "g0"},
        {"row": 2, "task": "b", "adapter": "g0"},  # wrong
        {"row": 2, "task": "b", "adapter": "g1"},
    ]
    got = routing_accuracy(records, {"a": "g0", "b": "g1"}, [["a"], ["b"]])
    assert got == {"final": round(2 / 3, 4), "per_task": {"a": 1.0, "b": 0.5}, "rows": [1.0, round(2 / 3, 4)]}


def test_diverse_stream_paraphrases_instructions_and_holds_some_out_for_testing():
    tasks = {t.name: t for t in load_stream("ni-cit-diverse", 20, None, 0)}
    original = {t.name: t for t in load_stream("ni-cit", 20, None, 0)}
    for name, task in tasks.items():
        train = {ex.instruction for ex in task.train}
        test = {ex.instruction for ex in task.test}
        assert len(train) == 4 and len(test - train) == 1 and train < test
        assert [ex.output for ex in task.test] == [ex.output for ex in original[name].test]  # same data, same split
    for a, b in [("plural", "past-tense"), ("qasc-overlap", "qasc-answer")]:  # a family, in different words
        assert not {ex.instruction for ex in tasks[a].train} & {ex.instruction for ex in tasks[b].train}


def test_bad_grouping_parameters_name_the_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method:\n  name: lcia\n  params:\n    similarity: bm25\n")
    bad_similarity = r"run\.yaml:4: method\.params\.similarity: Input should be 'tfidf' or 'embedding'"
    with pytest.raises(LciaError, match=bad_similarity):
        load_config(str(path))
    bad_preset = "method.params.preset: Input should be 'fixed', 'official', 'paper' or 'scaled'"
    with pytest.raises(LciaError, match=bad_preset):
        load_config(None, ["method.name=lcia", "method.params.preset=slow"])


@pytest.mark.parametrize("init", ["fresh", "fork"])
def test_a_new_group_starts_fresh_or_forked_from_the_last_adapter(tiny_model_dir, init):
    method = build_method("grouping", {"adapter_init": init})
    model = method.setup(load_base_model(tiny_model_dir), lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    ctx = TrainContext(model=model, optimizer=None, accelerator=accelerator_for("fp32"), stage=1, tasks=[])
    for stage, instruction in enumerate(["Name the color.", "Repeat the word."], start=1):
        ctx.stage, ctx.tasks = stage, [Task(f"t{stage}", [Example(instruction, "x", "y")], [])]
        method.before_task(ctx)
        with torch.no_grad():  # "training": the active adapter's B moves away from its zero init
            for name, param in model.named_parameters():
                if f"lora_B.{method.active}." in name:
                    param.add_(float(stage))
    assert method.active == "group-1" and set(model.peft_config) == {"group-0", "group-1"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".group-1." in n for n in trainable)
    params = dict(model.named_parameters())
    for name, param in params.items():
        if "lora_B.group-1." in name:
            before_training = param - 2.0
            source = params[name.replace("group-1", "group-0")]
            assert torch.equal(before_training, source if init == "fork" else torch.zeros_like(param))


@pytest.fixture(scope="module")
def grouped_stream(tmp_path_factory):
    """colors and shades share an instruction; echo has its own: two groups."""
    folder = tmp_path_factory.mktemp("grouped")

    def write(name, records):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    write(
        "colors.jsonl", [{"instruction": "Name the color.", "input": f"item {i}", "output": "red"} for i in range(24)]
    )
    write(
        "shades.jsonl", [{"instruction": "Name the color.", "input": f"shade {i}", "output": "blue"} for i in range(24)]
    )
    write("echo.jsonl", [{"instruction": "Repeat the word.", "input": f"w{i}", "output": f"w{i}"} for i in range(24)])
    (folder / "stream.yaml").write_text(
        "tasks:\n"
        + "".join(
            f"  - name: {n}\n    train: {n}.jsonl\n    max_new_tokens: 3\n" for n in ("colors", "echo", "shades")
        ),
        encoding="utf-8",
    )
    return folder / "stream.yaml"


def _grouping_config(tiny_model_dir, stream, output_dir, method="grouping", *extra):
    return load_config(
        None,
        [
            f"stream={stream}",
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={output_dir}",
            f"method.name={method}",
            "training.steps=6",
            "training.batch_size=4",
            "training.lr=0.01",
            "data.test_size=6",
            "evaluation.bootstrap=0",
            "lora.r=4",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def grouping_run(tiny_model_dir, grouped_stream, tmp_path_factory):
    cfg = _grouping_config(tiny_model_dir, grouped_stream, tmp_path_factory.mktemp("runs") / "grouping")
    return run(cfg, progress=False, log=lambda *_: None).run_dir


def test_grouping_run_forms_groups_routes_every_instance_and_isolates_groups(grouping_run):
    out = RunDir(grouping_run)
    results = out.read_json("results.json")
    groups = results["method"]["grouping"]["groups"]
    assert [(g["adapter"], g["tasks"]) for g in groups] == [("group-0", ["colors", "shades"]), ("group-1", ["echo"])]
    assert results["routing"]["final"] == 1.0 and results["routing"]["rows"] == [1.0, 1.0, 1.0]
    decisions = out.read_jsonl("grouping.jsonl")
    assert [(d["adapter"], d["new_group"]) for d in decisions] == [
        ("group-0", True),
        ("group-1", True),
        ("group-0", False),
    ]
    assert out.read_json("codebook.json")["groups"] == groups
    assert RunDir(out.adapter_dir(3)).read_json("codebook.json")["groups"] == groups
    # echo trained its own adapter in stage 2: colors' adapter, and so its answers, did not change
    stage1, stage2 = (load_file(out.adapter_dir(s) / "group-0" / "adapter_model.safetensors") for s in (1, 2))
    assert stage1.keys() == stage2.keys() and all(torch.equal(stage1[k], stage2[k]) for k in stage1)
    predictions = out.read_jsonl("predictions.jsonl")
    colors = [[p["prediction"] for p in predictions if p["row"] == row and p["task"] == "colors"] for row in (1, 2)]
    assert colors[0] == colors[1]
    assert {p["adapter"] for p in predictions if p["row"] == 3 and p["task"] == "echo"} == {"group-1"}


def test_saved_adapters_load_in_plain_peft_and_answer_as_in_the_run(grouping_run, tiny_model_dir):
    trained = open_saved(str(grouping_run))[0]
    tokenizer = load_tokenizer(tiny_model_dir)
    ids = torch.tensor([tokenizer("Name the color. item 3")["input_ids"]])
    tasks = {t.name: t for t in load_stream(trained.cfg.stream, 6, None, 0)}
    predictions = RunDir(grouping_run).read_jsonl("predictions.jsonl")
    for adapter, task in [("group-0", "shades"), ("group-1", "echo")]:
        plain = PeftModel.from_pretrained(
            load_base_model(tiny_model_dir), str(RunDir(grouping_run).adapter_dir(3) / adapter)
        ).eval()
        set_attention(plain, trained.precision, torch.device("cpu"))  # as the run answered (eager in bf16)
        trained.model.set_adapter(adapter)
        logits = []
        for model in (plain, trained.model):
            with torch.no_grad(), inference_autocast(model, trained.precision, torch.device("cpu")):
                logits.append(model(ids).logits)
        assert torch.equal(*logits)
        answers = generate_answers(
            plain, tokenizer, tasks[task].test, max_new_tokens=3, batch_size=trained.cfg.evaluation.batch_size,
            max_length=trained.cfg.evaluation.max_length, progress=False, precision=trained.precision,
        )  # fmt: skip
        assert answers == [p["prediction"] for p in predictions if p["row"] == 3 and p["task"] == task]


def test_route_and_ask_use_the_run_as_an_assistant(grouping_run, capsys):
    assert main(["route", str(grouping_run), "Name the color."]) == 0
    table = capsys.readouterr().out
    assert "group-0 <-" in table and "colors, shades" in table and "1.000" in table
    assert main(["ask", str(grouping_run), "Repeat the word.", "--input", "w3", "--max-new-tokens", "3"]) == 0
    printed = capsys.readouterr().out
    assert "group-1 (echo)" in printed
    trained = open_saved(str(grouping_run))[0]
    assert printed.strip().endswith(trained.ask("Repeat the word.", "w3", 3)[1])
    assert main(["route", str(grouping_run), "Name the color.", "--stage", "7"]) == 2


def test_eval_of_a_grouping_run_routes_as_the_run_did(grouping_run):
    from lcia.pipeline.session import evaluate_saved

    scores = evaluate_saved(str(grouping_run), progress=False)
    results = RunDir(grouping_run).read_json("results.json")
    assert list(scores.values()) == results["matrix"][-1]


@register("test-only-lcia-nan")
class NanOnce(Lcia):
    """lcia whose loss is NaN at stage 3, step 3: with max_bad_steps 0 the run stops there with a checkpoint."""

    def loss(self, ctx, batch, outputs):
        return torch.tensor(float("nan")) if (ctx.stage, ctx.step) == (3, 3) else None


def test_lcia_resumed_inside_a_new_groups_stage_ends_as_an_uninterrupted_run(tiny_model_dir, grouped_stream, tmp_path):
    stream = grouped_stream.parent / "stream2.yaml"  # echo last: stage 3 adds a group
    stream.write_text(
        "".join(f"- name: {n}\n  train: {n}.jsonl\n  max_new_tokens: 3\n" for n in ("colors", "shades", "echo")),
        encoding="utf-8",
    )
    try:
        reference_cfg = _grouping_config(
            tiny_model_dir,
            stream,
            tmp_path / "ref",
            "test-only-lcia-nan",
            "training.max_bad_steps=1",
            "method.params.log_every=1",
        )
        reference = run(reference_cfg, progress=False, log=lambda *_: None)
        cfg = _grouping_config(
            tiny_model_dir,
            stream,
            tmp_path / "run",
            "test-only-lcia-nan",
            "training.max_bad_steps=0",
            "method.params.log_every=1",
        )
        with pytest.raises(LciaError, match="stage 3: 1 steps had a NaN"):
            run(cfg, progress=False, log=lambda *_: None)
        config_file = tmp_path / "run" / "config.yaml"
        config_file.write_text(config_file.read_text().replace("max_bad_steps: 0", "max_bad_steps: 1"))
        cfg.training.max_bad_steps = 1
        resumed = run(cfg, resume=True, progress=False, log=lambda *_: None)
    finally:
        del METHODS["test-only-lcia-nan"]
    stages = RunDir(resumed.run_dir).read_json("manifest.json")["timings"]["stages"]
    assert [s["resumed_at_step"] for s in stages] == [0, 0, 3]
    assert resumed.matrix == reference.matrix
    ref, got = (RunDir(r.run_dir) for r in (reference, resumed))
    for adapter in ("group-0", "group-1"):
        a, b = (load_file(d.adapter_dir(3) / adapter / "adapter_model.safetensors") for d in (ref, got))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert got.read_json("results.json")["method"] == ref.read_json("results.json")["method"]
    # the dynamic EMA ran on the active group's adapter only
    coefficients = got.read_jsonl("ema_coefficients.jsonl")
    adapter_of_stage = {d["stage"]: d["adapter"] for d in got.read_jsonl("grouping.jsonl")}
    assert adapter_of_stage == {1: "group-0", 2: "group-0", 3: "group-1"}
    for record in coefficients:
        assert all(f".{adapter_of_stage[record['stage']]}." in name for name in record["coefficient"])
