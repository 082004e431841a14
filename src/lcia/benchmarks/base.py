"""What a field benchmark is to lcia, and the registry that finds one by name.

A benchmark (CoIN, UCIT, TRACE, ...) is read from the user's copy exactly as it lies on disk: its reader
knows the benchmark's folders, file formats, variants, published task orders and the scorer of each task,
and converts nothing. A reader is one file of ``lcia.benchmarks`` with one subclass of :class:`Benchmark`
registered under the stream name a config gives::

    stream: coin
    benchmark:
      root: /data/CoIN
      variant: original        # the benchmark's variants; default its first
      order: default           # one of its published task orders; default its first
      tasks: [ScienceQA, GQA]  # a subset, trained in the order's sequence (default: all)
      params: {}               # the reader's own switches (its ``Params``)

Every task is read and checked before any model loads: a missing folder or field stops the run with one
line naming the path (and the record and field). ``data.test_size`` and ``data.train_size`` cap each task
for quick runs by a seeded sample (in the files' order); ``data.test_size: null`` keeps whole test sets, as
the papers score them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from lcia.data.schema import Example


class BenchmarkParams(BaseModel):
    """A reader's own switches, each a documented field (a subclass adds them)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class BenchmarkTask:
    """One task as its reader found it: every training and test example, how its answers are scored."""

    name: str
    train: list[Example]
    test: list[Example]
    scorer: str
    max_new_tokens: int = 16
    family: str | None = None  # tasks sharing an instruction family (what grouping should find)
    epochs: float | None = None  # the passes the benchmark's own scripts train it for, when they differ by task


class Benchmark:
    """A benchmark's reader. Subclasses set the class attributes and implement :meth:`read_task`."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]  # every task, by the name the benchmark gives its folder or files
    orders: ClassVar[dict[str, tuple[str, ...]]]  # the papers' task orders (each a permutation of a subset)
    variants: ClassVar[tuple[str, ...]] = ("default",)  # the first is the default
    Params: ClassVar[type[BenchmarkParams]] = BenchmarkParams

    def __init__(self, root: Path, variant: str, params: BenchmarkParams):
        self.root, self.variant, self.params = root, variant, params

    def read_task(self, name: str) -> BenchmarkTask:
        """Every example of task ``name``, checked; an ``LciaError`` naming the path and field if the layout
        is not the benchmark's."""
        raise NotImplementedError


BENCHMARKS: dict[str, type[Benchmark]] = {}


def register_benchmark(name: str):
    """Class decorator: the reader of the benchmark a config names as ``stream: <name>``."""

    def add(cls: type[Benchmark]) -> type[Benchmark]:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        cls.name = name
        BENCHMARKS[name] = cls
        return cls

    return add
