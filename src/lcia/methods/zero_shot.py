"""``zero-shot``: the base model, never trained; every row of its matrix is row 0 (the floor)."""

from lcia.methods.base import Capabilities, Method, register


@register("zero-shot")
class ZeroShot(Method):
    """The base model, never trained: every row of its matrix is row 0 (the floor)."""

    capabilities = Capabilities(trains=False)

    def setup(self, model, lora):
        return model
