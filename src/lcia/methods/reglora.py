"""``reglora``: RegLoRA, the essential-forgetting half of SEFE: a new LoRA per task, kept off the key entries
of the earlier tasks' updates.

Chen et al., *SEFE: Superficial and Essential Forgetting Eliminator for Multimodal Continual Instruction
Tuning*, ICML 2025 (official code: github.com/jinpeng0528/SEFE, ``key_elements_identification.py`` and the
decoder layer of ``llava/model/language_model/modeling_llama.py``). After task t, each LoRA layer's update
``D_t = B_t A_t`` is ranked by magnitude and its top ``fraction`` of entries (per layer: ``int(fraction *
out * in)`` of them) become key entries; the lists of every earlier task are concatenated (an entry key for
two tasks counts twice). Task K trains a fresh adapter while the earlier ones stay in the model, frozen
(the official code merges each into the base weights: the sum is the same), and pays

    loss = model loss + lam * mean over LoRA layers l of ( mean over key entries (i, j) of l of |D_K^l[i, j]| )

with ``D_K = B_K A_K`` unscaled (no alpha / r), as in the official code: an L1 pull to zero of the new update
exactly where the old tasks wrote most, so the new task writes elsewhere.

Parameters (``method.params``):
    fraction  share of each layer's update entries kept per task (default 0.02: the official hard-coded 2%)
    lam       weight of the regulariser (default 2500: the official ``loss_reg * 2.5e3``)

Keeps one frozen adapter per earlier task (the forward pass runs every adapter: a step of task K costs K
adapters' forward, one adapter's update) and, per earlier task and LoRA layer, the flat int32 indices of its
key entries (4 * fraction bytes per entry of each adapted weight matrix, in the checkpoints only). The
penalty gathers the new update at the (K-1) * fraction * out * in key entries of each layer (r products each)
instead of forming ``B A``. The answer-style diversification half of SEFE (ASD) is data preparation, not
part of this method (see the docs). Nothing routes: every adapter answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer
from pydantic import Field, NonNegativeFloat
from transformers import PreTrainedModel

from lcia.core.files import read_json
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.models.lora import add_lora, shared_whole_modules, task_adapter

# (the new adapter's A [r, in], its B [out, r], rows, columns of the earlier tasks' key entries) of one layer
Term = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def lora_pairs(model: torch.nn.Module, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) of ``adapter`` in every linear LoRA layer, by the layer's module name."""
    return {
        name: (module.lora_A[adapter].weight, module.lora_B[adapter].weight)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and adapter in module.lora_A and module.lora_A[adapter].weight.dim() == 2
    }


def key_entries(delta: torch.Tensor, fraction: float) -> torch.Tensor:
    """Flat indices (row * in + column) of the ``int(fraction * out * in)`` entries of largest |delta|."""
    count = int(fraction * delta.shape[0] * delta.shape[1])  # the official rounding, in its order
    _, flat = torch.topk(delta.detach().float().abs().reshape(-1), count)
    return flat.to(torch.int32 if delta.numel() < 2**31 else torch.int64)


def penalty(terms: list[Term]) -> torch.Tensor:
    """Mean over layers of the mean |(B A)[i, j]| over their key entries, without forming B A."""
    means = [(b[rows] * a[:, cols].T).sum(-1).abs().mean() for a, b, rows, cols in terms]
    return torch.stack(means).mean()


@register("reglora")
class RegLora(Method):
    """RegLoRA (SEFE): a new LoRA per task, pulled to zero where earlier tasks' updates were largest."""

    class Params(MethodParams):
        fraction: float = Field(
            0.02, gt=0.0, le=1.0, description="share of each LoRA layer's update entries kept as key per task"
        )
        lam: NonNegativeFloat = Field(2.5e3, description="weight of the regulariser (the official 2.5e3)")

    # DDP: the new adapter is added in before_task, before the loop wraps the model; the penalty reads the
    # replicated weights, so every rank adds the same term.
    capabilities = Capabilities(ddp=True)

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.adapters: list[str] = []  # one per stage begun, in order; the last one trains
        self.keys: list[dict[str, torch.Tensor]] = []  # per finished task: LoRA layer -> flat key indices
        self.penalties: list[float] = []  # this stage's regulariser at each step
        self.per_stage: list[dict] = []
        self._terms: list[Term] | None = None

    def setup(self, model: PreTrainedModel, lora: LoraConfig) -> PeftModel:
        self.lora = lora
        return add_lora(model, lora, adapter_name="task-1")

    def before_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        name = task_adapter(model, ctx.stage, shared_whole_modules(self.lora))
        self.adapters.append(name)
        self._activate(model)

    def _activate(self, model: PeftModel) -> None:
        """Every adapter active, the sum of their updates standing for the official merged weights; only the last
        trains (and a vision model's projector, trained whole in every task as in the official scripts)."""
        model.base_model.set_adapter(self.adapters)
        if len(self.adapters) > 1:
            model.set_requires_grad(self.adapters[:-1], requires_grad=False)
            for name, param in model.named_parameters():
                if ".modules_to_save." in name:
                    param.requires_grad_(True)
        self._terms = None  # gathered at the first step: after a resume has loaded the weights

    def _collect(self, model: PeftModel) -> list[Term]:
        """Each layer's new (A, B) with the rows and columns of every earlier task's key entries, concatenated."""
        terms = []
        for name, (a, b) in lora_pairs(model, self.adapters[-1]).items():
            flat = torch.cat([keys[name] for keys in self.keys]).to(a.device, torch.int64)
            if flat.numel():  # a layer too small for any key entry: the official mean would be NaN
                terms.append((a, b, flat // a.shape[1], flat % a.shape[1]))
        return terms

    def loss(self, ctx: TrainContext, batch: dict, outputs: Any) -> torch.Tensor | None:
        if not self.keys or not self.params.lam:
            return None
        if self._terms is None:
            self._terms = self._collect(ctx.accelerator.unwrap_model(ctx.model))
        if not self._terms:
            return None
        reg = penalty(self._terms)
        ctx.log["reglora_penalty"] = reg.item()
        return self.params.lam * reg

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        if "reglora_penalty" in ctx.log:  # once per step, whatever the micro-batches
            self.penalties.append(ctx.log["reglora_penalty"])

    def after_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        with torch.no_grad():
            pairs = lora_pairs(model, self.adapters[-1])
            self.keys.append({name: key_entries(b @ a, self.params.fraction).cpu() for name, (a, b) in pairs.items()})
        record = {"stage": ctx.stage, "key_entries": sum(k.numel() for k in self.keys[-1].values())}
        if self.penalties:
            record["mean_penalty"] = sum(self.penalties) / len(self.penalties)
        self.per_stage.append(record)
        self.penalties, self._terms = [], None
        ctx.log["reglora_key_entries"] = float(record["key_entries"])

    def summary(self) -> dict[str, Any]:
        return self.params.model_dump() | {"adapters": self.adapters, "per_stage": self.per_stage}

    @classmethod
    def report_lines(cls, run) -> list[str]:
        method = run.results.get("method", {})
        stages = ", ".join(
            f"stage {s['stage']} {s['mean_penalty']:.3g}" for s in method.get("per_stage", []) if "mean_penalty" in s
        )
        return [
            f"RegLoRA (fraction {method.get('fraction')}, lam {method.get('lam')}): mean regulariser "
            f"(mean |new update| at earlier key entries) per stage: {stages or 'n/a'}."
        ]

    def artifacts(self) -> dict[str, Any]:
        return {"reglora.json": {"adapters": self.adapters, "active": self.adapters}}

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        model.base_model.set_adapter(read_json(folder / "reglora.json")["active"], inference_mode=True)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.adapters, "keys": self.keys, "penalties": self.penalties, "per_stage": self.per_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters, self.keys = list(state["adapters"]), [dict(k) for k in state["keys"]]
        self.penalties, self.per_stage = list(state["penalties"]), list(state["per_stage"])

    def restore_model(self, model: PeftModel) -> None:
        for name in self.adapters:
            if name not in model.peft_config:
                model.add_adapter(name, shared_whole_modules(self.lora) if name != "task-1" else self.lora)
        if self.adapters:
            self._activate(model)
