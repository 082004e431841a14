"""The tensors a run trains, and the tensors it changes (what a checkpoint keeps)."""

from __future__ import annotations

import torch


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def adapter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter tensor (LoRA, and each adapter's copy of a module PEFT trains whole, e.g. a
    vision-language model's projector) and anything else trainable."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad or "lora_" in n or ".modules_to_save." in n}
