"""``lcia serve``: a tiny two-group run served on loopback and asked through the official ``openai`` client;
answers, routes and streams checked against ``lcia ask`` (``Session.ask``), errors as OpenAI error objects,
and concurrent requests answered in one batch."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn
from openai import OpenAI

from lcia.cli import build_parser
from lcia.config import load_config
from lcia.data.schema import Example
from lcia.evaluation.generate import generate_answers
from lcia.pipeline.session import open_saved
from lcia.pipeline.stream_run import run
from lcia.serving import create_app
from lcia.serving.requests import ApiError, ChatRequest, to_example
from lcia.serving.responses import TextDeltas

COLOR, ECHO = "Name the color.", "Repeat the word."


@pytest.fixture(scope="module")
def served_run(tiny_model_dir, tmp_path_factory):
    """A grouping run on two tasks with their own instructions: two groups, two adapters."""
    folder = tmp_path_factory.mktemp("serve-stream")
    tasks = {"colors": (COLOR, lambda i: (f"item {i}", "red")), "echo": (ECHO, lambda i: (f"w{i}", f"w{i}"))}
    for name, (instruction, make) in tasks.items():
        records = [dict(zip(("input", "output"), make(i)), instruction=instruction) for i in range(24)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "stream.yaml").write_text(
        "tasks:\n" + "".join(f"  - name: {n}\n    train: {n}.jsonl\n    max_new_tokens: 3\n" for n in tasks),
        encoding="utf-8",
    )
    overrides = [f"stream={folder / 'stream.yaml'}", f"model.name_or_path={tiny_model_dir}", "method.name=grouping",
                 f"output_dir={tmp_path_factory.mktemp('runs') / 'served'}", "training.steps=6", "training.lr=0.01",
                 "training.batch_size=4", "training.precision=fp32", "data.test_size=4", "evaluation.bootstrap=0",
                 "lora.r=4"]  # fmt: skip
    return run(load_config(None, overrides), progress=False, log=lambda *_: None).run_dir


class Served:
    def __init__(self, url: str, model: str, batcher):
        self.url, self.model, self.batcher = url, model, batcher
        self.client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)

    def chat(self, system: str | None, user: str, **options):
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        return self.client.chat.completions.create(model=self.model, messages=messages, **options)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health").json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(served_run):
    """The run served by uvicorn on a loopback port, in a background thread."""
    session, stage = open_saved(served_run)
    app = create_app(session, Path(served_run).name, stage)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{port}", Path(served_run).name, app.state.batcher)
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def reference(served_run):
    """What ``lcia ask`` answers with: a session of its own (the server's model belongs to its worker)."""
    return open_saved(served_run)[0]


def test_answers_equal_lcia_ask_and_name_the_adapter(served, reference):
    for instruction, instance, adapter in [(COLOR, "item 3", "group-0"), (ECHO, "w3", "group-1")]:
        route, expected = reference.ask(instruction, instance, 6)
        completion = served.chat(instruction, instance, max_tokens=6)
        assert completion.choices[0].message.content == expected
        assert completion.choices[0].finish_reason in ("stop", "length") and completion.model == served.model
        extra = completion.model_extra["lcia"]
        assert extra["adapter"] == route.adapter == adapter
        assert extra["scores"] == pytest.approx(route.scores) and set(extra["scores"]) == {"group-0", "group-1"}
        assert extra["holds"] == {"group-0": "colors", "group-1": "echo"}[adapter] and extra["rule"] == route.rule
        assert completion.usage.completion_tokens <= 6 and completion.usage.prompt_tokens > 0
    # one user turn alone is the instruction with no input, as `lcia ask INSTRUCTION` answers it
    only_user = served.chat(None, ECHO, max_completion_tokens=4)
    assert only_user.choices[0].message.content == reference.ask(ECHO, "", 4)[1]
    assert only_user.model_extra["lcia"]["adapter"] == "group-1"


def test_temperature_is_ignored_with_a_note_and_max_tokens_bounds_the_answer(served, reference):
    completion = served.chat(COLOR, "item 5", max_tokens=2, temperature=0.7)
    assert completion.choices[0].message.content == reference.ask(COLOR, "item 5", 2)[1]
    assert completion.model_extra["lcia"]["notes"] == ["temperature 0.7 ignored: answers are greedy (temperature 0)"]
    assert completion.usage.completion_tokens <= 2
    if completion.usage.completion_tokens == 2:
        assert completion.choices[0].finish_reason == "length"


def test_a_stream_sends_the_same_text_token_by_token(served):
    whole = served.chat(ECHO, "w7", max_tokens=12)
    chunks = list(served.chat(ECHO, "w7", max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.model_extra["lcia"]["adapter"] == "group-1"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_the_raw_stream_ends_with_done(served):
    body = {"model": served.model, "messages": [{"role": "user", "content": ECHO}], "stream": True, "max_tokens": 4}
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_text_deltas_join_to_the_answer_even_inside_a_character(reference):
    tokenizer = reference.tokenizer
    tokens = tokenizer("  Naïve 日本語 , ok.  ", add_special_tokens=False)["input_ids"]
    deltas = TextDeltas(tokenizer)
    pieces = [deltas.push([token]) for token in tokens]
    answer = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    assert "\ufffd" not in "".join(pieces) and "".join(pieces) + deltas.finish(answer) == answer
    assert sum(bool(p) for p in pieces) > 3  # streamed as it came, not at the end


def test_models_and_health(served):
    models = served.client.models.list()
    assert [m.id for m in models.data] == [served.model]
    assert served.client.models.retrieve(served.model).id == served.model
    health = served.health()
    assert health["status"] == "ok" and health["model"] == served.model and health["stage"] == 2
    assert health["precision"] == "fp32" and health["batch_size"] == 32


def test_a_conversation_keeps_its_earlier_turns_and_is_routed_by_its_system_message(served, reference):
    messages = [{"role": "system", "content": ECHO}, {"role": "user", "content": "w1"},
                {"role": "assistant", "content": "w1"}, {"role": "user", "content": "w2"}]  # fmt: skip
    completion = served.client.chat.completions.create(model=served.model, messages=messages, max_tokens=5)
    example = Example(ECHO, "w2", "", messages=tuple(messages))
    expected = generate_answers(reference.model, reference.tokenizer, [example], max_new_tokens=5, batch_size=1,
                                max_length=reference.cfg.evaluation.max_length, adapters=["group-1"],
                                progress=False, precision=reference.precision)  # fmt: skip
    assert completion.choices[0].message.content == expected[0]
    assert completion.model_extra["lcia"]["adapter"] == "group-1"


def _messages(content) -> dict:
    return {"model": "served", "messages": [{"role": "user", "content": content}]}


BAD = [
    (b"{not json", "invalid_json", None),
    (json.dumps({"model": "served"}), "missing_required_parameter", "messages"),
    (json.dumps({"model": "served", "messages": "hello"}), "invalid_type", "messages"),
    (json.dumps({"model": "served", "messages": [{"content": "x"}]}), "missing_required_parameter", "messages[0].role"),
    (json.dumps(_messages(3)), "invalid_type", "messages[0].content"),
    (json.dumps(_messages([{"type": "image_url", "image_url": {"url": "x"}}])), "unsupported_content",
     "messages[0].content[0]"),
    (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}), "model_not_found", "model"),
    (json.dumps(_messages("x") | {"n": 2}), "unsupported_value", "n"),
    (json.dumps(_messages("x") | {"stream": "yes"}), None, "stream"),
    (json.dumps(_messages("x") | {"max_tokens": 10_000}), "invalid_value", "max_tokens"),
    (json.dumps(_messages("x") | {"max_tokens": 0}), "invalid_value", "max_tokens"),
    (json.dumps(_messages("x") | {"temperature": 5}), None, "temperature"),
    (json.dumps(_messages("x") | {"stop": ["\n"]}), "unsupported_parameter", "stop"),
    (json.dumps(_messages("x") | {"tools": [{"type": "function"}]}), "unsupported_parameter", "tools"),
    (json.dumps(_messages("x") | {"frobnicate": 1}), "unknown_parameter", "frobnicate"),
    (json.dumps({"model": "served", "messages": [{"role": "tool", "content": "x"}]}), "unsupported_value",
     "messages[0].role"),
    (json.dumps({"model": "served", "messages": [{"role": "user", "content": "x"},
                                                 {"role": "assistant", "content": "y"}]}), None, "messages[1]"),
    (json.dumps({"model": "served", "messages": [{"role": "user", "content": "x"},
                                                 {"role": "system", "content": "y"}]}), None, "messages[1].role"),
    (json.dumps({"model": "served", "messages": []}), None, "messages"),
    (b"[]", None, None),
]  # fmt: skip


@pytest.mark.parametrize("body, code, param", BAD, ids=range(len(BAD)))
def test_bad_requests_get_openai_error_objects(served, body, code, param):
    response = httpx.post(f"{served.url}/v1/chat/completions", content=body, timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_wrong_paths_and_methods_get_error_objects_too(served):
    for method, path, status in [("GET", "/v1/chat/completions", 405), ("GET", "/v1/nothing", 404),
                                 ("GET", "/v1/models/gpt-9", 404)]:  # fmt: skip
        response = httpx.request(method, f"{served.url}{path}")
        assert response.status_code == status and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_failing_batch_is_a_500_error_object_and_the_server_keeps_serving(served, monkeypatch):
    from lcia.serving import batcher

    def broken(*args, **kwargs):
        raise RuntimeError("the decoder broke")

    monkeypatch.setattr(batcher, "generate_answers", broken)
    for stream in (False, True):
        body = _messages("x") | {"model": served.model, "stream": stream}
        response = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    monkeypatch.undo()
    assert served.chat(COLOR, "item 1", max_tokens=2).choices[0].finish_reason in ("stop", "length")


def test_concurrent_requests_are_answered_in_one_batch(served, reference):
    asks = [(COLOR, f"item {i}") for i in range(3)] + [(ECHO, f"w{i}") for i in range(3)]
    expected = [reference.ask(instruction, instance, 5)[1] for instruction, instance in asks]
    before = served.health()

    def one(k: int) -> str:
        instruction, instance = asks[k]
        if k == len(asks) - 1:  # one streamed request rides in the same batch
            chunks = served.chat(instruction, instance, max_tokens=5, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return served.chat(instruction, instance, max_tokens=5).choices[0].message.content

    with ThreadPoolExecutor(len(asks)) as pool:
        with served.batcher.hold:  # the worker waits: the requests line up in its queue
            futures = [pool.submit(one, k) for k in range(len(asks))]
            deadline = time.monotonic() + 30
            while served.batcher.queued < len(asks) - 1:  # the first is in the worker's hands, waiting for the lock
                assert time.monotonic() < deadline, "the requests did not line up"
                time.sleep(0.02)
        answers = [f.result(timeout=60) for f in futures]
    assert answers == expected
    after = served.health()
    assert after["largest_batch"] == len(asks)
    assert after["batches"] - before["batches"] == 1 and after["requests"] - before["requests"] == len(asks)


def test_request_mapping_follows_the_conversational_readers():
    def example(*turns):
        return to_example(ChatRequest.model_validate({"model": "m", "messages": [
            {"role": role, "content": content} for role, content in turns]}).messages)  # fmt: skip

    assert example(("system", "S"), ("user", "U")) == Example("S", "U", "")
    assert example(("user", "U")) == Example("U", "", "")
    assert example(("developer", "S"), ("system", "T"), ("user", "U")) == Example("S\nT", "U", "")
    conversation = example(("user", "A"), ("assistant", "B"), ("user", "C"))
    assert (conversation.instruction, conversation.input, len(conversation.messages)) == ("A", "C", 3)
    with pytest.raises(ApiError, match="the last message must be the user's"):
        example(("system", "S"))


def test_the_cli_has_serve_with_loopback_defaults():
    args = build_parser().parse_args(["serve", "runs/x"])
    assert (args.host, args.port, args.stage, args.batch_size) == ("127.0.0.1", 8000, None, None)
    assert args.func.__name__ == "_cmd_serve"
