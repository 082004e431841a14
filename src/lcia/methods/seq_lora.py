"""``seq-lora``: one LoRA adapter trained on each task in turn, the usual continual-tuning baseline.

Stores nothing beyond the adapter; forgetting is whatever later tasks overwrite.
"""

from lcia.methods.base import Method, register


@register("seq-lora")
class SeqLoRA(Method):
    """One LoRA adapter trained on each task in turn: the usual continual-tuning baseline."""
