"""Streams of tasks: the built-in benchmarks and a user's own stream file.

A stream file is YAML: a list of tasks (or ``tasks:`` holding one), each either the name of a
built-in task or a mapping (``TaskSpec``) that points at files in any format ``read_examples`` reads:

    tasks:
      - add2                        # built-in task
      - name: my-task
        train: data/train.jsonl     # paths are relative to the stream file
        test: data/test.jsonl       # optional: otherwise a seeded split of train
        scorer: exact
        max_new_tokens: 8
      - name: my-vqa
        train: vqa/train.json       # LLaVA conversations (format: llava)
        image_folder: vqa/images    # image paths are relative to it (default: the data file's folder)
        scorer: vqa
      - name: my-hf-task
        train: data/my-dataset      # a datasets save_to_disk folder; or .parquet, .arrow, .csv

Built-in tasks read BIG-bench's task files, kept in ``lcia/data/bigbench_tasks`` (the package registry no longer
serves the ``bigbench`` package that shipped them; that folder's README says which files and why), and the image
tasks of ``coin-mini`` the installed easy-VQA, BIG-bench's CIFAR-10 (from the same folder) and scikit-learn's digits
(``lcia.data.coin``). Why each was chosen, with its measured zero-shot and trained scores, is in
docs/streams.md.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from lcia.data.coin import IMAGE_TASKS, image_task
from lcia.data.paraphrases import DIVERSE
from lcia.data.readers import read_examples
from lcia.data.schema import Example
from lcia.data.tasks import Task, split_examples
from lcia.errors import input_error
from lcia.scorers import SCORERS
from lcia.yamlfile import YamlFile, validate


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    train: str | None = None  # data file or save_to_disk folder (all examples when there is no ``test``)
    test: str | None = None
    bigbench: str | None = None  # a task.json under lcia/data/bigbench_tasks (those the built-in tasks read)
    images: str | None = None  # a packaged image task (lcia.data.coin.IMAGE_TASKS), e.g. "easy-vqa/shape"
    image_folder: str | None = None  # where a data file's image paths are relative to (default: its folder)
    format: Literal["auto", "alpaca", "prompt-completion", "messages", "llava", "bigbench"] = "auto"
    instruction: str | None = None  # overrides the file's instructions
    instructions: list[str] | None = None  # paraphrases, cycled over train and test examples (overrides the file's)
    test_instructions: list[str] | None = None  # paraphrases seen only by test examples (with ``instructions``)
    short_instruction: bool = False  # Natural-Instructions: only the "Prompt:" sentence of task_prefix
    input_template: str | None = None  # e.g. "Question: {input}": wraps every example's input
    scorer: str = "exact"
    max_new_tokens: PositiveInt = 16
    test_size: PositiveInt | None = None  # default: data.test_size
    train_size: PositiveInt | None = None  # default: data.train_size
    balance: bool = False  # test set balanced over answer labels
    family: str | None = None

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, value: str) -> str:
        if value not in SCORERS:
            raise ValueError(f"unknown scorer {value!r} (known: {', '.join(sorted(SCORERS))})")
        return value

    @field_validator("images")
    @classmethod
    def _known_image_task(cls, value: str | None) -> str | None:
        if value is not None and value not in IMAGE_TASKS:
            raise ValueError(f"unknown image task {value!r} (known: {', '.join(IMAGE_TASKS)})")
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if [self.train, self.bigbench, self.images].count(None) != 2:
            raise ValueError(
                "give exactly one of 'train' (a data file), 'bigbench' (a packaged task) "
                "or 'images' (a packaged image task)"
            )
        if self.test is not None and self.train is None:
            raise ValueError("'test' needs 'train'")
        if self.image_folder is not None and self.train is None:
            raise ValueError("'image_folder' needs 'train' (a data file whose image paths it resolves)")
        if self.instructions is not None and (self.instruction is not None or not self.instructions):
            raise ValueError("give either 'instruction' or a non-empty list of 'instructions', not both")
        if self.test_instructions and not self.instructions:
            raise ValueError("'test_instructions' needs 'instructions'")
        return self


ARITHMETIC = "Solve the arithmetic problem. Answer with the number only."
WORD_FORMS = "Complete the sentence with the right form of the word."  # shared by the word-forms family
SPAN = "Answer with a word or short phrase taken from the given text."  # shared by the QASC family
NI = "natural_instructions/"

BUILTIN_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            name="add2",
            bigbench="arithmetic/2_digit_addition/task.json",
            instruction=ARITHMETIC,
            scorer="numeric",
            max_new_tokens=6,
            family="add2",
        ),
        TaskSpec(
            name="sub2",
            bigbench="arithmetic/2_digit_subtraction/task.json",
            instruction=ARITHMETIC,
            scorer="numeric",
            max_new_tokens=6,
            family="add2",
        ),
        # BIG-bench's own sentence frames make the input say which form is asked for.
        TaskSpec(
            name="plural",
            bigbench="linguistic_mappings/plural_regular_json/task.json",
            instruction=WORD_FORMS,
            input_template="This is a {input}. Now there is another one. There are two",
            scorer="exact",
            max_new_tokens=8,
            family="word-forms",
        ),
        TaskSpec(
            name="past-tense",
            bigbench="linguistic_mappings/past_tense_regular_json/task.json",
            instruction=WORD_FORMS,
            input_template="Today I {input}. Yesterday I",
            scorer="exact",
            max_new_tokens=8,
            family="word-forms",
        ),
        TaskSpec(
            name="qasc-overlap",
            bigbench=NI + "subtask039_qasc_find_overlapping_words/task.json",
            instruction=SPAN,
            scorer="exact",
            max_new_tokens=6,
            family="qasc",
        ),
        TaskSpec(
            name="qasc-answer",
            bigbench=NI + "subtask041_qasc_answer_generation/task.json",
            instruction=SPAN,
            scorer="exact",
            max_new_tokens=8,
            family="qasc",
        ),
        TaskSpec(
            name="intent", bigbench="intent_recognition/task.json", scorer="exact", max_new_tokens=8, family="intent"
        ),
        TaskSpec(
            name="sentiment",
            bigbench="multiemo/reviews_sentence_en/task.json",
            scorer="exact",
            max_new_tokens=4,
            balance=True,
            family="sentiment",
        ),
        TaskSpec(
            name="parentheses",
            bigbench="cs_algorithms/valid_parentheses/task.json",
            scorer="exact",
            max_new_tokens=4,
            balance=True,
            family="parentheses",
        ),
        # coin-mini (lcia.data.coin): one-word answers about an image, each test set label-balanced.
        *[
            TaskSpec(
                name=name, images=f"easy-vqa/{name}", scorer="vqa", max_new_tokens=4, balance=True, family="easy-vqa"
            )
            for name in ("shape", "colour", "yes-no")
        ],
        TaskSpec(name="cifar10", images="cifar10", scorer="vqa", max_new_tokens=4, balance=True, family="cifar10"),
        TaskSpec(name="digits", images="digits", scorer="vqa", max_new_tokens=4, balance=True, family="digits"),
    ]
}

BUILTIN_STREAMS: dict[str, list[str]] = {
    # The demo: each task is learned in 40 steps, and each later one overwrites part of the earlier ones.
    "ni-cit-small": ["add2", "plural", "intent"],
    # Two instruction families (word-forms, qasc: one shared instruction each) among tasks unlike any other.
    "ni-cit": ["add2", "plural", "intent", "qasc-overlap", "past-tense", "parentheses", "qasc-answer", "sentiment"],
}
# The same tasks, each with several paraphrased instructions (lcia.data.paraphrases).
BUILTIN_STREAMS["ni-cit-diverse"] = BUILTIN_STREAMS["ni-cit"]
# Multimodal, in the spirit of CoIN: the easy-vqa family (shape, colour, yes-no: one shared instruction)
# interleaved with two classification tasks unlike it.
BUILTIN_STREAMS["coin-mini"] = ["shape", "cifar10", "colour", "digits", "yes-no"]
DIVERSE_STREAMS = {"ni-cit-diverse"}


def bigbench_dir() -> Path:
    """BIG-bench's task files that the built-in tasks read, as the ``bigbench`` package shipped them."""
    return Path(__file__).parent / "bigbench_tasks"


def _prompt_sentence(instruction: str) -> str:
    match = re.search(r"Prompt:\s*(.+)$", instruction, re.S)
    return match.group(1).strip() if match else instruction


def _cycle_instructions(examples: list[Example], instructions: list[str]) -> list[Example]:
    """Example i takes paraphrase i mod k: each paraphrase gets an equal share, deterministically."""
    return [replace(ex, instruction=instructions[i % len(instructions)]) for i, ex in enumerate(examples)]


def _templated(examples: list[Example], template: str) -> list[Example]:
    return [replace(ex, input=template.format(input=ex.input)) for ex in examples]


def _read(spec: TaskSpec, base_dir: Path) -> tuple[list[Example], list[Example] | None]:
    """A task's examples, and its own test examples when it has them (None: split the examples)."""
    if spec.bigbench is not None:
        return read_examples(bigbench_dir() / spec.bigbench, "bigbench", spec.instruction), None
    if spec.images is not None:
        pools = image_task(spec.images, spec.instruction)
        return pools.train, pools.test
    image_folder = base_dir / spec.image_folder if spec.image_folder is not None else None
    examples = read_examples(base_dir / spec.train, spec.format, spec.instruction, image_folder)
    if spec.test is None:
        return examples, None
    return examples, read_examples(base_dir / spec.test, spec.format, spec.instruction, image_folder)


def load_task(spec: TaskSpec, base_dir: Path, test_size: int | None, train_size: int | None, split_seed: int) -> Task:
    """Read a task's files and split them (deterministically, seeded by ``split_seed`` and the name)."""
    examples, test = _read(spec, base_dir)
    if spec.short_instruction:
        examples = [replace(ex, instruction=_prompt_sentence(ex.instruction)) for ex in examples]
    if spec.input_template:
        examples = _templated(examples, spec.input_template)
        test = _templated(test, spec.input_template) if test is not None else None
    test_size, train_size = spec.test_size or test_size, spec.train_size or train_size
    seed = f"{split_seed}/{spec.name}"
    if spec.test is not None:
        train = examples[:train_size] if train_size else examples
        test = test[:test_size]
    elif test is not None:
        # A packaged image task's own test examples: both sets shuffled (and balanced) as a split would be.
        train = split_examples(examples, 0, train_size, seed, spec.balance)[0]
        test = split_examples(test, test_size, 0, seed, spec.balance)[1]
    else:
        if test_size is None:
            raise input_error("has no test set of its own: give data.test_size to split one", field=spec.name)
        if len(examples) < 2:
            raise input_error("needs at least 2 examples to split into train and test", file=base_dir / spec.train)
        train, test = split_examples(examples, min(test_size, len(examples) // 2), train_size, seed, spec.balance)
    if spec.instructions:
        train = _cycle_instructions(train, spec.instructions)
        test = _cycle_instructions(test, spec.instructions + (spec.test_instructions or []))
    return Task(
        name=spec.name,
        train=train,
        test=test,
        scorer=spec.scorer,
        max_new_tokens=spec.max_new_tokens,
        family=spec.family,
    )


def stream_specs(stream: str) -> tuple[list[TaskSpec], Path]:
    """The task specs of a built-in stream name or a stream YAML file, and the folder paths are relative to."""
    if stream in DIVERSE_STREAMS:
        specs = [
            BUILTIN_TASKS[name].model_copy(
                update={"instruction": None, "instructions": DIVERSE[name][0], "test_instructions": DIVERSE[name][1]}
            )
            for name in BUILTIN_STREAMS[stream]
        ]
        return specs, Path.cwd()
    if stream in BUILTIN_STREAMS:
        return [BUILTIN_TASKS[name] for name in BUILTIN_STREAMS[stream]], Path.cwd()
    if not stream.endswith((".yaml", ".yml")):
        raise input_error(
            f"unknown stream {stream!r}: a built-in ({', '.join(BUILTIN_STREAMS)}) or a .yaml file", field="stream"
        )
    source = YamlFile(stream)
    nested = isinstance(source.data, dict)
    entries = source.data.get("tasks") if nested else source.data
    if nested and set(source.data) != {"tasks"}:
        extra = sorted(set(source.data) - {"tasks"})
        raise input_error(
            "unknown key (a stream file holds 'tasks')",
            file=source.path,
            line=source.line_of((extra[0],)) if extra else 1,
            field=extra[0] if extra else "tasks",
        )
    if not isinstance(entries, list) or not entries:
        raise input_error("a stream is a non-empty list of tasks", file=source.path, line=1, field="tasks")
    specs, names = [], set()
    for index, entry in enumerate(entries):
        loc = ("tasks", index) if nested else (index,)
        where = dict(file=source.path, line=source.line_of(loc), field=f"tasks[{index}]")
        if isinstance(entry, str):
            if entry not in BUILTIN_TASKS:
                raise input_error(f"unknown task {entry!r} (built-in tasks: {', '.join(BUILTIN_TASKS)})", **where)
            entry = BUILTIN_TASKS[entry]
        else:
            entry = validate(TaskSpec, entry, source, prefix=loc, name=("tasks", index))
        if entry.name in names:
            raise input_error(f"duplicate task name {entry.name!r}", **where)
        names.add(entry.name)
        specs.append(entry)
    return specs, source.path.parent


def order_tasks(tasks: list[Task], order: str) -> list[Task]:
    """The stream in the order its tasks are trained: as declared, reversed, or by name (the paper's
    robustness settings). Splits do not depend on the order."""
    if order == "reverse":
        return tasks[::-1]
    if order == "alphabetical":
        return sorted(tasks, key=lambda t: t.name)
    return list(tasks)


def load_stream(stream: str, test_size: int | None, train_size: int | None, split_seed: int) -> list[Task]:
    """Every task of the stream, read and validated up front (before any training starts)."""
    specs, base_dir = stream_specs(stream)
    tasks = []
    for spec in specs:
        task = load_task(spec, base_dir, test_size, train_size, split_seed)
        if not task.train or not task.test:
            raise input_error(
                f"task {spec.name!r} has an empty {'train' if not task.train else 'test'} set", field="stream"
            )
        tasks.append(task)
    return tasks
