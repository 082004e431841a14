"""A batch's tensors and the training forward pass: what the loop, the methods (LwF's teacher) and the
projector's pre-alignment share. Kept apart from the loop, which imports the methods."""

from __future__ import annotations

import torch

from lcia.data.prompts import IGNORE_INDEX, Encoded


def collate(features: list, pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f.input_ids)
        ids[row, :n] = torch.tensor(f.input_ids)
        labels[row, :n] = torch.tensor(f.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_inputs(features: list, pad_id: int, device, images=None) -> dict[str, torch.Tensor]:
    """The forward inputs of encoded examples: collated, on ``device``, with their image inputs (``images``, a
    ``lcia.models.vision`` image source, for a vision-language model)."""
    batch = {k: v.to(device) for k, v in collate(features, pad_id).items()}
    refs = [f.image for f in features if f.image]
    if refs:
        batch |= images.forward_inputs(refs, device)
    return batch


def answer_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], params: dict | None = None, *, ddp=None):
    """The model's outputs with logits only at the positions that predict an answer token, and their loss.

    Answers are a few tokens and prompts tens to hundreds, and the vocabulary projection over every
    position (49k x 576 for SmolLM2) with its softmax is about a third of a LoRA step on the CPU. A
    pre-hook on the output embedding hands it only the hidden states of the answer-predicting
    positions, as one contiguous matrix, so whatever the model does after it (logit scaling,
    soft-capping) still applies. ``outputs.logits`` is ``[answer tokens, vocab]``, in the order of
    ``batch["labels"][:, 1:] != -100``; the loss equals Hugging Face's causal-LM loss (mean over
    answer tokens). A model without an output embedding gets the stock forward. ``params`` (name ->
    tensor) stand in for the model's own for this call (``torch.func.functional_call``: nothing is
    written in place, so a graph built on the real weights stays valid). ``ddp``, a DDP wrapper of
    ``model``, is called instead of it so that the backward pass averages gradients across processes.
    """
    call = model if ddp is None else ddp
    if params is not None:
        call = lambda **kwargs: torch.func.functional_call(model, params, (), kwargs)  # noqa: E731
    head = model.get_output_embeddings()
    if head is None:
        return call(**batch)
    targets = batch["labels"][:, 1:]
    answers = targets != IGNORE_INDEX  # position c predicts token c + 1
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][:, :-1][answers],))
    try:
        outputs = call(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        handle.remove()
    outputs.loss = torch.nn.functional.cross_entropy(outputs.logits.float(), targets[answers])
    return outputs


def answer_tokens(feature: Encoded) -> int:
    """How many of an example's tokens the loss averages over (answer labels after the first position)."""
    return sum(label != IGNORE_INDEX for label in feature.labels[1:])
