"""A task of a stream: its train and test examples, how answers are scored, and deterministic splits."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from lcia.data.schema import Example


@dataclass
class Task:
    name: str
    train: list[Example]
    test: list[Example]
    scorer: str = "exact"
    max_new_tokens: int = 16
    family: str | None = None  # the instruction family a task belongs to (what grouping should find)
    epochs: float | None = None  # the passes its benchmark's scripts make over it (``training.epochs: benchmark``)

    @property
    def instructions(self) -> list[str]:
        """The task's distinct instructions, in first-seen order."""
        return list(dict.fromkeys(example.instruction for example in self.train + self.test))

    def majority_baseline(self) -> float:
        """Share of the test set whose answer is the test set's most common answer."""
        counts = Counter(_label(example) for example in self.test)
        return counts.most_common(1)[0][1] / len(self.test) if self.test else 0.0


def _label(example: Example) -> str:
    return example.output.strip().lower().rstrip(".")


def sample_in_order(items: list, cap: int | None, seed: int | str) -> list:
    """At most ``cap`` of ``items``, a sample seeded by ``seed`` kept in their order (all when ``cap`` is None)."""
    if cap is None or cap >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), cap))]


def split_examples(
    examples: list[Example], test_size: int, train_size: int | None, seed: str, balance: bool = False
) -> tuple[list[Example], list[Example]]:
    """Seeded shuffle, then ``test_size`` test examples and up to ``train_size`` training ones.

    With ``balance`` both sets take the same number of examples of each answer label: the test set as
    many as ``test_size`` and the rarest label allow (leaving each label a quarter of its examples for
    training), so a majority-class guess scores 1/labels; the training set the rest, down-sampled to
    the rarest label, so training cannot reach a low loss by always giving the majority answer.
    """
    order = list(examples)
    random.Random(seed).shuffle(order)
    if not balance:
        test, train = order[:test_size], order[test_size:]
    else:
        by_label: dict[str, list[Example]] = defaultdict(list)
        for example in order:
            by_label[_label(example)].append(example)
        per_label = min(test_size // len(by_label), min(len(v) * 3 // 4 for v in by_label.values()))
        rest = min(len(v) for v in by_label.values()) - per_label
        test = [ex for group in by_label.values() for ex in group[:per_label]]
        train = [ex for group in by_label.values() for ex in group[per_label : per_label + rest]]
        random.Random(seed + "/test").shuffle(test)
        random.Random(seed + "/train").shuffle(train)
    return train[:train_size] if train_size is not None else train, test
