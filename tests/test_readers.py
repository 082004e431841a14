"""Readers: every format parsed to the right values, and every bad input named by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcia.data.readers import read_examples
from lcia.data.schema import Example
from lcia.errors import LciaError


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_error(path: Path, **kwargs) -> str:
    with pytest.raises(LciaError) as info:
        read_examples(path, **kwargs)
    return str(info.value)


# --- Formats -------------------------------------------------------------------------------------


def test_alpaca_jsonl(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"instruction": "Add the numbers.", "input": "2 + 3", "output": "5"},
            {"instruction": "Say hi.", "output": "hi"},
        ],
    )
    assert read_examples(path) == [
        Example("Add the numbers.", "2 + 3", "5", ("5",), "train-0"),
        Example("Say hi.", "", "hi", ("hi",), "train-1"),
    ]


def test_alpaca_json_array(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"instruction": "A", "input": "x", "output": "y", "id": 7}], indent=2))
    [example] = read_examples(path, format="alpaca")
    assert (example.instruction, example.input, example.output, example.id) == ("A", "x", "y", "7")


def test_prompt_completion_standard(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "The sky is", "completion": " blue."}])
    [example] = read_examples(path)
    assert (example.instruction, example.input, example.output) == ("The sky is", "", " blue.")
    assert example.messages == ()


def test_prompt_completion_with_instruction_keeps_the_prompt_as_input(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "The sky is", "completion": "blue"}])
    [example] = read_examples(path, instruction="Complete the sentence.")
    assert (example.instruction, example.input, example.output) == ("Complete the sentence.", "The sky is", "blue")


def test_prompt_completion_conversational(tmp_path):
    prompt = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"}]
    completion = [{"role": "assistant", "content": "Blue"}]
    path = write_jsonl(tmp_path / "conv.jsonl", [{"prompt": prompt, "completion": completion}])
    [example] = read_examples(path)
    assert example.instruction == "Answer in one word."
    assert example.input == "Colour of the sky?"
    assert example.output == "Blue"
    assert example.messages == tuple(prompt)


def test_messages_with_system_and_several_turns(tmp_path):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    [example] = read_examples(path)
    assert (example.instruction, example.input, example.output) == ("Be brief.", "2+2?", "4")
    assert example.messages == tuple(messages[:-1])


def test_messages_without_system_single_user_turn(tmp_path):
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    [example] = read_examples(path, format="messages")
    assert (example.instruction, example.input, example.output) == ("Name a colour.", "", "Red")


def test_messages_instruction_override(tmp_path):
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    [example] = read_examples(path, instruction="Colours")
    assert (example.instruction, example.input) == ("Colours", "Name a colour.")
    assert example.messages == tuple(messages[:1])


def bigbench_task(path: Path, examples: list, **header) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    task = {"canary": "(a canary line; ignored)", "name": "t", **header, "examples": examples}
    path.write_text(json.dumps(task, indent=4), encoding="utf-8")
    return path


def test_bigbench_targets(tmp_path):
    path = bigbench_task(
        tmp_path / "mytask" / "task.json",
        [
            {"input": "1 + 1", "target": ["  2 ", "two"]},
            {"input": "3 + 3", "target": "6\n"},
            {"input": "Pick", "target_scores": {"a": 0, "b": 1, "c": 1}},
            {"input": "Both", "target": "x", "target_scores": {"x": 0, "y": 1}},
        ],
        task_prefix="  Add the numbers.\n",
        keywords=["arithmetic"],
    )
    examples = read_examples(path)
    assert [e.instruction for e in examples] == ["Add the numbers."] * 4
    assert [(e.input, e.output, e.references) for e in examples] == [
        ("1 + 1", "2", ("2", "two")),
        ("3 + 3", "6", ("6",)),
        ("Pick", "b", ("b", "c")),
        ("Both", "x", ("x",)),
    ]
    # Every BIG-bench file is called task.json, so ids take the task's folder name.
    assert [e.id for e in examples] == ["mytask-0", "mytask-1", "mytask-2", "mytask-3"]


def test_bigbench_instruction_override_and_description_fallback(tmp_path):
    path = bigbench_task(tmp_path / "t.json", [{"input": "q", "target": "a"}], description="Answer it.")
    assert read_examples(path)[0].instruction == "Answer it."
    [example] = read_examples(path, format="bigbench", instruction="Reply.")
    assert (example.instruction, example.id) == ("Reply.", "t-0")


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"instruction": "i", "output": "o"}, ("i", "", "o")),
        ({"prompt": "p", "completion": "c"}, ("p", "", "c")),
        ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}, ("u", "", "a")),
    ],
)
def test_auto_detects_the_format_from_the_first_record(tmp_path, record, expected):
    [example] = read_examples(write_jsonl(tmp_path / "d.jsonl", [record]))
    assert (example.instruction, example.input, example.output) == expected


def test_instruction_override_for_alpaca_without_instruction_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "x", "output": "y"}, {"instruction": "old", "output": "z"}])
    assert [e.instruction for e in read_examples(path, instruction="New")] == ["New", "New"]


def test_jsonl_under_a_json_name_and_byte_order_mark(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"instruction": "i", "output": "a"}\n{"instruction": "i", "output": "b"}\n')
    assert [e.output for e in read_examples(path)] == ["a", "b"]


# --- Errors --------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert read_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file"


def test_non_utf8_reports_the_line_of_the_first_bad_byte(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"instruction": "i", "output": "a"}\n{"instruction": "caf\xe9", "output": "b"}\n')
    assert "train.jsonl:2: not valid UTF-8 (byte 0xe9)" in read_error(path)


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"instruction": "i", "output": "a"}\n\n{"instruction": "i", "output": }\n')
    assert "train.jsonl:3: malformed JSON: Expecting value" in read_error(path)


def test_malformed_json_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"instruction": "i", "output": "a"},\n  {"instruction": "i" "output": "b"}\n]\n')
    assert "data.json:3: malformed JSON: Expecting ',' delimiter" in read_error(path)


def test_extra_data_after_a_json_array(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"instruction": "i", "output": "a"}]\n\n]')
    assert "data.json:3: malformed JSON: Extra data" in read_error(path)


def test_record_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "i", "output": "a"}, ["i", "a"]])
    assert "train.jsonl:2: expected a JSON object, got a list" in read_error(path)


def test_missing_required_field(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "i", "output": "a"}] * 2 + [{"instruction": "i"}])
    assert "train.jsonl:3: output: missing required field" in read_error(path, format="alpaca")


def test_empty_required_field(tmp_path):
    records = [{"instruction": "i", "output": "a"}, {"instruction": " ", "output": "b"}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    assert "train.jsonl:2: instruction: is empty" in read_error(path)


def test_wrong_field_type(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "i", "output": 3}])
    assert "train.jsonl:1: output: expected a string, got a number (3)" in read_error(path)


def test_json_array_record_error_names_the_line_where_the_record_starts(tmp_path):
    path = tmp_path / "data.json"
    records = [{"instruction": "i", "output": "a"}, {"instruction": "i", "output": "b"}]
    records.append({"instruction": "i", "output": ["c"]})
    path.write_text(json.dumps(records, indent=2))  # each record spans 4 lines after the opening "["
    assert "data.json:10: output: expected a string, got a list" in read_error(path)


@pytest.mark.parametrize("content", ["", "\n  \n", "[]", "[\n]\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "train.json"
    path.write_text(content)
    assert "train.json:1: no examples" in read_error(path)


def test_undetectable_format_names_the_keys(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"question": "q", "answer": "a"}])
    assert "train.jsonl:1: cannot detect the format from the keys ['answer', 'question']" in read_error(path)


def test_duplicate_id(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "i", "output": "a", "id": "x"}] * 2)
    assert "train.jsonl:2: id: duplicate id 'x' (first on line 1)" in read_error(path)
    assert [ex.id for ex in read_examples(path, unique_ids=False)] == ["x", "x"]  # a benchmark's training file


def test_messages_must_end_with_the_assistant(tmp_path):
    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [*messages, {"role": "user", "content": "v"}]}])
    expected = "chat.jsonl:1: messages[2].role: the last message must be the assistant's answer, got 'user'"
    assert expected in read_error(path)


def test_message_content_of_wrong_type(tmp_path):
    messages = [{"role": "user", "content": ["u"]}, {"role": "assistant", "content": "a"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    # A list is TRL's typed content: its items must be image or text items.
    assert "chat.jsonl:1: messages[0].content[0]: expected an item of type 'image' or 'text', got a string" in (
        read_error(path)
    )
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": 3}, messages[1]]}])
    assert "chat.jsonl:1: messages[0].content: expected a string, got a number (3)" in read_error(path)


def test_conversational_completion_must_be_one_assistant_message(tmp_path):
    record = {"prompt": [{"role": "user", "content": "u"}], "completion": [{"role": "user", "content": "a"}]}
    path = write_jsonl(tmp_path / "conv.jsonl", [record])
    assert "conv.jsonl:1: completion: expected one assistant message, got roles ['user']" in read_error(path)


def test_bigbench_example_error_names_line_and_example(tmp_path):
    examples = [{"input": "a", "target": "b"}, {"input": "c", "target": 4}]
    path = bigbench_task(tmp_path / "task.json", examples, task_prefix="P")
    # Lines: 1 "{", 2-4 canary, name, task_prefix, 5 "examples": [, 6-9 the first example, 10 the second's "{".
    assert "task.json:10: examples[1].target: expected a string, got a number (4)" in read_error(path)


def test_bigbench_missing_target(tmp_path):
    path = bigbench_task(tmp_path / "task.json", [{"input": "a"}], task_prefix="P")
    assert "task.json:6: examples[0].target: missing required field (or target_scores)" in read_error(path)


def test_bigbench_without_examples_or_instruction(tmp_path):
    empty = bigbench_task(tmp_path / "a" / "task.json", [], task_prefix="P")
    assert "task.json:5: examples: the task has no examples" in read_error(empty)
    no_prefix = bigbench_task(tmp_path / "b" / "task.json", [{"input": "a", "target": "b"}])
    assert "task.json:1: task_prefix: missing" in read_error(no_prefix)


def test_format_that_does_not_fit_the_file(tmp_path):
    records = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "i", "output": "a"}])
    assert "train.jsonl:1: expected a BIG-bench task" in read_error(records, format="bigbench")
    task = bigbench_task(tmp_path / "task.json", [{"input": "a", "target": "b"}], task_prefix="P")
    assert "task.json:1: format: this is a BIG-bench task file" in read_error(task, format="alpaca")
    assert "format: unknown format 'csv'" in read_error(records, format="csv")


# --- Images: LLaVA conversations and TRL's vision format --------------------------------------------


def write_png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "red").save(path)
    return path


def llava(record_id: str, *turns: tuple[str, str], image: str | None = None) -> dict:
    record = {"id": record_id, "conversations": [{"from": who, "value": text} for who, text in turns]}
    return record if image is None else {**record, "image": image}


def test_llava_single_turn_strips_the_placeholder_from_the_instruction_only(tmp_path):
    write_png(tmp_path / "imgs" / "a.png")
    record = llava("q1", ("human", "<image>\nWhat colour is it?"), ("gpt", "red"), image="imgs/a.png")
    path = tmp_path / "data.json"
    path.write_text(json.dumps([record], indent=2))
    [example] = read_examples(path)  # auto-detected: conversations
    assert (example.instruction, example.input, example.output, example.id) == ("What colour is it?", "", "red", "q1")
    assert example.image == str(tmp_path / "imgs" / "a.png")
    assert example.messages == ({"role": "user", "content": "<image>\nWhat colour is it?"},)


def test_llava_multi_turn_and_system_turn(tmp_path):
    write_png(tmp_path / "a.png")
    turns = [
        ("system", "Answer with one word."),
        ("human", "What is this?\n<image>"),
        ("gpt", "A square."),
        ("human", "Its colour?"),
        ("gpt", "red"),
    ]
    [example] = read_examples(write_jsonl(tmp_path / "d.jsonl", [llava("m", *turns, image="a.png")]), format="llava")
    assert (example.instruction, example.input, example.output) == ("Answer with one word.", "Its colour?", "red")
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant", "user"]
    assert example.messages[1]["content"] == "What is this?\n<image>"
    turns = [("human", "What is this?\n<image>"), ("gpt", "A square."), ("human", "Its colour?"), ("gpt", "red")]
    [example] = read_examples(write_jsonl(tmp_path / "e.jsonl", [llava("n", *turns, image="a.png")]))
    assert (example.instruction, example.input) == ("What is this?", "Its colour?")


def test_llava_text_only_record_and_image_folder(tmp_path):
    write_png(tmp_path / "pics" / "b.png")
    records = [
        llava("t", ("human", "Say hi."), ("gpt", "hi")),
        llava("i", ("human", "<image>Colour?"), ("gpt", "red"), image="b.png"),
    ]
    (tmp_path / "data").mkdir()
    text, image = read_examples(write_jsonl(tmp_path / "data" / "d.jsonl", records), image_folder=tmp_path / "pics")
    assert (text.image, text.instruction) == ("", "Say hi.")
    assert (image.image, image.instruction) == (str(tmp_path / "pics" / "b.png"), "Colour?")


def test_llava_missing_image_names_file_line_field_and_record(tmp_path):
    records = [
        llava("ok", ("human", "Hi"), ("gpt", "hi")),
        llava("abc", ("human", "<image>Q"), ("gpt", "a"), image="x.png"),
    ]
    path = tmp_path / "d.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")  # record 2 on line 3
    assert read_error(path) == f"{path}:3: image: record 'abc': image not found: {tmp_path / 'x.png'}"


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            llava("two", ("human", "<image> and <image>"), ("gpt", "a"), image="a.png"),
            "d.jsonl:1: conversations: record 'two': 2 <image> placeholders (one image per example)",
        ),
        (
            llava("none", ("human", "<image>Q"), ("gpt", "a")),
            "d.jsonl:1: conversations: record 'none': an <image> placeholder but no image",
        ),
        (
            llava("last", ("human", "Q"), ("gpt", "a"), ("human", "Q2")),
            "conversations[2].from: the last turn must be gpt",
        ),
        (
            llava("who", ("bot", "Q"), ("gpt", "a")),
            "conversations[0].from: expected one of human, gpt, system, got 'bot'",
        ),
        (
            llava("bare", ("human", "<image>"), ("gpt", "a"), image="a.png"),
            "conversations: record 'bare': the instruction is only the <image> placeholder",
        ),
        ({"id": "e", "conversations": []}, "d.jsonl:1: conversations: expected a non-empty list"),
    ],
)
def test_llava_bad_records(tmp_path, record, expected):
    write_png(tmp_path / "a.png")
    assert expected in read_error(write_jsonl(tmp_path / "d.jsonl", [record]), format="llava")


def test_trl_vision_messages_are_flattened(tmp_path):
    write_png(tmp_path / "imgs" / "c.png")
    content = [{"type": "image"}, {"type": "text", "text": "What shape"}, {"type": "text", "text": " is it?"}]
    answer = [{"type": "text", "text": "circle"}]
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    path = write_jsonl(tmp_path / "v.jsonl", [{"images": ["imgs/c.png"], "messages": messages}])
    [example] = read_examples(path)  # auto-detected: messages
    assert (example.instruction, example.input, example.output) == ("What shape is it?", "", "circle")
    assert example.messages == ({"role": "user", "content": "<image>What shape is it?"},)
    assert example.image == str(tmp_path / "imgs" / "c.png")


def test_trl_vision_bad_images(tmp_path):
    question = [{"type": "image"}, {"type": "text", "text": "Q"}]
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": "a"}]
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": "r1", "images": ["nope.png"], "messages": messages}])
    assert read_error(path) == f"{path}:1: images[0]: record 'r1': image not found: {tmp_path / 'nope.png'}"
    write_png(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": "r2", "images": ["a.png", "a.png"], "messages": messages}])
    assert read_error(path) == f"{path}:1: images: record 'r2': 2 images (one image per example)"
    bad = [{"role": "user", "content": [{"type": "video"}]}, messages[1]]
    path = write_jsonl(tmp_path / "v.jsonl", [{"images": ["a.png"], "messages": bad}])
    assert "v.jsonl:1: messages[0].content[0]: expected an item of type 'image' or 'text', got 'video'" in read_error(
        path
    )


def test_auto_detection_of_image_formats(tmp_path):
    write_png(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "l.jsonl", [llava("x", ("human", "Q"), ("gpt", "a"), image="a.png")])
    assert read_examples(path)[0].image == str(tmp_path / "a.png")
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}]
    path = write_jsonl(tmp_path / "m.jsonl", [{"messages": messages}])
    assert read_examples(path)[0].image == ""
    path = write_jsonl(tmp_path / "u.jsonl", [{"question": "Q"}])
    assert "conversations (llava)" in read_error(path)


# --- A real Natural-Instructions task, as BIG-bench ships it (lcia/data/bigbench_tasks) ---------------------------


def test_real_natural_instructions_task():
    from lcia.data.streams import bigbench_dir

    examples = read_examples(bigbench_dir() / "natural_instructions/subtask041_qasc_answer_generation/task.json")
    assert len(examples) == 6500
    assert examples[0].instruction.startswith("Definition: Write a correct answer to the given question based on")
    assert examples[0].input.startswith("Fact: earthquakes can damage buildings.")
    assert examples[0].output == "earthquakes." and examples[0].references == ("earthquakes.",)
    assert examples[0].id == "subtask041_qasc_answer_generation-0"
    assert len({e.instruction for e in examples}) == 1
