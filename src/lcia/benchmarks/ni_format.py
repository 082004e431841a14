"""What the Long-Sequence and SuperNI readers share: the files of O-LoRA's and SAPT's ``CL_Benchmark`` folders,
read and checked, and the examples built from their prompts.

Two file formats lie there:

* the Natural-Instructions task format (SAPT's ``Long_Sequence/<task>/`` and ``SuperNI/<task>/``): one JSON
  object with ``Definition`` (a list whose first string is the task's instruction, or a string; SAPT's
  Long-Sequence COPA has an empty list) and ``Instances``, a list of ``{input, output}`` where ``output`` is a
  string or a list of accepted strings;
* O-LoRA's records (``<Category>/<task>/``): a JSON array of ``{sentence, label}`` beside ``labels.json``, the
  list of the task's labels that its prompt offers as options.

The model sees the prompt the benchmark's own data loader (``cl_dataset.py``, ``uie_dataset_lora.py``) builds,
verbatim, as one user turn (``Example.messages``); ``Example.instruction`` is its task-level part (what
grouping compares) and ``Example.input`` the instance. The answer prefix the prompt ends in goes to
``Example.meta["answer_prefix"]`` for :mod:`lcia.scorers.ni_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lcia.data.json_records import Where, json_type, load, string
from lcia.data.schema import Example
from lcia.errors import input_error

SPLIT_FILES = {"train": "train.json", "test": "test.json"}  # dev.json is a copy of test.json in both repos


@dataclass(frozen=True)
class Instance:
    input: str
    outputs: tuple[str, ...]  # every accepted answer; the first is the training target


@dataclass(frozen=True)
class NiTask:
    definition: str  # Definition[0] stripped ("" when the list is empty)
    category: str | None  # the first of ``Categories``, when the file names one
    instances: list[Instance]


def task_folder(root: Path, relative: str, task: str) -> Path:
    """``root / relative``, which must be a folder (one line naming it otherwise)."""
    folder = root / relative
    if not folder.is_dir():
        raise input_error(f"missing task folder of {task!r}", file=folder)
    return folder


def split_file(folder: Path, split: str) -> Path:
    """The file of ``split`` (train or test) in a task folder, which must be there."""
    path = folder / SPLIT_FILES[split]
    if not path.is_file():
        raise input_error(f"missing {split} file", file=path)
    return path


def read_ni_task(path: Path) -> NiTask:
    """A Natural-Instructions task file, checked: ``Definition`` and every instance's ``input`` and ``output``."""
    file = str(path)
    source = load(file)
    line, task = source.records[0]
    if source.task is not None or len(source.records) != 1 or not isinstance(task, dict):
        raise input_error("expected one JSON object with Definition and Instances", file, line)
    instances = task.get("Instances")
    if not isinstance(instances, list) or not instances:
        raise input_error(_wrong(task, "Instances", "a non-empty list"), file, line, "Instances")
    definition = _definition(task, file, line)
    return NiTask(definition, _category(task), [_instance(v, file, k) for k, v in enumerate(instances)])


def _wrong(task: dict, key: str, expected: str) -> str:
    if key not in task:
        return "missing required field"
    return f"expected {expected}, got {json_type(task[key])}"


def _definition(task: dict, file: str, line: int) -> str:
    value = task.get("Definition")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value[0].strip() if value else ""
    if isinstance(value, str):
        return value.strip()
    raise input_error(_wrong(task, "Definition", "a list of strings"), file, line, "Definition")


def _category(task: dict) -> str | None:
    value = task.get("Categories")
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, str) and value.strip() else None


def _instance(record, file: str, k: int) -> Instance:
    where = Where(file, None, f"Instances[{k}].")
    if not isinstance(record, dict):
        raise where.error(None, f"expected an object with input and output, got {json_type(record)}")
    for key in ("input", "output"):
        if key not in record:
            raise where.error(key, "missing required field")
    output = record["output"]
    outputs = output if isinstance(output, list) else [output]
    if not outputs or not all(isinstance(o, str) for o in outputs):
        raise where.error("output", f"expected a string or a non-empty list of strings, got {json_type(output)}")
    return Instance(string(record, "input", where, default=""), tuple(outputs))


def read_records(path: Path) -> list[tuple[Where, dict]]:
    """O-LoRA's JSON array of records, each a JSON object (with where it starts, for errors)."""
    records = []
    for index, (line, record) in enumerate(load(str(path)).records):
        where = Where(str(path), line, f"[{index}].")
        if not isinstance(record, dict):
            raise where.error(None, f"expected a JSON object, got {json_type(record)}")
        records.append((where, record))
    return records


def read_labels(path: Path) -> list[str]:
    """O-LoRA's ``labels.json``: a non-empty JSON list of strings."""
    labels = []
    for line, label in load(str(path)).records:
        if not isinstance(label, str):
            raise input_error(f"expected a label string, got {json_type(label)}", str(path), line)
        labels.append(label)
    return labels


def prompt_example(
    instruction: str, head: str, text: str, tail: str, answers: tuple[str, ...], example_id: str, prefix: str
) -> Example:
    """The example whose prompt is ``head + text + tail`` verbatim, as one user turn."""
    return Example(
        instruction=instruction,
        input=text,
        output=answers[0],
        references=answers,
        id=example_id,
        messages=({"role": "user", "content": head + text + tail},),
        meta={"answer_prefix": prefix},
    )
