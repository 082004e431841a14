"""Batched greedy generation.

Prompts are sorted by length and left-padded in batches, so a batch wastes little compute on padding;
``generate`` uses the KV cache and stops each sequence at its end-of-turn token. Decoding is greedy, so
answers repeat exactly for the same weights and batch size. When a method routes examples to adapters,
each adapter's examples are generated together with that adapter active.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lcia.data.prompts import encode_prompt, fit
from lcia.data.schema import Example


@torch.inference_mode()
def _generate_batch(model, prompts: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    device = next(model.parameters()).device
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    answers = []
    for row in out[:, width:].tolist():
        answers.append(row[: row.index(eos_id)] if eos_id in row else row)
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
) -> list[str]:
    """Greedy answers for ``examples``, in their order; ``adapters[i]`` answers example i (None: the active one)."""
    prompts = [fit(encode_prompt(tokenizer, ex), max_length - max_new_tokens) for ex in examples]
    by_adapter: dict[str | None, list[int]] = defaultdict(list)
    for i, adapter in enumerate(adapters or [None] * len(examples)):
        by_adapter[adapter].append(i)
    answers: list[str] = [""] * len(examples)
    bar = tqdm(total=len(examples), desc=desc, disable=not progress, leave=False)
    for adapter, indices in by_adapter.items():
        if adapter is not None:
            model.set_adapter(adapter, inference_mode=True)
        indices = sorted(indices, key=lambda i: len(prompts[i]))
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            outs = _generate_batch(
                model, [prompts[i] for i in chunk], tokenizer.pad_token_id, tokenizer.eos_token_id, max_new_tokens
            )
            for i, out in zip(chunk, outs):
                answers[i] = tokenizer.decode(out, skip_special_tokens=True).strip()
            bar.update(len(chunk))
    bar.close()
    return answers
