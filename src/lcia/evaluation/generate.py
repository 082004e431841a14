"""Batched greedy generation.

Prompts are grouped by instruction and sorted by length, so a batch shares a long prefix (the chat
template and the task's instruction, encoded once for the batch) and wastes little compute on padding.
Decoding is a plain greedy loop on the KV cache (the same tokens as ``model.generate(do_sample=False)``):
the prompt pass computes logits for its last position only, and a sequence that reaches its end-of-turn
token leaves the batch and the cache at once, so later steps compute only the sequences still going.
Answers repeat exactly for the same weights and batch size. When a method routes examples to adapters,
each adapter's examples are generated together with that adapter active. With ``images`` (a
vision-language model's ``VisionInputs``), the prompt pass gets each prompt's image, and the shared
prefix stops before the first image token. ``on_token`` hears each answer token as it is decoded (a
server streams with it); unused, it costs one test per token and changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lcia.core.precision import inference_autocast
from lcia.data.prompts import check_image_kept, encode_prompt, fit
from lcia.data.schema import Example

MIN_SHARED_PREFIX = 8  # tokens: below this, encoding a shared prefix once saves less than it costs


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens that every prompt starts with, leaving each at least one token of its own."""
    n = min(map(len, prompts)) - 1
    first = prompts[0]
    for prompt in prompts[1:]:
        n = next((i for i in range(n) if prompt[i] != first[i]), n)
    return n if n >= MIN_SHARED_PREFIX else 0


@torch.inference_mode()
def _generate_batch(
    model, prompts: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int, image_inputs: dict | None = None,
    image_token: int | None = None, on_token: Callable[[int, int], None] | None = None,
) -> list[list[int]]:  # fmt: skip
    """Greedy decoding on the KV cache. The prompts' shared prefix (a task's chat template and
    instruction) is encoded once and its cache copied to every row; a row that ends leaves the batch.
    ``image_inputs`` (the images of the prompts that hold ``image_token``, in order) go to the prompt pass;
    ``on_token(row, token)`` hears each answer token of prompt ``row`` as it is decoded."""
    device = next(model.parameters()).device
    shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
    if image_inputs and image_token in prompts[0][:shared]:
        shared = prompts[0].index(image_token)  # image tokens belong to each row's own pass
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
    cache = None
    if shared:
        prefix = torch.tensor([prompts[0][:shared]], device=device)
        cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache  # its logits go unused
        cache.batch_repeat_interleave(len(prompts))
    suffixes = [prompt[shared:] for prompt in prompts]
    width = max(map(len, suffixes))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, suffix in enumerate(suffixes):  # left-padded between the shared prefix and each suffix
        ids[row, width - len(suffix) :] = torch.tensor(suffix)
        mask[row, width - len(suffix) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)  # each prompt's own positions, pads aside
    mask = torch.cat([mask.new_ones(len(prompts), shared), mask], dim=1)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        **(image_inputs or {}),
    )
    cache, positions = out.cache, positions[:, -1:]
    rows = torch.arange(len(prompts), device=device)  # the prompt each remaining batch row belongs to
    answers: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        tokens = out.logits[:, -1].argmax(-1)
        for row, token in zip(rows.tolist(), tokens.tolist()):
            if token != eos_id:
                answers[row].append(token)
                if on_token is not None:
                    on_token(row, token)
        going = tokens != eos_id
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, tokens, mask, positions = rows[keep], tokens[keep], mask[keep], positions[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        positions = positions + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    return answers


def generate_answers(
    model,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_length: int,
    adapters: list[str | None] | None = None,
    desc: str = "eval",
    progress: bool = True,
    images=None,
    precision: str = "fp32",
    on_token: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy answers for ``examples``, in their order; ``adapters[i]`` answers example i (None: the active one).
    ``images`` (``lcia.models.vision.VisionInputs``) gives a vision-language model the examples' images;
    ``precision`` ``bf16`` answers under bf16 autocast (the run's training precision); ``on_token(i, token)``
    hears each token of example i's answer as it is decoded (the end-of-turn token is not an answer token)."""
    slots = images.slots if images is not None else None
    prompts = [fit(encode_prompt(tokenizer, ex, slots), max_length - max_new_tokens) for ex in examples]
    for ex, prompt in zip(examples, prompts):
        check_image_kept(prompt, ex, slots, "evaluation.max_length")
    by_adapter: dict[str | None, list[int]] = defaultdict(list)
    for i, adapter in enumerate(adapters or [None] * len(examples)):
        by_adapter[adapter].append(i)
    answers: list[str] = [""] * len(examples)
    device = next(model.parameters()).device
    bar = tqdm(total=len(examples), desc=desc, disable=not progress, leave=False)
    with inference_autocast(model, precision, device):
        for adapter, indices in by_adapter.items():
            if adapter is not None:
                model.set_adapter(adapter, inference_mode=True)
            # One instruction per batch where possible, so that the batch shares a long prefix.
            indices = sorted(indices, key=lambda i: (examples[i].instruction, len(prompts[i])))
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                refs = [examples[i].image for i in chunk if examples[i].image]
                outs = _generate_batch(
                    model,
                    [prompts[i] for i in chunk],
                    tokenizer.pad_token_id,
                    tokenizer.eos_token_id,
                    max_new_tokens,
                    images.forward_inputs(refs, device) if refs else None,
                    slots.token_id if slots else None,
                    _in_examples(on_token, chunk),
                )
                for i, out in zip(chunk, outs):
                    answers[i] = tokenizer.decode(out, skip_special_tokens=True).strip()
                bar.update(len(chunk))
    bar.close()
    return answers


def _in_examples(on_token: Callable[[int, int], None] | None, chunk: list[int]) -> Callable[[int, int], None] | None:
    """``on_token`` told the example index of a batch row."""
    if on_token is None:
        return None
    return lambda row, token: on_token(chunk[row], token)
