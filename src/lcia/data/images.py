"""Image references and loading them for a vision-language model.

An example names its image by a reference string (``Example.image``), not by pixels: streams load in a
second and per-sample prediction files can say which image each answer was about. A reference is

* a file path (absolute: readers resolve it against the data file's folder or ``image_folder``), or
* a packaged image, read from an installed package at run time (never copied into this repository):
  ``easy-vqa:train/<id>`` and ``easy-vqa:test/<id>`` (easy-VQA's PNGs), ``cifar10:<index>`` (the
  BIG-bench CIFAR-10 test set, base64 PNGs) and ``digits:<index>`` (scikit-learn's 8x8 digits).

Images are decoded only when a model asks for them (:func:`load_image`), always as RGB.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from lcia.core.packages import package_dir
from lcia.data.schema import Example
from lcia.errors import input_error

IMAGE_PLACEHOLDER = "<image>"  # where a prompt's image goes
PACKAGED = ("easy-vqa", "cifar10", "digits")  # the schemes of packaged references
CIFAR10_TASK = "cifar10_classification/base64/task.json.gz"  # under lcia.data.streams.bigbench_dir(), gzipped


@dataclass(frozen=True)
class ImageSlots:
    """How a prompt holds an image: the placeholder's token id, repeated ``count`` times."""

    token_id: int
    count: int


def uses_images(examples: Iterable[Example]) -> bool:
    """Whether any example has an image (a stream that does needs a vision-language model)."""
    return any(example.image for example in examples)


def load_image(ref: str) -> Image.Image:
    """The image a reference names, in RGB mode. Raises a one-line LciaError naming a bad reference."""
    scheme, sep, key = ref.partition(":")
    if not sep or scheme not in PACKAGED:
        return _load_file(ref)
    if scheme == "easy-vqa":
        split, _, image_id = key.partition("/")
        if split not in ("train", "test") or not image_id.isdigit():
            raise input_error(f"bad image reference {ref!r}: expected easy-vqa:train/<id> or easy-vqa:test/<id>")
        path = easy_vqa_dir() / split / "images" / f"{int(image_id)}.png"
        if not path.is_file():
            raise input_error(f"no easy-VQA image {ref!r} ({path} does not exist)")
        return _load_file(str(path))
    records = cifar10_records() if scheme == "cifar10" else digits()[0]
    if not key.isdigit() or int(key) >= len(records):
        raise input_error(f"bad image reference {ref!r}: expected {scheme}:<index> with index < {len(records)}")
    if scheme == "cifar10":
        return Image.open(io.BytesIO(base64.b64decode(records[int(key)]["input"]))).convert("RGB")
    # Digits are 8x8 grey levels 0..16 with ink high: scaled to 0..255.
    pixels = np.rint(records[int(key)] * (255 / 16)).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def _load_file(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        hint = f" (nor a packaged image: {', '.join(s + ':' for s in PACKAGED)})" if ":" in path else ""
        raise input_error(f"image not found: {path}{hint}") from None
    except OSError as err:
        raise input_error(f"cannot read the image {path}: {err}") from None


def easy_vqa_dir() -> Path:
    """easy-VQA's data folder: ``{train,test}/images/<id>.png`` and ``{train,test}/questions.json``."""
    return package_dir("easy_vqa", "the packaged easy-VQA images") / "data"


@lru_cache(maxsize=2)
def easy_vqa_questions(split: str) -> list[tuple[str, str, int]]:
    """easy-VQA's (question, answer, image id) triples of ``train`` or ``test``, in file order."""
    with open(easy_vqa_dir() / split / "questions.json", encoding="utf-8") as file:
        return [(question, answer, int(image_id)) for question, answer, image_id in json.load(file)]


@lru_cache(maxsize=1)
def cifar10_records() -> list[dict]:
    """BIG-bench's CIFAR-10 examples (``input``: a base64 PNG), decoded from JSON once per process."""
    from lcia.data.streams import bigbench_dir  # here: lcia.data.streams imports this module

    with gzip.open(bigbench_dir() / CIFAR10_TASK, "rt", encoding="utf-8") as file:
        return json.load(file)["examples"]


def cifar10_label(record: dict) -> str:
    """The class of a CIFAR-10 record: the one its ``target_scores`` gives 1."""
    scores = record["target_scores"]
    return max(scores, key=scores.get)


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: 1797 8x8 images (grey levels 0..16) and their labels 0..9."""
    from sklearn.datasets import load_digits  # imported here: sklearn takes a second to import

    data = load_digits()
    return data.images, data.target
