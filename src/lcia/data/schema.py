"""The one example schema every reader produces and every part of lcia consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One instruction-following example.

    ``instruction`` is what grouping and routing compare (the task's instruction, shared by many
    examples); ``input`` is the instance. ``output`` is the training target and ``references`` every
    answer a scorer accepts (``output`` first). ``messages`` keeps a conversation's earlier turns when
    a reader got one (TRL conversational format): the prompt is then those messages verbatim.
    ``image`` names the example's image for a vision-language model (``lcia.data.images``: a file path
    or a packaged image such as ``easy-vqa:train/12``); its prompt holds one ``<image>`` placeholder.
    ``meta`` holds what a benchmark's scorer needs beyond the references (a box's image size, the source
    sentence of a simplification); it takes no part in equality or the prompt.
    """

    instruction: str
    input: str
    output: str
    references: tuple[str, ...] = ()
    id: str = ""
    messages: tuple[dict, ...] = field(default=(), compare=False)
    image: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.references:
            object.__setattr__(self, "references", (self.output,))
