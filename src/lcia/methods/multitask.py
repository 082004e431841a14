"""``multitask``: one LoRA trained jointly on all tasks at once, the usual upper bound.

The stream is one stage with every task's training data shuffled together and the summed step budget,
so its matrix has two rows (before, after): only Avg.ACC is defined. It needs all data at once.
"""

from lcia.methods.base import Capabilities, Method, register


@register("multitask")
class Multitask(Method):
    """One LoRA trained on all tasks at once: the usual upper bound (only Avg.ACC is defined)."""

    capabilities = Capabilities(needs_old_data=True)

    def stages(self, tasks):
        return [list(tasks)]
