"""Turn client-supplied pixel values and base64 images into the model's uint8 batch."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from convbridge.card import ModelCard
from service.codecs.images import ImageError, decode_image
from service.errors import ApiError, bad_request


def pixels_from_values(values: Any, where: str, whole: bool = True) -> np.ndarray:
    """Nested lists or an array of pixel values 0-255 as uint8; ApiError(400) otherwise.

    ``whole=False`` (float tensors) rounds to the nearest level instead of refusing fractions.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise bad_request(
            f"{where}: values must be numbers in nested lists of equal length"
        ) from None
    if not np.all(np.isfinite(array)):
        raise bad_request(f"{where}: values must be finite numbers (no NaN or infinity)")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise bad_request(
            f"{where}: pixel values must lie in 0..255, found {array.min():g}..{array.max():g}"
        )
    rounded = np.round(array)
    if whole and not np.array_equal(array, rounded):
        raise bad_request(f"{where}: uint8 pixel values must be whole numbers")
    return rounded.astype(np.uint8)


def check_image_shape(pixels: np.ndarray, card: ModelCard, where: str) -> np.ndarray:
    """One image as (height, width, channels); grayscale may come without its channel axis."""
    expected = tuple(card.input.shape)
    if pixels.shape == expected[:2] and expected[2] == 1:
        pixels = pixels[:, :, None]
    if pixels.shape != expected:
        raise bad_request(
            f"{where}: shape {list(pixels.shape)} does not match the model input "
            f"{list(expected)} (height, width, channels)"
        )
    return pixels


def decode_b64_image(text: Any, card: ModelCard, max_pixels: int, where: str) -> np.ndarray:
    """A base64-encoded image file, decoded and resized to the model's input."""
    if not isinstance(text, str):
        raise bad_request(f'{where}: "b64" must be a base64 string')
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f'{where}: "b64" is not valid base64') from None
    height, width, _ = card.input.shape
    try:
        return decode_image(data, (height, width), card.input.channels, max_pixels).pixels
    except ImageError as error:
        raise ApiError(error.status, f"{where}: {error}") from None
