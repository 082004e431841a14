"""``moelora``: a mixture of LoRA experts with a learned router in every LoRA layer, trained through the stream.

Chen et al., *CoIN: A Benchmark of Continual Instruction tuNing for Multimodel Large Language Model*, NeurIPS
2024 Datasets and Benchmarks (github.com/zackschen/CoIN, the ``CoINMOELoraLinear`` of its PEFT fork). Every
LoRA-targeted linear layer holds E experts of rank expert_r and a router (bias-free linear, in_features -> E);
for each token x

    y = W x + sum_e softmax(router(x))_e * alpha / (E * expert_r) * B_e A_e dropout_e(x)

As in CoIN, one mixture continues from task to task (like ``seq-lora``'s one adapter): the token-wise mixture is
what should limit interference. Built on upstream PEFT: the experts are E ordinary LoRA adapters
``expert-0..E-1``, all active at once (PEFT adds each one's ``scaling * B_e(A_e(dropout_e(x)))``); a forward
pre-hook on each LoRA layer computes that call's gates with its router (a submodule ``moe_router`` of the wrapped
base layer, so it moves, trains and is checkpointed with the model) and a forward hook on each
``lora_B[expert]`` weighs its output.

Follows CoIN in: the rank split (expert_r = r / E, so the total rank is plain LoRA's), the scaling alpha over the
total rank (uniform gates give the experts' mean), dense softmax gates per token computed from the layer's input
before dropout, an independent dropout mask per expert, no load-balancing loss, and the router's initialisation
(PyTorch's default for a linear layer: small random logits, so tokens start from slightly different mixtures; with
every B at zero the router gets its first gradient at the second step, whatever its start). Deviations: the
experts' A start as PEFT initialises LoRA (Kaiming-uniform, as ``seq-lora``'s adapter, so the two differ only in
the mixture) instead of N(0, 0.01^2); the router's weights are kept in fp32; CoIN requires r divisible by E.

Parameters (``method.params``):
    experts    LoRA experts per layer (default 4)
    expert_r   rank of each expert (default: the run's lora.r // experts, at least 1)

Stores E experts of rank expert_r and one router per LoRA layer: the memory of one LoRA of rank E * expert_r plus
in_features * E per layer. A step runs E small LoRA matmul pairs instead of one (the same FLOPs at equal total
rank, more kernel launches) plus the router's matmul and softmax. A saved stage holds the experts as PEFT
adapters and the routers in moelora_router.safetensors (with moelora.json naming the experts).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from pydantic import Field, PositiveInt
from safetensors.torch import load_file
from torch.utils.hooks import RemovableHandle

from lcia.core.files import read_json
from lcia.errors import input_error
from lcia.methods.base import Capabilities, Method, MethodParams, register
from lcia.models.lora import add_lora, shared_whole_modules

ROUTERS, CONFIG = "moelora_router.safetensors", "moelora.json"


@register("moelora")
class MoELoRA(Method):
    """MoELoRA (CoIN): a mixture of LoRA experts with a learned token-wise router in every LoRA layer."""

    # Every expert and router exists from setup on (nothing appears after a DDP wrapper is built), all of them take
    # part in every forward pass and the hooks keep no state across calls: data parallelism only averages gradients.
    # Plain LoRA only: the gates weigh each expert's lora_B output, which DoRA rescales together with the base
    # output outside it, and rsLoRA's alpha / sqrt(r) would change CoIN's alpha / (total rank) expert scaling.
    capabilities = Capabilities(ddp=True, lora_variants=frozenset({"lora"}))

    class Params(MethodParams):
        experts: PositiveInt = Field(4, description="LoRA experts per layer")
        expert_r: PositiveInt | None = Field(None, description="rank of each expert (default: lora.r // experts)")

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.experts = [f"expert-{e}" for e in range(self.params.experts)]
        self.expert_r = self.params.expert_r
        self.routers: dict[str, torch.nn.Linear] = {}  # parameter name -> router, for the saved stages
        self._hooks: list[RemovableHandle] = []

    def setup(self, model, lora):
        self.expert_r = self.expert_r or max(1, lora.r // len(self.experts))
        # PEFT scales by lora_alpha / r: alpha / E per expert makes it CoIN's alpha / (total rank)
        config = dataclasses.replace(lora, r=self.expert_r, lora_alpha=lora.lora_alpha / len(self.experts))
        model = add_lora(model, config, adapter_name=self.experts[0])
        # Adapters added later would freeze the routers: they come last.
        for name in self.experts[1:]:
            model.add_adapter(name, shared_whole_modules(config))
        self._mix(model)
        return model

    def _mix(self, model) -> None:
        """All experts active (and trainable), a router in every LoRA layer (kept if there), the hooks (re)installed."""
        model.base_model.set_adapter(self.experts)  # PeftModel.set_adapter takes one name, its LoraModel a list
        for handle in self._hooks:
            handle.remove()
        self._hooks, self.routers = [], {}
        for name, layer in model.named_modules():
            if not isinstance(layer, LoraLayer) or self.experts[0] not in layer.lora_A:
                continue
            # On the wrapped base layer, where PEFT never looks: on the LoRA layer itself PEFT would count the router
            # as part of every adapter and save a copy in each expert's adapter file.
            base = layer.base_layer
            if not hasattr(base, "moe_router"):
                device = layer.lora_A[self.experts[0]].weight.device
                base.moe_router = torch.nn.Linear(
                    layer.in_features, len(self.experts), bias=False, device=device, dtype=torch.float32
                )
            self.routers[f"{name}.base_layer.moe_router.weight"] = base.moe_router
            self._hooks += self._hook(layer, base.moe_router)

    def _hook(self, layer: LoraLayer, router: torch.nn.Linear) -> list[RemovableHandle]:
        gates: dict[str, torch.Tensor] = {}  # this call's [..., E] gates: set before the experts run, dropped after

        def route(module: LoraLayer, args: tuple) -> None:
            gates["now"] = torch.softmax(router(args[0].to(router.weight.dtype)), dim=-1)

        def weigh(e: int):
            return lambda module, args, out: out * gates["now"][..., e : e + 1].to(out.dtype)

        handles = [layer.register_forward_pre_hook(route), layer.register_forward_hook(lambda *_: gates.clear())]
        return handles + [layer.lora_B[name].register_forward_hook(weigh(e)) for e, name in enumerate(self.experts)]

    def summary(self) -> dict[str, Any]:
        return {"experts": self.experts, "expert_r": self.expert_r}

    def artifacts(self) -> dict[str, Any]:
        return {ROUTERS: {name: router.weight for name, router in self.routers.items()}, CONFIG: self.summary()}

    def load_stage(self, model, folder: Path):
        config = read_json(folder / CONFIG)
        self.experts, self.expert_r = config["experts"], config["expert_r"]
        self._mix(model)
        weights = load_file(str(folder / ROUTERS))
        if set(weights) != set(self.routers):
            raise input_error(f"{ROUTERS} does not hold the {len(self.routers)} routers of these experts", file=folder)
        with torch.no_grad():
            for name, router in self.routers.items():
                router.weight.copy_(weights[name])
        return model.requires_grad_(False)
