"""A data file's JSON records, each with the 1-based line where it starts, and errors that name that line.

A file is a JSON array of records, JSON Lines (one record per line), or one object: a BIG-bench task (its
``examples`` are the records) or a single record. ``json.loads`` gives values but not where they are, so
the line of each record is tracked here: every error then reads ``file:line: field: message``, a place a
user can jump to. Errors of the whole file (missing, unreadable, not UTF-8, malformed JSON, empty) are
raised by :func:`load`; :class:`Where` and the field readers build those of a record's fields for the
formats of :mod:`lcia.data.readers`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcia.errors import LciaError, input_error

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's insignificant whitespace
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}


# --- Loading raw records -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A file's raw records, each with the 1-based line where it starts.

    For a BIG-bench task, ``records`` are its examples, ``task`` the whole top-level object and
    ``task_lines`` the line of each of its keys.
    """

    file: str
    records: list[tuple[int, Any]]
    task: dict | None = None
    task_lines: dict[str, int] | None = None


def load(file: str) -> Source:
    """Read a JSON Lines file, a JSON array of records, or one JSON object (a BIG-bench task or a record)."""
    text = _read_text(file)
    if Path(file).suffix.lower() in _JSONL_SUFFIXES:
        return Source(file, _jsonl_records(text, file))
    start = _WHITESPACE.match(text).end()
    try:
        if text.startswith("[", start):
            items, end = _array_items(text, start)
            _expect_end(text, end)
            lines = _lines_at(text, [offset for offset, _ in items])
            return Source(file, _non_empty([(line, value) for line, (_, value) in zip(lines, items)], file))
        if text.startswith("{", start):
            obj, key_starts, example_starts, end = _object_members(text, start)
            if _WHITESPACE.match(text, end).end() < len(text):
                # More values after the first object: JSON Lines under a .json name.
                return Source(file, _jsonl_records(text, file))
            if "examples" not in obj:
                return Source(file, [(_line_at(text, start), obj)])
            if not isinstance(obj["examples"], list):
                line = _line_at(text, key_starts["examples"])
                raise input_error(f"expected a list, got {json_type(obj['examples'])}", file, line, "examples")
            task_lines = {key: _line_at(text, offset) for key, offset in key_starts.items()}
            records = list(zip(_lines_at(text, example_starts), obj["examples"]))
            if not records:
                raise input_error("the task has no examples", file, task_lines["examples"], "examples")
            return Source(file, records, obj, task_lines)
    except json.JSONDecodeError as err:
        raise input_error(f"malformed JSON: {err.msg} (column {err.colno})", file, err.lineno) from None
    return Source(file, _jsonl_records(text, file))


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
class Where:
    """Where a record is, to build errors: ``prefix`` nests field names (``examples[3].``, ``messages[1].``)."""

    file: str
    line: int
    prefix: str = ""

    def error(self, field: str | None, message: str) -> LciaError:
        name = self.prefix + field if field else self.prefix.rstrip(".")
        return input_error(message, self.file, self.line, name or None)

    def inside(self, field: str) -> Where:
        return Where(self.file, self.line, f"{self.prefix}{field}.")


def string(record: dict, key: str, where: Where, default: str | None = None) -> str:
    """``record[key]`` as a string. Without a default the field is required and must not be blank."""
    value = record.get(key)
    if value is None:
        if default is not None:
            return default
        raise where.error(key, "missing required field" if key not in record else "expected a string, got null")
    if not isinstance(value, str):
        raise where.error(key, f"expected a string, got {json_type(value)}")
    if default is None and not value.strip():
        raise where.error(key, "is empty")
    return value


def record_id(record: dict, where: Where, default: str) -> str:
    value = record.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error("id", f"expected a string or an integer, got {json_type(value)}")
    return str(value)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as a user who wrote the file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
