"""YAML files whose validation errors name the line: ``file:line: field: message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lcia.errors import LciaError, input_error


class YamlFile:
    """A parsed YAML document that remembers where each value sits."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise input_error("file not found", file=self.path) from None
        except UnicodeDecodeError as err:
            line = self.path.read_bytes()[: err.start].count(b"\n") + 1
            raise input_error("not UTF-8 text", file=self.path, line=line) from None
        try:
            self.node = yaml.compose(text)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            problem = getattr(err, "problem", None) or str(err)
            raise input_error(
                f"invalid YAML: {problem}", file=self.path, line=mark.line + 1 if mark else None
            ) from None

    def line_of(self, loc: tuple) -> int | None:
        """1-based line of the value at ``loc`` (keys and list indices), or of its nearest parent."""
        node, line = self.node, (self.node.start_mark.line + 1 if self.node else None)
        for key in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == str(key):
                        child, line = v, k.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                child = node.value[key]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line


class NestedError(ValueError):
    """A validator's error about a value inside the one it validates (e.g. a key of ``method.params``): ``loc``
    locates it there, so the one-line error names its field and line."""

    def __init__(self, message: str, loc: tuple):
        super().__init__(message)
        self.loc = loc

    @classmethod
    def first_of(cls, err: ValidationError) -> NestedError:
        first = err.errors()[0]
        return cls(first["msg"].removeprefix("Value error, "), tuple(first["loc"]))


def field_name(loc: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(loc))


def validation_error(
    err: ValidationError,
    source: YamlFile | None,
    prefix: tuple = (),
    overridden: set[tuple] = frozenset(),
    name: tuple | None = None,
) -> LciaError:
    """Turn pydantic's first error into one line naming the file, line and field.

    ``prefix`` locates the validated value in the file; ``name`` (default: ``prefix``) is how it is called.
    """
    first = err.errors()[0]
    nested = first.get("ctx", {}).get("error")
    inner = tuple(first["loc"]) + (nested.loc if isinstance(nested, NestedError) else ())
    inner = tuple(k for k in inner if not (isinstance(k, str) and "[" in k))  # drop union tags
    loc = prefix + inner
    field = field_name((prefix if name is None else name) + inner)
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    message = first["msg"].removeprefix("Value error, ") + more
    if any(loc[: len(o)] == o or o[: len(loc)] == loc for o in overridden):
        return input_error(message, file="--set", field=field)
    if source is None:
        return input_error(message, field=field)
    return input_error(message, file=source.path, line=source.line_of(loc), field=field)


def validate(
    model: type[BaseModel], data: Any, source: YamlFile | None, prefix: tuple = (), overridden=frozenset(), name=None
):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, source, prefix, overridden, name) from None
