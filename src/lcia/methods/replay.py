"""``replay``: experience replay from a bounded buffer of earlier tasks' training examples.

The rehearsal baseline of continual learning (Chaudhry et al., *On Tiny Episodic Memories in Continual
Learning*, 2019; Rolnick et al., *Experience Replay for Continual Learning*, NeurIPS 2019). After each
task some of its training examples enter a buffer of at most ``buffer_size`` examples; every later
task trains on its own examples plus the whole buffer, shuffled together into the same length-grouped
batches, within the same step budget as every other method (so the buffer's share of a batch is its
share of the stage's examples).

Parameters:
    buffer_size  the most examples kept (default 200)
    sampling     balanced (default: every task seen so far keeps an equal share, buffer_size // tasks,
                 a random subset of its training set; earlier tasks give up examples as tasks arrive)
                 | reservoir (reservoir sampling over every training example seen, Vitter's algorithm R:
                 each is kept with the same probability, so larger tasks keep more)

The choice is seeded by the run (the loop seeds torch per stage), so runs repeat. The buffer is saved
with the run: in every checkpoint (resume continues with the same buffer) and as replay_buffer.json
beside each stage's adapters. It stores examples of earlier tasks: ``needs_old_data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeInt

from lcia.data.schema import Example
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register


def _as_example(record: dict) -> Example:
    return Example(**{**record, "references": tuple(record["references"]), "messages": tuple(record["messages"])})


@register("replay")
class Replay(Method):
    """Experience replay: earlier tasks' examples from a bounded buffer trained beside each new task's."""

    capabilities = Capabilities(ddp=True, needs_old_data=True)

    class Params(MethodParams):
        buffer_size: NonNegativeInt = Field(200, description="the most examples kept")
        sampling: Literal["balanced", "reservoir"] = Field(
            "balanced", description="balanced: an equal share per task seen | reservoir: Vitter's algorithm R"
        )

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.buffer_size, self.sampling = self.params.buffer_size, self.params.sampling
        self.buffer: dict[str, list[Example]] = {}  # task name -> its kept examples, in kept order
        self.seen = 0  # training examples offered to the buffer so far (reservoir sampling)

    def train_examples(self, tasks) -> list[Example]:
        return super().train_examples(tasks) + [ex for kept in self.buffer.values() for ex in kept]

    def after_task(self, ctx: TrainContext) -> None:
        generator = torch.Generator().manual_seed(torch.initial_seed())  # the loop's seed for this stage
        for task in ctx.tasks:
            if self.sampling == "balanced":
                self._add_balanced(task.name, task.train, generator)
            else:
                self._add_reservoir(task.name, task.train, generator)
        ctx.log["replay_buffer"] = sum(map(len, self.buffer.values()))

    def _add_balanced(self, name: str, examples: list[Example], generator: torch.Generator) -> None:
        order = torch.randperm(len(examples), generator=generator).tolist()
        self.buffer[name] = [examples[i] for i in order]
        share = self.buffer_size // len(self.buffer)
        for kept in self.buffer.values():  # each task keeps the first `share` of its random order
            del kept[share:]

    def _add_reservoir(self, name: str, examples: list[Example], generator: torch.Generator) -> None:
        kept = [(task, ex) for task, exs in self.buffer.items() for ex in exs]  # the buffer's slots
        for example in examples:
            self.seen += 1
            if len(kept) < self.buffer_size:
                kept.append((name, example))
                continue
            slot = int(torch.randint(self.seen, (1,), generator=generator))  # kept with probability size / seen
            if slot < self.buffer_size:
                kept[slot] = (name, example)
        self.buffer = {}
        for task, example in kept:
            self.buffer.setdefault(task, []).append(example)

    def summary(self) -> dict[str, Any]:
        return {
            "buffer_size": self.buffer_size,
            "sampling": self.sampling,
            "kept": {task: len(kept) for task, kept in self.buffer.items()},
        }

    def _records(self) -> dict[str, list[dict]]:
        return {task: [dataclasses.asdict(ex) for ex in kept] for task, kept in self.buffer.items()}

    def artifacts(self) -> dict[str, Any]:
        return {"replay_buffer.json": {**self.summary(), "buffer": self._records()}}

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self._records(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer = {task: [_as_example(r) for r in kept] for task, kept in state["buffer"].items()}
        self.seen = state["seen"]
