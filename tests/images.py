"""Real image bytes made with Pillow, for the service tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, format: str = "PNG", **options: object) -> bytes:  # noqa: A002
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def digit_png(pixels: np.ndarray, scale: int = 1) -> bytes:
    """A (28, 28, 1) uint8 digit as PNG bytes, optionally enlarged."""
    image = Image.fromarray(pixels[:, :, 0], "L")
    if scale != 1:
        image = image.resize((28 * scale, 28 * scale), Image.Resampling.NEAREST)
    return encode(image)


def bomb_png(side: int = 6000) -> bytes:
    """A tiny file that decodes to side*side pixels."""
    return encode(Image.new("L", (side, side)), optimize=False)
