"""Continual-learning methods, one file each, found by the name they register (``@register("name")``).

Every module of this package is imported here, so a new method file needs no edit anywhere else; a method
in another installed package is found through its ``lcia.methods`` entry point (``module:Class``).
"""

import importlib
import pkgutil
from importlib.metadata import entry_points

from lcia.methods.base import (
    METHODS,
    Capabilities,
    Method,
    MethodParams,
    Route,
    TrainContext,
    build_method,
    method_class,
    register,
)

DEFAULT_METHOD = "seq-lora"  # the demo's: the usual baseline


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    for entry in entry_points(group="lcia.methods"):
        entry.load()


_discover()

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Capabilities",
    "Method",
    "MethodParams",
    "Route",
    "TrainContext",
    "build_method",
    "method_class",
    "register",
]
