"""One exception type for bad input, printed by the CLI as a single line."""

from __future__ import annotations


class LciaError(Exception):
    """Bad input or a bad request: the CLI prints ``str(err)`` on one line and exits non-zero.

    Build it with :func:`input_error` so that every message names where the problem is.
    """


def input_error(message: str, file: str | None = None, line: int | None = None, field: str | None = None) -> LciaError:
    """``file:line: field: message`` with whichever parts are known."""
    where = ""
    if file is not None:
        where = str(file) + (f":{line}" if line is not None else "") + ": "
    if field:
        where += f"{field}: "
    return LciaError(where + message)


class Interrupted(LciaError):
    """SIGINT or SIGTERM arrived: the run saved a checkpoint and stopped; ``lcia run --resume`` continues it."""
