"""LoRA adapters through upstream PEFT."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from lcia.core.files import refuse_pickles
from lcia.errors import input_error


def lora_config(
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | str,
    modules_to_save: list[str] | None = None,
    variant: str = "lora",
) -> LoraConfig:
    """``modules_to_save``: modules trained whole beside LoRA (a vision-language model's projector), one copy
    per adapter. ``target_modules`` as a string is a regex over module names (PEFT's full match). ``variant``:
    ``lora``, ``dora`` (PEFT's weight-decomposed LoRA) or ``rslora`` (scaling alpha / sqrt(r))."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
        use_dora=variant == "dora",
        use_rslora=variant == "rslora",
    )


def shared_whole_modules(config: LoraConfig) -> LoraConfig:
    """The config for a method's further adapters when several are active at once (O-LoRA, MoELoRA): PEFT
    runs one adapter's copy of a module trained whole, so the first adapter's copy (the projector) serves all."""
    return dataclasses.replace(config, modules_to_save=None)


def add_lora(model: PreTrainedModel, config: LoraConfig, adapter_name: str = "default") -> PeftModel:
    """Wrap ``model`` with a fresh LoRA adapter; only the adapter's tensors are trainable."""
    return get_peft_model(model, config, adapter_name=adapter_name)


def task_adapter(model: PeftModel, stage: int, config: LoraConfig) -> str:
    """The adapter ``task-<stage>`` of a method that trains one per task, added unless it is there (``task-1``
    is made with the model, a resumed stage's is loaded); returns its name."""
    name = f"task-{stage}"
    if name not in model.peft_config:
        model.add_adapter(name, config)
    return name


def load_adapters(model: PreTrainedModel, folder: Path) -> PeftModel:
    """Load a saved stage's adapter(s) with plain PEFT: one adapter at the folder's root, or one per subfolder."""
    folders = [folder] if (folder / "adapter_config.json").exists() else adapter_subfolders(folder)
    if not folders:
        raise input_error("no adapter_config.json here or in a subfolder", file=folder)
    peft_model = None
    for path in folders:
        refuse_pickles(path)  # PEFT would fall back to a pickled adapter_model.bin
        name = "default" if path == folder else path.name
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        else:
            peft_model.load_adapter(str(path), adapter_name=name)
    return peft_model


def adapter_subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "adapter_config.json").exists())
