"""Files written so that a crash or a full disk never leaves half of one behind, and read with clear errors."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from lcia.errors import LciaError, input_error

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class DiskFull(LciaError):
    """The disk filled up while lcia wrote a file: what was there before is intact."""


def disk_full(path: Path | str, kept: str = "its previous version is intact") -> DiskFull:
    return DiskFull(f"{path}: no space left on device; {kept}")


def replace_atomic(path: Path, write: Callable[[str], None]) -> None:
    """``write(temporary path)`` to a temporary sibling, then rename: a crash never leaves half a file behind.

    A full disk leaves the old file as it was, removes the temporary one and raises :class:`DiskFull`.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path) from None
        raise


def write_atomic(path: Path, text: str) -> None:
    replace_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    """A JSON file's content; a missing or invalid file is a one-line error naming it (and the line)."""
    if not path.exists():
        raise input_error("file not found", file=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise input_error(f"invalid JSON: {err.msg}", file=path, line=err.lineno) from None


def refuse_pickles(folder: Path) -> None:
    """lcia loads weights and state from safetensors only: a pickled file in ``folder`` is refused."""
    for path in sorted(folder.iterdir()):
        if path.suffix in PICKLE_SUFFIXES:
            raise input_error("pickled file refused: lcia loads weights and state from safetensors only", file=path)
