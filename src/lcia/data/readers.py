"""Readers that turn a user's data file into a list of :class:`~lcia.data.schema.Example`.

Sources: a JSON array, JSON Lines or a BIG-bench ``task.json``; or, read with Hugging Face ``datasets``
(:mod:`lcia.data.hf_datasets`), a folder written by ``save_to_disk`` (for a ``DatasetDict``, its split's
folder, e.g. ``data/my-dict/train``) or a ``.parquet``, ``.arrow`` or ``.csv`` file, whose rows are records
of the same formats (a null cell being an absent field).

Formats (``format=``):

* ``alpaca``: a JSON array or JSON Lines of ``{"instruction", "input"?, "output"}`` objects.
* ``prompt-completion``: TRL's prompt-completion format, ``{"prompt", "completion"}`` as strings, or
  as lists of ``{"role", "content"}`` messages (TRL's conversational prompt-completion).
* ``messages``: TRL's conversational format, ``{"messages": [{"role", "content"}, ...]}`` whose last
  message is the assistant's answer. TRL's vision form is read too: ``"images": [path]`` beside the
  messages, and contents as lists of ``{"type": "image"}`` / ``{"type": "text", "text"}`` items, which are
  flattened to one string with ``<image>`` where the image item was.
* ``llava``: LLaVA's conversation format (CoIN's and most multimodal datasets'): ``{"id", "image"?,
  "conversations": [{"from": "human" | "gpt" | "system", "value"}, ...]}`` whose last turn is ``gpt``'s
  answer; the ``<image>`` placeholder in a turn marks where the image goes.
* ``bigbench``: a BIG-bench / Natural-Instructions ``task.json``: one object with
  ``examples: [{"input", "target" | "target_scores"}]`` and the instruction in ``task_prefix``.
* ``auto`` (the default): a top-level object with ``examples`` is a BIG-bench task; otherwise the
  first record's keys decide (``conversations``: llava; ``messages``: messages).

An example has at most one image (``Example.image``). Image paths are resolved against ``image_folder``
(default: the data file's folder) and must exist; the conversational formats may hold one ``<image>``
placeholder, which is removed from the ``instruction`` (compared for grouping and routing) but kept in
the messages, where the model's prompt puts the image.

Every bad input raises an :class:`~lcia.errors.LciaError` that reads ``file:line: field: message``, the
line being the 1-based line where the offending record starts; for a ``datasets`` source it reads
``file:row N: field: message``, N the 1-based row.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from lcia.data.hf_datasets import Row, default_image_folder, is_dataset_source, load_rows
from lcia.data.images import IMAGE_PLACEHOLDER
from lcia.data.json_records import Source, Where, json_type, load, record_id, string
from lcia.data.schema import Example
from lcia.errors import input_error

FORMATS = ("auto", "alpaca", "prompt-completion", "messages", "llava", "bigbench")


def read_examples(
    path: str | os.PathLike,
    format: str = "auto",
    instruction: str | None = None,
    image_folder: str | os.PathLike | None = None,
    unique_ids: bool = True,
) -> list[Example]:
    """Read the examples of one data file.

    ``instruction``, when given, is the instruction of every example: it replaces the file's own
    (``instruction`` field, ``task_prefix``, system message) and supplies one for files that have none;
    a string ``prompt``, which would otherwise be the instruction, then becomes the ``input``.
    A record's ``id`` field (string or integer) is its id; otherwise the id is ``<file stem>-<index>``
    with a 0-based index (for a BIG-bench ``task.json``, its folder's name instead of the stem ``task``; a
    ``save_to_disk`` folder has a stem too: ``data/train`` gives ``train-0``). Relative image paths are
    resolved against ``image_folder`` (default: the file's folder, or a ``save_to_disk`` folder itself).
    A repeated id is an error unless ``unique_ids`` is off (a benchmark's training file that repeats some).
    Raises :class:`~lcia.errors.LciaError` on any bad input.
    """
    file = str(path)
    if format not in FORMATS:
        raise input_error(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}", file, field="format")
    if instruction is not None and not instruction.strip():
        raise input_error("the instruction argument is empty", file, field="instruction")
    source = load_rows(file) if is_dataset_source(file) else load(file)
    if source.task is not None:
        if format not in ("auto", "bigbench"):
            message = f"this is a BIG-bench task file (an object with `examples`), not {format}"
            raise input_error(message, file, 1, "format")
        instruction = instruction if instruction is not None else _task_instruction(source)
        format, prefix = "bigbench", "examples"
    else:
        if format == "bigbench":
            message = "expected a BIG-bench task: one JSON object with an `examples` list"
            raise input_error(message, file, source.records[0][0])
        if format == "auto":
            format = _detect(source.records[0], file)
        prefix = ""
    parse = _PARSERS[format]
    images = Path(image_folder) if image_folder is not None else default_image_folder(file)
    stem = Path(file).stem
    if source.task is not None and stem == "task":
        # Every BIG-bench task file is called task.json: its folder names the task.
        stem = Path(file).resolve().parent.name
    examples, first_line_of_id = [], {}
    for index, (line, record) in enumerate(source.records):
        where = Where(file, line, f"{prefix}[{index}]." if prefix else "")
        if not isinstance(record, dict):
            raise where.error(None, f"expected a JSON object, got {json_type(record)}")
        example_id = record_id(record, where, f"{stem}-{index}")
        if unique_ids and example_id in first_line_of_id:
            first = first_line_of_id[example_id]
            place = first if isinstance(first, Row) else f"line {first}"  # a Row prints as "row N"
            raise where.error("id", f"duplicate id {example_id!r} (first on {place})")
        first_line_of_id[example_id] = line
        example = parse(record, where, instruction, example_id)
        if format in _IMAGE_FIELD:
            example = _with_image(example, record, format, where, images, instruction is None)
        examples.append(example)
    return examples


# --- Formats -------------------------------------------------------------------------------------


def _detect(first: tuple[int, Any], file: str) -> str:
    """The format of a list of records, from the keys of the first one."""
    line, record = first
    if not isinstance(record, dict):
        raise input_error(f"expected a JSON object, got {json_type(record)}", file, line)
    if "conversations" in record:
        return "llava"
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "output" in record:
        return "alpaca"
    raise input_error(
        f"cannot detect the format from the keys {sorted(record)}: expected instruction/output (alpaca), "
        "prompt/completion (prompt-completion), messages (messages) or conversations (llava); or pass the format",
        file,
        line,
    )


def _alpaca(record: dict, where: Where, instruction: str | None, example_id: str) -> Example:
    return Example(
        instruction=instruction if instruction is not None else string(record, "instruction", where),
        input=string(record, "input", where, default=""),
        output=string(record, "output", where),
        id=example_id,
    )


def _prompt_completion(record: dict, where: Where, instruction: str | None, example_id: str) -> Example:
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, list):
        prompt_messages = _chat(record, "prompt", where)
        answer = _chat(record, "completion", where)
        if len(answer) != 1 or answer[0]["role"] != "assistant":
            raise where.error("completion", f"expected one assistant message, got roles {[m['role'] for m in answer]}")
        return _conversation(prompt_messages, answer[0]["content"], where, instruction, example_id)
    if isinstance(completion, list):
        raise where.error("completion", "expected a string like `prompt`, got a list of messages")
    prompt = string(record, "prompt", where)
    return Example(
        # With an instruction given, the prompt is the instance rather than being lost.
        instruction=instruction if instruction is not None else prompt,
        input=prompt if instruction is not None else "",
        output=string(record, "completion", where),
        id=example_id,
    )


def _messages(record: dict, where: Where, instruction: str | None, example_id: str) -> Example:
    messages = _chat(record, "messages", where)
    last = len(messages) - 1
    if messages[last]["role"] != "assistant":
        message = f"the last message must be the assistant's answer, got {messages[last]['role']!r}"
        raise where.error(f"messages[{last}].role", message)
    return _conversation(messages[:last], messages[last]["content"], where, instruction, example_id)


def _chat(record: dict, key: str, where: Where) -> list[dict]:
    """``record[key]`` as a non-empty list of ``{role, content}`` messages, each content a string
    (a list of typed items is flattened: :func:`_flat_content`)."""
    messages = record.get(key)
    if not isinstance(messages, list) or not messages:
        if key not in record:
            raise where.error(key, "missing required field")
        raise where.error(key, f"expected a non-empty list of {{role, content}} messages, got {json_type(messages)}")
    flat = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise where.error(f"{key}[{k}]", f"expected an object with role and content, got {json_type(message)}")
        string(message, "role", where.inside(f"{key}[{k}]"))
        if isinstance(message.get("content"), list):
            message = {**message, "content": _flat_content(message["content"], where.inside(f"{key}[{k}]"))}
        string(message, "content", where.inside(f"{key}[{k}]"))
        flat.append(message)
    return flat


def _flat_content(items: list, where: Where) -> str:
    """TRL's typed content (``[{"type": "image"}, {"type": "text", "text": ...}]``) as one string, the
    image item becoming the ``<image>`` placeholder and text items joined as they come."""
    parts = []
    for k, item in enumerate(items):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "image":
            parts.append(IMAGE_PLACEHOLDER)
        elif kind == "text":
            parts.append(string(item, "text", where.inside(f"content[{k}]"), default=""))
        else:
            found = repr(kind) if isinstance(item, dict) else json_type(item)
            raise where.error(f"content[{k}]", f"expected an item of type 'image' or 'text', got {found}")
    return "".join(parts)


_LLAVA_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _llava(record: dict, where: Where, instruction: str | None, example_id: str) -> Example:
    """LLaVA's turns as chat messages (human: user, gpt: assistant), read like the messages format."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        if "conversations" not in record:
            raise where.error("conversations", "missing required field")
        raise where.error(
            "conversations", f"expected a non-empty list of {{from, value}} turns, got {json_type(turns)}"
        )
    messages = []
    for k, turn in enumerate(turns):
        at = where.inside(f"conversations[{k}]")
        if not isinstance(turn, dict):
            raise at.error(None, f"expected an object with from and value, got {json_type(turn)}")
        speaker = string(turn, "from", at)
        if speaker not in _LLAVA_ROLES:
            raise at.error("from", f"expected one of {', '.join(_LLAVA_ROLES)}, got {speaker!r}")
        messages.append({"role": _LLAVA_ROLES[speaker], "content": string(turn, "value", at)})
    if turns[-1]["from"] != "gpt":
        last = len(turns) - 1
        raise where.error(
            f"conversations[{last}].from", f"the last turn must be gpt's answer, got {turns[-1]['from']!r}"
        )
    return _conversation(messages[:-1], messages[-1]["content"], where, instruction, example_id)


def _conversation(prompt: list[dict], answer: str, where: Where, instruction: str | None, example_id: str) -> Example:
    """An example from chat messages: the system message (or else the first user turn) is the
    instruction, the last user turn the input unless it is that instruction."""
    system = next((m["content"] for m in prompt if m["role"] == "system"), None)
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if system is None and not users:
        raise where.error(None, "no system or user message before the assistant's answer")
    if instruction is None:
        instruction = system if system is not None else users[0]
    last_user = users[-1] if users else ""
    return Example(
        instruction=instruction,
        input=last_user if last_user != instruction else "",
        output=answer,
        id=example_id,
        messages=tuple(dict(m) for m in prompt),
    )


def _task_instruction(source: Source) -> str:
    """A BIG-bench task's instruction: ``task_prefix``, or ``description`` for tasks without one."""
    for key in ("task_prefix", "description"):
        value = source.task.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise input_error(f"expected a string, got {json_type(value)}", source.file, source.task_lines[key], key)
        if value.strip():
            return value.strip()
    raise input_error("missing (and no description): pass the task's instruction", source.file, 1, "task_prefix")


def _bigbench(record: dict, where: Where, instruction: str | None, example_id: str) -> Example:
    if "input" not in record:
        raise where.error("input", "missing required field")
    # A blank input is allowed: over a thousand real BIG-bench examples (e.g. multiemo) have one.
    input_text = string(record, "input", where, default="")
    if "target" in record or "target_scores" not in record:
        references = _targets(record, where)
    else:
        references = _best_scored(record, where)
    return Example(instruction, input_text, references[0], references, example_id)


def _targets(record: dict, where: Where) -> tuple[str, ...]:
    """``target``: one string or a list of accepted strings, whitespace-stripped; the first is the output."""
    target = record.get("target")
    if target is None:
        raise where.error("target", "missing required field (or target_scores)")
    targets = target if isinstance(target, list) else [target]
    if not targets:
        raise where.error("target", "is an empty list")
    for k, value in enumerate(targets):
        field = f"target[{k}]" if isinstance(target, list) else "target"
        if not isinstance(value, str):
            raise where.error(field, f"expected a string, got {json_type(value)}")
        if not value.strip():
            raise where.error(field, "is empty")
    return tuple(value.strip() for value in targets)


def _best_scored(record: dict, where: Where) -> tuple[str, ...]:
    """``target_scores`` (answer -> score): the answers with the highest score."""
    scores = record["target_scores"]
    if not isinstance(scores, dict) or not scores:
        raise where.error("target_scores", f"expected a non-empty object of answer: score, got {json_type(scores)}")
    for answer, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise where.error(f"target_scores[{answer!r}]", f"expected a number, got {json_type(score)}")
    best = max(scores.values())
    return tuple(answer.strip() for answer, score in scores.items() if score == best)


_PARSERS: dict[str, Callable[[dict, Where, str | None, str], Example]] = {
    "alpaca": _alpaca,
    "prompt-completion": _prompt_completion,
    "messages": _messages,
    "llava": _llava,
    "bigbench": _bigbench,
}


# --- Images --------------------------------------------------------------------------------------

# The formats that can carry an image: the record field naming it and the field holding the turns.
_IMAGE_FIELD = {
    "llava": ("image", "conversations"),
    "messages": ("images", "messages"),
    "prompt-completion": ("images", "prompt"),
}
_PLACEHOLDER_LINE = re.compile(r"\n*" + re.escape(IMAGE_PLACEHOLDER) + r"\n*")


def _with_image(
    example: Example, record: dict, format: str, where: Where, folder: Path, own_instruction: bool
) -> Example:
    """The example with its image path resolved and checked, and the ``<image>`` placeholder (at most
    one, and only with an image) removed from an instruction taken from the record."""
    image_key, turns_key = _IMAGE_FIELD[format]
    image = _image_path(record, image_key, where, folder, example.id)
    texts = [m["content"] for m in example.messages] or [example.instruction, example.input]
    placeholders = sum(text.count(IMAGE_PLACEHOLDER) for text in texts)
    if placeholders > 1:
        message = f"record {example.id!r}: {placeholders} {IMAGE_PLACEHOLDER} placeholders (one image per example)"
        raise where.error(turns_key, message)
    if placeholders and not image:
        raise where.error(turns_key, f"record {example.id!r}: an {IMAGE_PLACEHOLDER} placeholder but no {image_key}")
    instruction = example.instruction
    if own_instruction and IMAGE_PLACEHOLDER in instruction:
        instruction = _PLACEHOLDER_LINE.sub("\n", instruction).strip()
        if not instruction:
            message = f"record {example.id!r}: the instruction is only the {IMAGE_PLACEHOLDER} placeholder; pass one"
            raise where.error(turns_key, message)
    return replace(example, instruction=instruction, image=image)


def _image_path(record: dict, key: str, where: Where, folder: Path, example_id: str) -> str:
    """The absolute path of the record's one image, or "" for a text-only record."""
    value = record.get(key)
    if value is None:
        return ""
    field = key
    if key == "images":  # TRL: a list, of which lcia takes one
        if not isinstance(value, list):
            raise where.error(key, f"expected a list of image paths, got {json_type(value)}")
        if len(value) > 1:
            raise where.error(key, f"record {example_id!r}: {len(value)} images (one image per example)")
        if not value:
            return ""
        value, field = value[0], "images[0]"
    if not isinstance(value, str):
        raise where.error(field, f"expected an image path, got {json_type(value)}")
    if not value.strip():
        raise where.error(field, "is empty")
    path = os.path.abspath(folder / value)
    if not os.path.isfile(path):
        raise where.error(field, f"record {example_id!r}: image not found: {path}")
    return path
