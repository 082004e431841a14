"""``zero-shot``: the base model, never trained; every row of its matrix is row 0 (the floor)."""

from lcia.methods.base import Capabilities, Method, register


@register("zero-shot")
class ZeroShot(Method):
    capabilities = Capabilities(trains=False, sharded=True)

    def setup(self, model, lora):
        return model
