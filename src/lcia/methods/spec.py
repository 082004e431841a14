"""A method named on the command line: ``name`` or ``name:key=value,...``, several joined by commas."""

from __future__ import annotations

from lcia.config import parse_value
from lcia.errors import LciaError


def split_methods(text: str) -> list[str]:
    """``"seq-lora,ewc:lam=1e5,gamma=0.9,lwf"`` -> ``["seq-lora", "ewc:lam=1e5,gamma=0.9", "lwf"]``.

    A piece with ``=`` and no ``:`` is one more parameter of the method before it (names never hold ``=``).
    """
    methods: list[str] = []
    for piece in (p.strip() for p in text.split(",") if p.strip()):
        if "=" in piece and ":" not in piece:
            if not methods or ":" not in methods[-1]:
                raise LciaError(f"--methods {text!r}: {piece!r} is a parameter with no method before it")
            methods[-1] += "," + piece
        else:
            methods.append(piece)
    if not methods:
        raise LciaError("--methods names no method")
    return methods


def parse_method(spec: str) -> tuple[str, dict]:
    """``"ewc:lam=1e5,gamma=0.9"`` -> ``("ewc", {"lam": 100000.0, "gamma": 0.9})``."""
    name, _, params = spec.partition(":")
    pairs = [p for p in params.split(",") if p]
    if any("=" not in p for p in pairs):
        raise LciaError(f"method {spec!r}: parameters are key=value pairs, e.g. ewc:lam=1e5,gamma=0.9")
    return name.strip(), {k.strip(): parse_value(v) for k, v in (p.split("=", 1) for p in pairs)}
