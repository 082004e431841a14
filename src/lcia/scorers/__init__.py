"""Scorers, found by the name they register: one file per scorer or per benchmark's family of scorers.

``basic`` holds the built-in streams' scorers (exact, mc, numeric, rougeL, vqa, contains); every other file
ports one benchmark's own evaluation code and says which file and commit it follows. Every module of this
package is imported here, so a new scorer file needs no edit anywhere else. :mod:`lcia.scorers.base` says
what a scorer is.
"""

import importlib
import pkgutil

from lcia.scorers.base import SCORERS, Scored, TaskScorer, get_scorer, per_example, register_scorer


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_discover()

__all__ = ["SCORERS", "Scored", "TaskScorer", "get_scorer", "per_example", "register_scorer"]
