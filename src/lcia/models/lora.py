"""LoRA adapters through upstream PEFT."""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel


def lora_config(r: int, alpha: int, dropout: float, target_modules: list[str]) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")


def add_lora(model: PreTrainedModel, config: LoraConfig, adapter_name: str = "default") -> PeftModel:
    """Wrap ``model`` with a fresh LoRA adapter; only the adapter's tensors are trainable."""
    return get_peft_model(model, config, adapter_name=adapter_name)
