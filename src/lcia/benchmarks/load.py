"""A benchmark stream's tasks: the config's settings checked, then every task read, capped and ordered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lcia.benchmarks.base import BENCHMARKS, Benchmark, BenchmarkParams
from lcia.data.tasks import Task, sample_in_order
from lcia.errors import input_error
from lcia.yamlfile import NestedError


def benchmark_class(name: str) -> type[Benchmark]:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(sorted(BENCHMARKS))})") from None


def check_settings(
    name: str, variant: str | None, order: str | None, tasks: list[str] | None, params: dict[str, Any]
) -> tuple[str, str, BenchmarkParams]:
    """The variant and order a run uses (defaults filled in) and its parameters; a ``NestedError`` locating the
    setting that is wrong. Reads nothing from disk."""
    cls = benchmark_class(name)
    variant = variant or cls.variants[0]
    if variant not in cls.variants:
        raise NestedError(f"{name} has no variant {variant!r} (variants: {', '.join(cls.variants)})", ("variant",))
    order = order or next(iter(cls.orders))
    if order not in cls.orders:
        raise NestedError(f"{name} has no order {order!r} (orders: {', '.join(cls.orders)})", ("order",))
    for k, task in enumerate(tasks or []):
        if task not in cls.orders[order]:
            known = ", ".join(cls.orders[order])
            raise NestedError(f"{name} order {order!r} has no task {task!r} (tasks: {known})", ("tasks", k))
    try:
        return variant, order, cls.Params.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        raise NestedError(first["msg"], ("params", *first["loc"])) from None


def load_benchmark(
    name: str,
    root: str,
    settings: dict[str, Any],
    test_size: int | None,
    train_size: int | None,
    split_seed: int,
) -> list[Task]:
    """Every task of benchmark ``name`` under ``root`` in its order (``settings``: variant, order, tasks and
    params, as the config's ``benchmark`` section gives them), read and checked before any model loads."""
    variant, order, params = check_settings(
        name, settings.get("variant"), settings.get("order"), settings.get("tasks"), settings.get("params") or {}
    )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise input_error(f"no {name} benchmark folder here", file=folder, field="benchmark.root")
    reader = BENCHMARKS[name](folder, variant, params)
    chosen = settings.get("tasks")
    tasks = []
    for task_name in BENCHMARKS[name].orders[order]:
        if chosen is not None and task_name not in chosen:
            continue
        found = reader.read_task(task_name)
        seed = f"{split_seed}/{task_name}"
        train = sample_in_order(found.train, train_size, seed + "/train")
        test = sample_in_order(found.test, test_size, seed + "/test")
        if not train or not test:
            empty = "train" if not train else "test"
            raise input_error(f"task {task_name!r} has no {empty} examples", file=folder, field="benchmark")
        tasks.append(Task(task_name, train, test, found.scorer, found.max_new_tokens, found.family, found.epochs))
    return tasks
