"""The codebook: for each group (one adapter), the distinct instructions it was trained on.

    assign(instructions)   before a task: the group whose instructions are most similar on average
                           (mean over all (new, old) pairs, as the official code), if that reaches the
                           threshold; None: the task needs a new group
    route(instruction)     one test instance: the group holding the most similar single instruction
                           (its nearest neighbour), whatever the threshold: an instruction that matches
                           no group still goes to the closest one

Routing by the nearest instruction rather than the mean lets a group that holds many paraphrases
answer any one of them; an exact instruction seen in training always routes to its own group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lcia.mechanisms.similarity import Similarity


@dataclass
class Group:
    adapter: str
    instructions: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """What ``assign`` saw: each group's mean similarity, the best one and whether it reached the threshold."""

    similarities: dict[str, float]
    best: str | None
    reused: bool


class Codebook:
    def __init__(self, similarity: Similarity, threshold: float, groups: list[Group] | None = None):
        self.similarity = similarity
        self.threshold = threshold
        self.groups: list[Group] = groups or []
        self._routes: dict[str, tuple[str, dict[str, float]]] = {}  # instruction -> route, until the codebook changes

    def group(self, adapter: str) -> Group:
        return next(g for g in self.groups if g.adapter == adapter)

    def assign(self, instructions: list[str]) -> Decision:
        """Which existing group a task with ``instructions`` belongs to (mean pairwise similarity)."""
        means = {g.adapter: float(self.similarity.matrix(instructions, g.instructions).mean()) for g in self.groups}
        best = max(means, key=means.get) if means else None
        return Decision(means, best, best is not None and means[best] >= self.threshold)

    def add(self, adapter: str, instructions: list[str], task: str) -> None:
        """Record that ``adapter`` trained on ``task`` with ``instructions`` (a new group if needed)."""
        if not any(g.adapter == adapter for g in self.groups):
            self.groups.append(Group(adapter))
        group = self.group(adapter)
        group.instructions += [i for i in dict.fromkeys(instructions) if i not in group.instructions]
        if task not in group.tasks:
            group.tasks.append(task)
        self._routes.clear()

    def route(self, instruction: str) -> tuple[str, dict[str, float]]:
        """The adapter whose group holds the instruction most similar to ``instruction``, and each group's score."""
        if instruction not in self._routes:
            scores = {
                g.adapter: float(self.similarity.matrix([instruction], g.instructions).max()) for g in self.groups
            }
            self._routes[instruction] = (max(scores, key=scores.get), scores)
        return self._routes[instruction]

    def task_adapters(self) -> dict[str, str]:
        return {task: g.adapter for g in self.groups for task in g.tasks}

    def to_json(self) -> dict:
        return {
            "similarity": self.similarity.name,
            "threshold": self.threshold,
            "groups": [asdict(g) for g in self.groups],
        }

    @classmethod
    def from_json(cls, data: dict, similarity: Similarity) -> Codebook:
        return cls(similarity, data["threshold"], [Group(**g) for g in data["groups"]])
