"""Prompt rendering with the tokenizer's chat template, and tokenisation with response-only labels."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lcia.data.schema import Example

IGNORE_INDEX = -100


def prompt_messages(example: Example) -> list[dict]:
    """The chat messages that precede the answer: the instruction as system message, the input as user turn."""
    if example.messages:
        return [dict(m) for m in example.messages]
    if not example.input:
        return [{"role": "user", "content": example.instruction}]
    return [{"role": "system", "content": example.instruction}, {"role": "user", "content": example.input}]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, example: Example) -> list[int]:
    messages = prompt_messages(example)
    if tokenizer.chat_template is None:
        text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer: "
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def fit(ids: list[int], budget: int) -> list[int]:
    """Keep the head and the tail of an over-long prompt: the instruction opens it, the question closes it."""
    if len(ids) <= budget:
        return ids
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head) :]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode_for_training(tokenizer: PreTrainedTokenizerBase, example: Example, max_length: int) -> Encoded:
    """Prompt + answer + end-of-turn; labels mask the prompt by position (pad == eos here, so never by id)."""
    prompt = encode_prompt(tokenizer, example)
    answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = len(prompt) + len(answer) > max_length
    answer = answer[: max_length // 2]
    prompt = fit(prompt, max_length - len(answer))
    return Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, truncated)
