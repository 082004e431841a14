"""Readers that turn a user's data file into a list of :class:`~lcia.data.schema.Example`.

Formats (``format=``):

* ``alpaca``: a JSON array or JSON Lines of ``{"instruction", "input"?, "output"}`` objects.
* ``prompt-completion``: TRL's prompt-completion format, ``{"prompt", "completion"}`` as strings, or
  as lists of ``{"role", "content"}`` messages (TRL's conversational prompt-completion).
* ``messages``: TRL's conversational format, ``{"messages": [{"role", "content"}, ...]}`` whose last
  message is the assistant's answer.
* ``bigbench``: a BIG-bench / Natural-Instructions ``task.json``: one object with
  ``examples: [{"input", "target" | "target_scores"}]`` and the instruction in ``task_prefix``.
* ``auto`` (the default): a top-level object with ``examples`` is a BIG-bench task; otherwise the
  first record's keys decide.

Every bad input raises an :class:`~lcia.errors.LciaError` that reads ``file:line: field: message``, the
line being the 1-based line where the offending record starts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lcia.data.schema import Example
from lcia.errors import LciaError, input_error

FORMATS = ("auto", "alpaca", "prompt-completion", "messages", "bigbench")

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's insignificant whitespace
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}


def read_examples(path: str | os.PathLike, format: str = "auto", instruction: str | None = None) -> list[Example]:
    """Read the examples of one data file.

    ``instruction``, when given, is the instruction of every example: it replaces the file's own
    (``instruction`` field, ``task_prefix``, system message) and supplies one for files that have none;
    a string ``prompt``, which would otherwise be the instruction, then becomes the ``input``.
    A record's ``id`` field (string or integer) is its id; otherwise the id is ``<file stem>-<index>``
    with a 0-based index (for a BIG-bench ``task.json``, its folder's name instead of the stem ``task``).
    Raises :class:`~lcia.errors.LciaError` on any bad input.
    """
    file = str(path)
    if format not in FORMATS:
        raise input_error(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}", file, field="format")
    if instruction is not None and not instruction.strip():
        raise input_error("the instruction argument is empty", file, field="instruction")
    source = _load(file)
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
    stem = Path(file).stem
    if source.task is not None and stem == "task":
        # Every BIG-bench task file is called task.json: its folder names the task.
        stem = Path(file).resolve().parent.name
    examples, first_line_of_id = [], {}
    for index, (line, record) in enumerate(source.records):
        where = _Where(file, line, f"{prefix}[{index}]." if prefix else "")
        if not isinstance(record, dict):
            raise where.error(None, f"expected a JSON object, got {_json_type(record)}")
        example_id = _record_id(record, where, f"{stem}-{index}")
        if example_id in first_line_of_id:
            raise where.error("id", f"duplicate id {example_id!r} (first on line {first_line_of_id[example_id]})")
        first_line_of_id[example_id] = line
        examples.append(parse(record, where, instruction, example_id))
    return examples


# --- Loading raw records -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A file's raw records, each with the 1-based line where it starts.

    For a BIG-bench task, ``records`` are its examples, ``task`` the whole top-level object and
    ``task_lines`` the line of each of its keys.
    """

    file: str
    records: list[tuple[int, Any]]
    task: dict | None = None
    task_lines: dict[str, int] | None = None


def _load(file: str) -> _Source:
    """Read a JSON Lines file, a JSON array of records, or one JSON object (a BIG-bench task or a record)."""
    text = _read_text(file)
    if Path(file).suffix.lower() in _JSONL_SUFFIXES:
        return _Source(file, _jsonl_records(text, file))
    start = _WHITESPACE.match(text).end()
    try:
        if text.startswith("[", start):
            items, end = _array_items(text, start)
            _expect_end(text, end)
            lines = _lines_at(text, [offset for offset, _ in items])
            return _Source(file, _non_empty([(line, value) for line, (_, value) in zip(lines, items)], file))
        if text.startswith("{", start):
            obj, key_starts, example_starts, end = _object_members(text, start)
            if _WHITESPACE.match(text, end).end() < len(text):
                # More values after the first object: JSON Lines under a .json name.
                return _Source(file, _jsonl_records(text, file))
            if "examples" not in obj:
                return _Source(file, [(_line_at(text, start), obj)])
            if not isinstance(obj["examples"], list):
                line = _line_at(text, key_starts["examples"])
                raise input_error(f"expected a list, got {_json_type(obj['examples'])}", file, line, "examples")
            task_lines = {key: _line_at(text, offset) for key, offset in key_starts.items()}
            records = list(zip(_lines_at(text, example_starts), obj["examples"]))
            if not records:
                raise input_error("the task has no examples", file, task_lines["examples"], "examples")
            return _Source(file, records, obj, task_lines)
    except json.JSONDecodeError as err:
        raise input_error(f"malformed JSON: {err.msg} (column {err.colno})", file, err.lineno) from None
    return _Source(file, _jsonl_records(text, file))


def _read_text(file: str) -> str:
    """The file's text; bad UTF-8 is reported at the line of its first bad byte."""
    try:
        data = Path(file).read_bytes()
    except FileNotFoundError:
        raise input_error("no such file", file) from None
    except OSError as err:
        raise input_error(f"cannot read the file: {err.strerror}", file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise input_error(f"not valid UTF-8 (byte 0x{data[err.start]:02x})", file, line) from None
    # A byte-order mark has no newline, so dropping it keeps every line number right.
    return text.removeprefix("\ufeff")


def _jsonl_records(text: str, file: str) -> list[tuple[int, Any]]:
    """One JSON value per non-blank line."""
    records = []
    # Split on "\n" only: str.splitlines would also split inside strings at U+2028 and friends.
    for line, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            records.append((line, json.loads(raw)))
        except json.JSONDecodeError as err:
            raise input_error(f"malformed JSON: {err.msg} (column {err.colno})", file, line) from None
    return _non_empty(records, file)


def _non_empty(records: list, file: str) -> list:
    if not records:
        raise input_error("no examples: the file is empty", file, 1)
    return records


# json.loads gives values but not where they start, so arrays and the top-level object are walked with
# raw_decode, which parses one value at an offset. Syntax errors are raised as json.JSONDecodeError,
# whose lineno the caller reports.


def _array_items(text: str, i: int) -> tuple[list[tuple[int, Any]], int]:
    """Parse the JSON array at ``text[i] == "["``: its (start offset, value) items and its end offset."""
    items: list[tuple[int, Any]] = []
    i = _WHITESPACE.match(text, i + 1).end()
    if text.startswith("]", i):
        return items, i + 1
    while True:
        value, end = _DECODER.raw_decode(text, i)
        items.append((i, value))
        i = _WHITESPACE.match(text, end).end()
        if text.startswith("]", i):
            return items, i + 1
        i = _WHITESPACE.match(text, _expect(text, i, ",")).end()


def _object_members(text: str, i: int) -> tuple[dict, dict[str, int], list[int], int]:
    """Parse the JSON object at ``text[i] == "{"``.

    Returns the object, the start offset of each key, the start offsets of the items of its
    ``examples`` array (a BIG-bench task's records) and the end offset.
    """
    obj: dict[str, Any] = {}
    key_starts: dict[str, int] = {}
    example_starts: list[int] = []
    i = _WHITESPACE.match(text, i + 1).end()
    if text.startswith("}", i):
        return obj, key_starts, example_starts, i + 1
    while True:
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key_start = i
        key, i = _DECODER.raw_decode(text, i)
        i = _WHITESPACE.match(text, _expect(text, _WHITESPACE.match(text, i).end(), ":")).end()
        if key == "examples" and text.startswith("[", i):
            items, i = _array_items(text, i)
            example_starts = [start for start, _ in items]
            obj[key] = [value for _, value in items]
        else:
            obj[key], i = _DECODER.raw_decode(text, i)
        key_starts[key] = key_start
        i = _WHITESPACE.match(text, i).end()
        if text.startswith("}", i):
            return obj, key_starts, example_starts, i + 1
        i = _WHITESPACE.match(text, _expect(text, i, ",")).end()


def _expect(text: str, i: int, char: str) -> int:
    if not text.startswith(char, i):
        raise json.JSONDecodeError(f"Expecting {char!r} delimiter", text, i)
    return i + 1


def _expect_end(text: str, i: int) -> None:
    i = _WHITESPACE.match(text, i).end()
    if i < len(text):
        raise json.JSONDecodeError("Extra data", text, i)


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _lines_at(text: str, offsets: list[int]) -> list[int]:
    """1-based lines of increasing offsets, counting each stretch of text once (linear, not quadratic)."""
    lines, line, previous = [], 1, 0
    for offset in offsets:
        line += text.count("\n", previous, offset)
        previous = offset
        lines.append(line)
    return lines


# --- Fields --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where a record is, to build errors: ``prefix`` nests field names (``examples[3].``, ``messages[1].``)."""

    file: str
    line: int
    prefix: str = ""

    def error(self, field: str | None, message: str) -> LciaError:
        name = self.prefix + field if field else self.prefix.rstrip(".")
        return input_error(message, self.file, self.line, name or None)

    def inside(self, field: str) -> _Where:
        return _Where(self.file, self.line, f"{self.prefix}{field}.")


def _string(record: dict, key: str, where: _Where, default: str | None = None) -> str:
    """``record[key]`` as a string. Without a default the field is required and must not be blank."""
    value = record.get(key)
    if value is None:
        if default is not None:
            return default
        raise where.error(key, "missing required field" if key not in record else "expected a string, got null")
    if not isinstance(value, str):
        raise where.error(key, f"expected a string, got {_json_type(value)}")
    if default is None and not value.strip():
        raise where.error(key, "is empty")
    return value


def _record_id(record: dict, where: _Where, default: str) -> str:
    value = record.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error("id", f"expected a string or an integer, got {_json_type(value)}")
    return str(value)


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, as a user who wrote the file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# --- Formats -------------------------------------------------------------------------------------


def _detect(first: tuple[int, Any], file: str) -> str:
    """The format of a list of records, from the keys of the first one."""
    line, record = first
    if not isinstance(record, dict):
        raise input_error(f"expected a JSON object, got {_json_type(record)}", file, line)
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "output" in record:
        return "alpaca"
    raise input_error(
        f"cannot detect the format from the keys {sorted(record)}: expected instruction/output (alpaca), "
        "prompt/completion (prompt-completion) or messages (messages); or pass the format",
        file,
        line,
    )


def _alpaca(record: dict, where: _Where, instruction: str | None, example_id: str) -> Example:
    return Example(
        instruction=instruction if instruction is not None else _string(record, "instruction", where),
        input=_string(record, "input", where, default=""),
        output=_string(record, "output", where),
        id=example_id,
    )


def _prompt_completion(record: dict, where: _Where, instruction: str | None, example_id: str) -> Example:
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, list):
        prompt_messages = _chat(record, "prompt", where)
        answer = _chat(record, "completion", where)
        if len(answer) != 1 or answer[0]["role"] != "assistant":
            raise where.error("completion", f"expected one assistant message, got roles {[m['role'] for m in answer]}")
        return _conversation(prompt_messages, answer[0]["content"], where, instruction, example_id)
    if isinstance(completion, list):
        raise where.error("completion", "expected a string like `prompt`, got a list of messages")
    prompt = _string(record, "prompt", where)
    return Example(
        # With an instruction given, the prompt is the instance rather than being lost.
        instruction=instruction if instruction is not None else prompt,
        input=prompt if instruction is not None else "",
        output=_string(record, "completion", where),
        id=example_id,
    )


def _messages(record: dict, where: _Where, instruction: str | None, example_id: str) -> Example:
    messages = _chat(record, "messages", where)
    last = len(messages) - 1
    if messages[last]["role"] != "assistant":
        message = f"the last message must be the assistant's answer, got {messages[last]['role']!r}"
        raise where.error(f"messages[{last}].role", message)
    return _conversation(messages[:last], messages[last]["content"], where, instruction, example_id)


def _chat(record: dict, key: str, where: _Where) -> list[dict]:
    """``record[key]`` as a non-empty list of ``{role, content}`` messages with string contents."""
    messages = record.get(key)
    if not isinstance(messages, list) or not messages:
        if key not in record:
            raise where.error(key, "missing required field")
        raise where.error(key, f"expected a non-empty list of {{role, content}} messages, got {_json_type(messages)}")
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise where.error(f"{key}[{k}]", f"expected an object with role and content, got {_json_type(message)}")
        _string(message, "role", where.inside(f"{key}[{k}]"))
        _string(message, "content", where.inside(f"{key}[{k}]"))
    return messages


def _conversation(prompt: list[dict], answer: str, where: _Where, instruction: str | None, example_id: str) -> Example:
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


def _task_instruction(source: _Source) -> str:
    """A BIG-bench task's instruction: ``task_prefix``, or ``description`` for tasks without one."""
    for key in ("task_prefix", "description"):
        value = source.task.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise input_error(f"expected a string, got {_json_type(value)}", source.file, source.task_lines[key], key)
        if value.strip():
            return value.strip()
    raise input_error("missing (and no description): pass the task's instruction", source.file, 1, "task_prefix")


def _bigbench(record: dict, where: _Where, instruction: str | None, example_id: str) -> Example:
    if "input" not in record:
        raise where.error("input", "missing required field")
    # A blank input is allowed: over a thousand real BIG-bench examples (e.g. multiemo) have one.
    input_text = _string(record, "input", where, default="")
    if "target" in record or "target_scores" not in record:
        references = _targets(record, where)
    else:
        references = _best_scored(record, where)
    return Example(instruction, input_text, references[0], references, example_id)


def _targets(record: dict, where: _Where) -> tuple[str, ...]:
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
            raise where.error(field, f"expected a string, got {_json_type(value)}")
        if not value.strip():
            raise where.error(field, "is empty")
    return tuple(value.strip() for value in targets)


def _best_scored(record: dict, where: _Where) -> tuple[str, ...]:
    """``target_scores`` (answer -> score): the answers with the highest score."""
    scores = record["target_scores"]
    if not isinstance(scores, dict) or not scores:
        raise where.error("target_scores", f"expected a non-empty object of answer: score, got {_json_type(scores)}")
    for answer, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise where.error(f"target_scores[{answer!r}]", f"expected a number, got {_json_type(score)}")
    best = max(scores.values())
    return tuple(answer.strip() for answer, score in scores.items() if score == best)


_PARSERS: dict[str, Callable[[dict, _Where, str | None, str], Example]] = {
    "alpaca": _alpaca,
    "prompt-completion": _prompt_completion,
    "messages": _messages,
    "bigbench": _bigbench,
}
