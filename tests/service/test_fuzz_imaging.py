"""Property-based: any odd but valid image decodes to the model's shape; any bytes at all give
a DecodedImage or an ImageError, never another exception."""

from __future__ import annotations

import numpy as np
from hypothesis import given

from service.codecs.images import ImageError, decode_image
from tests.strategies import broken_bytes, odd_images

LIMIT = 25_000_000


@given(odd_images())
def test_odd_valid_images_decode_to_the_model_shape(case) -> None:
    data, size = case
    for channels, shape in (("L", (28, 28, 1)), ("RGB", (32, 32, 3))):
        decoded = decode_image(data, shape[:2], channels, LIMIT)
        assert decoded.pixels.shape == shape and decoded.pixels.dtype == np.uint8
        assert decoded.original_size == size and decoded.frames >= 1


@given(broken_bytes())
def test_any_bytes_decode_or_raise_an_image_error(data: bytes) -> None:
    try:
        decoded = decode_image(data, (28, 28), "L", LIMIT)
    except ImageError as error:
        assert error.kind in {"unsupported", "corrupt", "too_large"}
        assert str(error) and "Traceback" not in str(error)
    else:
        assert decoded.pixels.shape == (28, 28, 1)
