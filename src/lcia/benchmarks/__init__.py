"""The field's benchmarks, read from the user's copy unconverted: one reader file per benchmark, found by the
stream name it registers (``@register_benchmark("coin")``). Every module of this package is imported here, so
a new reader needs no edit anywhere else. :mod:`lcia.benchmarks.base` says what a reader is; the docs page of
each benchmark is ``docs/benchmarks/<name>.md``.
"""

import importlib
import pkgutil

from lcia.benchmarks.base import BENCHMARKS, Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.benchmarks.load import benchmark_class, check_settings, load_benchmark

_INFRASTRUCTURE = {"base", "load"}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{module.name}")


_discover()

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkParams",
    "BenchmarkTask",
    "benchmark_class",
    "check_settings",
    "load_benchmark",
    "register_benchmark",
]
