"""The packaged image tasks of the ``coin-mini`` stream, and captions for the projector's pre-alignment.

In the spirit of CoIN (ScienceQA, TextVQA, ImageNet, GQA, ...), built from images that ship in packages
(read at run time, never copied into this repository): easy-VQA's shape, colour and yes/no questions
share one instruction (a family, as CoIN's VQA datasets share theirs), while CIFAR-10 and digits
classification each have their own. Examples carry image references (``lcia.data.images``); nothing is
decoded here.

Split rule. easy-VQA train images with id >= :data:`RESERVED_FROM` belong to the vision-language model's
projector pre-alignment (:func:`alignment_examples`) and are never in a task: a task trains on the
questions about train images below it and is tested on the questions about easy-VQA's own test images.
CIFAR-10 (BIG-bench ships only its 10,000-image test set) and digits have no such split: their one pool
is split like any other task (``lcia.data.tasks.split_examples``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

from lcia.data.images import cifar10_label, cifar10_records, digits, easy_vqa_questions
from lcia.data.schema import Example

EASY_VQA = "Answer the question about the image with a single word."  # the easy-vqa family's instruction
CIFAR10 = (
    "Classify the photo as one of: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck. "
    "Answer with the class name."
)
DIGITS = "Read the handwritten digit in the image. Answer with the digit only."
CLASSIFY_QUESTION = "What is shown in the image?"  # the input of both classification tasks
ALIGNMENT = "Describe the image briefly."

RESERVED_FROM = 3000  # easy-VQA train images 3000..3999: pre-alignment only
SHAPES = frozenset({"circle", "rectangle", "triangle"})
COLOURS = frozenset({"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"})
YES_NO = frozenset({"yes", "no"})


@dataclass(frozen=True)
class Pools:
    """A packaged task's examples: ``test`` holds its own test examples, or is None to split ``train``."""

    train: list[Example]
    test: list[Example] | None = None


def _easy_vqa(answers: frozenset[str]) -> Callable[[], Pools]:
    """The easy-VQA questions whose answer is in ``answers``: train below the reserved ids, test from test."""

    def load() -> Pools:
        def examples(split: str) -> list[Example]:
            return [
                Example(EASY_VQA, question, answer, id=f"easy-vqa-{split}-{k}", image=f"easy-vqa:{split}/{image_id}")
                for k, (question, answer, image_id) in enumerate(easy_vqa_questions(split))
                if answer in answers and (split == "test" or image_id < RESERVED_FROM)
            ]

        return Pools(examples("train"), examples("test"))

    return load


def _cifar10() -> Pools:
    records = cifar10_records()
    return Pools(
        [
            Example(CIFAR10, CLASSIFY_QUESTION, cifar10_label(record), id=f"cifar10-{k}", image=f"cifar10:{k}")
            for k, record in enumerate(records)
        ]
    )


def _digits() -> Pools:
    _, labels = digits()
    return Pools(
        [
            Example(DIGITS, CLASSIFY_QUESTION, str(label), id=f"digits-{k}", image=f"digits:{k}")
            for k, label in enumerate(labels)
        ]
    )


IMAGE_TASKS: dict[str, Callable[[], Pools]] = {
    "easy-vqa/shape": _easy_vqa(SHAPES),
    "easy-vqa/colour": _easy_vqa(COLOURS),
    "easy-vqa/yes-no": _easy_vqa(YES_NO),
    "cifar10": _cifar10,
    "digits": _digits,
}


def image_task(name: str, instruction: str | None = None) -> Pools:
    """The examples of a packaged image task (a key of :data:`IMAGE_TASKS`); ``instruction``, when
    given, replaces the task's own (as ``read_examples``' does a file's)."""
    pools = IMAGE_TASKS[name]()
    if instruction is None:
        return pools

    def own(examples: list[Example]) -> list[Example]:
        return [replace(ex, instruction=instruction) for ex in examples]

    return Pools(own(pools.train), own(pools.test) if pools.test is not None else None)


def alignment_examples(n: int, seed: int) -> list[Example]:
    """``n`` captions ("A blue rectangle.") of reserved easy-VQA train images, in a seeded order.

    easy-VQA has no captions: an image's colour and shape come from its own open questions, from the
    answer ("what color is the shape?" -> blue) and from the words of the question ("what is the blue
    shape?" -> rectangle: blue too). Of the 1,000 reserved images, the 783 whose colour and shape are
    both known this way are captioned; a longer request goes over them again, each pass in a new order.
    """
    shapes: dict[int, set[str]] = defaultdict(set)
    colours: dict[int, set[str]] = defaultdict(set)
    for question, answer, image_id in easy_vqa_questions("train"):
        if image_id < RESERVED_FROM or answer in YES_NO:
            continue
        words = set(question.rstrip("?").split()) | {answer}
        shapes[image_id] |= words & SHAPES
        colours[image_id] |= words & COLOURS
    known = sorted(i for i in shapes if len(shapes[i]) == 1 and len(colours[i]) == 1)
    rng = random.Random(seed)
    chosen: list[int] = []
    while len(chosen) < n:
        chosen += rng.sample(known, len(known))
    return [
        Example(
            ALIGNMENT,
            "",
            f"A {next(iter(colours[i]))} {next(iter(shapes[i]))}.",
            id=f"align-{i}",
            image=f"easy-vqa:train/{i}",
        )
        for i in chosen[:n]
    ]
