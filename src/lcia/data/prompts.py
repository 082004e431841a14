"""Prompt rendering with the tokenizer's chat template, and tokenisation with response-only labels.

An example with an image has one ``<image>`` placeholder in its prompt (at the start of the first user
turn unless its text already holds one, as LLaVA data does); tokenised, the placeholder becomes as many
image tokens as the model gives an image (``ImageSlots``).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lcia.data.images import IMAGE_PLACEHOLDER, ImageSlots
from lcia.data.schema import Example
from lcia.errors import LciaError

IGNORE_INDEX = -100


def prompt_messages(example: Example) -> list[dict]:
    """The chat messages that precede the answer: the instruction as system message, the input as user turn."""
    if example.messages:
        messages = [dict(m) for m in example.messages]
    elif not example.input:
        messages = [{"role": "user", "content": example.instruction}]
    else:
        messages = [{"role": "system", "content": example.instruction}, {"role": "user", "content": example.input}]
    if example.image and not any(IMAGE_PLACEHOLDER in m["content"] for m in messages):
        turn = next((m for m in messages if m["role"] == "user"), messages[-1])
        turn["content"] = f"{IMAGE_PLACEHOLDER}\n{turn['content']}"
    return messages


def encode_prompt(tokenizer: PreTrainedTokenizerBase, example: Example, image: ImageSlots | None = None) -> list[int]:
    """The prompt's token ids; with an image, its placeholder expanded to ``image.count`` image tokens."""
    messages = prompt_messages(example)
    if tokenizer.chat_template is None:
        text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer: "
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    if not example.image:
        return ids
    if image is None:
        raise LciaError(f"example {example.id!r} has an image, but the model takes no images")
    if ids.count(image.token_id) != 1:
        raise LciaError(
            f"example {example.id!r}: its prompt holds {ids.count(image.token_id)} image placeholders, not 1"
        )
    at = ids.index(image.token_id)
    return ids[:at] + [image.token_id] * image.count + ids[at + 1 :]


def check_image_kept(ids: list[int], example: Example, image: ImageSlots | None, budget: str) -> None:
    """A prompt cut to its length budget must keep its image tokens whole."""
    if example.image and ids.count(image.token_id) != image.count:
        raise LciaError(f"example {example.id!r}: its prompt is too long for {budget}: the cut would split its image")


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
    image: str = ""  # the example's image reference, for the model's image inputs


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase, example: Example, max_length: int, image: ImageSlots | None = None
) -> Encoded:
    """Prompt + answer + end-of-turn; labels mask the prompt by position (pad == eos here, so never by id)."""
    prompt = encode_prompt(tokenizer, example, image)
    answer = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = len(prompt) + len(answer) > max_length
    answer = answer[: max_length // 2]
    prompt = fit(prompt, max_length - len(answer))
    check_image_kept(prompt, example, image, "training.max_length")
    return Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, truncated, example.image)
