"""Image references: every kind loads as RGB at its size, and a bad one is a one-line error naming it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lcia.data.images import load_image, uses_images
from lcia.data.schema import Example
from lcia.errors import LciaError


@pytest.mark.parametrize(
    "ref, size",
    [
        ("easy-vqa:train/0", (64, 64)),
        ("easy-vqa:test/999", (64, 64)),
        ("cifar10:0", (32, 32)),
        ("cifar10:9999", (32, 32)),
        ("digits:0", (8, 8)),
        ("digits:1796", (8, 8)),
    ],
)
def test_packaged_images_load_as_rgb(ref, size):
    image = load_image(ref)
    assert image.mode == "RGB" and image.size == size


def test_digits_are_scaled_to_full_grey_range():
    from sklearn.datasets import load_digits

    pixels = np.asarray(load_image("digits:0"))
    assert (pixels[..., 0] == pixels[..., 1]).all()  # grey
    expected = np.rint(load_digits().images[0] * 255 / 16)
    assert (pixels[..., 0] == expected).all() and pixels.max() > 200


def test_file_path_loads_as_rgb(tmp_path):
    Image.new("L", (5, 3), 128).save(tmp_path / "g.png")
    image = load_image(str(tmp_path / "g.png"))
    assert image.mode == "RGB" and image.size == (5, 3)


@pytest.mark.parametrize(
    "ref, message",
    [
        ("/no/such.png", "image not found: /no/such.png"),
        ("foo:1", "image not found: foo:1 (nor a packaged image: easy-vqa:, cifar10:, digits:)"),
        ("easy-vqa:val/3", "bad image reference 'easy-vqa:val/3'"),
        ("easy-vqa:train/4000", "no easy-VQA image 'easy-vqa:train/4000'"),
        ("cifar10:10000", "bad image reference 'cifar10:10000': expected cifar10:<index> with index < 10000"),
        ("digits:x", "bad image reference 'digits:x'"),
    ],
)
def test_bad_references_are_one_line_errors(ref, message):
    with pytest.raises(LciaError) as info:
        load_image(ref)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_uses_images():
    assert not uses_images([Example("i", "", "o")])
    assert uses_images([Example("i", "", "o"), Example("i", "", "o", image="digits:3")])
