"""The projector's pre-alignment (LLaVA's stage 1), cached: what a multimodal stream starts from.

LLaVA first trains only its projector on image captions, with the LM frozen, so that image tokens mean
something to the LM before any instruction tuning. Here: ``vision.prealign_steps`` AdamW steps of
``vision.prealign_batch_size`` captions of easy-VQA images that no coin-mini task uses
(``lcia.data.coin.alignment_examples``: "A blue rectangle."), the LM and the encoder frozen, no LoRA.
The projector is saved as safetensors under ``$LCIA_HOME/projectors/``, keyed by the LM, the settings
and the seed, so later runs (and the tests) start from the same weights in a second. With several
processes the main one trains it and the others load it.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lcia.core import distributed
from lcia.data.coin import alignment_examples
from lcia.data.prompts import encode_for_training
from lcia.errors import LciaError
from lcia.models.forward import answer_forward, collate
from lcia.models.loading import lcia_home
from lcia.models.vision import ENCODER, PROJECTOR, EncoderFeatures


def cache_file(name_or_path: str, steps: int, batch_size: int, lr: float, seed: int) -> Path:
    model = hashlib.sha256(name_or_path.encode()).hexdigest()[:12]
    return (
        lcia_home() / "projectors" / f"{ENCODER}-{model}-steps{steps}-batch{batch_size}-lr{lr:g}-seed{seed}.safetensors"
    )


def prealign(
    model,
    tokenizer,
    images: EncoderFeatures,
    *,
    name_or_path: str,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_length: int,
    progress: bool = True,
) -> dict:
    """Load the cached pre-aligned projector into ``model``, training it first if there is none.

    Returns what to record in the run's manifest: the cache file, and the first and last losses when
    this call trained it.
    """
    projector = getattr(model, PROJECTOR)
    file = cache_file(name_or_path, steps, batch_size, lr, seed)
    record = {"steps": steps, "batch_size": batch_size, "lr": lr, "file": str(file)}
    if steps and not file.exists() and distributed.is_main():
        record |= _train(model, tokenizer, images, steps, batch_size, lr, seed, max_length, progress)
        file.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own, renamed whole: never a half-written cache, even beside another run training it too
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in projector.state_dict().items()}, str(tmp))
        tmp.replace(file)
    distributed.barrier()
    load_prealigned(model, record)
    return record


def load_prealigned(model, record: dict) -> None:
    """Load a run's pre-aligned projector (its manifest's ``vision.prealign``) into ``model``, if it had one."""
    if record["steps"]:
        file = Path(record["file"])
        if not file.exists():
            raise LciaError(f"{file}: the run's pre-aligned projector is not in this machine's cache")
        getattr(model, PROJECTOR).load_state_dict(load_file(str(file)))


def _train(model, tokenizer, images, steps, batch_size, lr, seed, max_length, progress) -> dict:
    examples = alignment_examples(steps * batch_size, seed)
    features = [encode_for_training(tokenizer, ex, max_length, images.slots) for ex in examples]
    projector = getattr(model, PROJECTOR)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    projector.requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=lr)
    order = list(range(len(features)))
    random.Random(seed).shuffle(order)
    losses = []
    model.train()
    device = next(model.parameters()).device
    for step in tqdm(range(steps), desc="pre-align projector", disable=not progress, leave=False):
        chosen = [features[i] for i in order[step * batch_size : (step + 1) * batch_size]]
        batch = {k: v.to(device) for k, v in collate(chosen, tokenizer.pad_token_id).items()}
        batch |= images.forward_inputs([f.image for f in chosen], device)
        loss = answer_forward(model, batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    for p in frozen:
        p.requires_grad_(True)
    return {"first_loss": round(losses[0], 4), "last_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4)}
