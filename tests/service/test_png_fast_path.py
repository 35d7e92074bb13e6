"""Plain PNGs decode through libspng; every answer equals Pillow's own, pixels and errors alike.

The oracle is the Pillow-only path the service used for every image before: the same bytes
must give the same pixels and description, or the same error (kind and message), whichever
path the fast one takes.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from PIL import Image, PngImagePlugin

from service.codecs import images
from service.codecs.images import ImageError, PlainPng, decode_image, open_image
from tests.strategies import broken_bytes, odd_images

LIMIT = 25_000_000
TARGETS = (((28, 28), "L"), ((32, 32), "RGB"), ((48, 40), "RGB"))


def pillow_only(data: bytes, size: tuple[int, int], channels: str, limit: int = LIMIT):
    """The answer of the path every image took before the fast one: Pillow from end to end."""
    try:
        opened = images._open_with_pillow(data, limit)
        return images.finish_decoding(opened, size, channels, limit)
    except ImageError as error:
        return error


def answer(data: bytes, size: tuple[int, int], channels: str, limit: int = LIMIT):
    try:
        return decode_image(data, size, channels, limit)
    except ImageError as error:
        return error


def assert_same(ours, reference) -> None:
    if isinstance(reference, ImageError):
        assert isinstance(ours, ImageError), ours
        assert (ours.kind, str(ours)) == (reference.kind, str(reference))
        return
    assert not isinstance(ours, ImageError), ours
    assert ours.describe() == reference.describe()
    np.testing.assert_array_equal(ours.pixels, reference.pixels)


def png(mode: str, size=(32, 32), seed: int = 0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    grey = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8))
    image = grey.convert(mode) if mode != "L" else grey
    if mode in ("RGB", "RGBA", "LA"):  # every band its own noise
        bands = [
            Image.fromarray(rng.integers(0, 256, grey.size[::-1], dtype=np.uint8)) for _ in mode
        ]
        image = Image.merge(mode, bands)
    return saved(image, **save)


def saved(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of every chunk."""
    found, position = [], 8
    while position < len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        found.append((position, kind))
        position += 12 + length
    return found


def flip_checksum(data: bytes, kind: bytes) -> bytes:
    position = next(offset for offset, found in chunks(data) if found == kind)
    (length,) = struct.unpack_from(">I", data, position)
    mutable = bytearray(data)
    mutable[position + 8 + length] ^= 0xFF
    return bytes(mutable)


def with_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """``data`` with one more chunk before its first IDAT."""
    position = next(offset for offset, found in chunks(data) if found == b"IDAT")
    chunk = struct.pack(">I4s", len(payload), kind) + payload
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]))
    return data[:position] + chunk + data[position:]


TEXT = PngImagePlugin.PngInfo()
TEXT.add_text("Comment", "made by a test")
ROTATED = Image.Exif()
ROTATED[0x0112] = 6  # orientation: turn 90 degrees

PLAIN = {
    "rgb": png("RGB"),
    "grey": png("L", (28, 28)),
    "wide grey": png("L", (70, 9), seed=3),
    "one pixel": png("RGB", (1, 1)),
    "dpi (pHYs)": png("RGB", dpi=(300, 300)),
    "gamma": with_chunk(png("RGB"), b"gAMA", struct.pack(">I", 45455)),
    "optimized": png("L", (28, 28), optimize=True),
}
NOT_PLAIN = {
    "palette": png("P"),
    "rgba": png("RGBA"),
    "grey alpha": png("LA"),
    "text chunk": png("RGB", pnginfo=TEXT),
    "exif orientation": png("RGB", (40, 30), exif=ROTATED.tobytes()),
    "16-bit": saved(Image.fromarray(np.arange(0, 60000, 100, dtype=np.uint16).reshape(20, 30))),
    "bad IDAT checksum (Pillow reads on)": flip_checksum(png("RGB"), b"IDAT"),
    "bad pHYs checksum": flip_checksum(png("RGB", dpi=(72, 72)), b"pHYs"),
    "bad IHDR checksum": flip_checksum(png("RGB"), b"IHDR"),
    "truncated": png("RGB")[:-30],
    "no IEND": png("RGB")[:-12],
    "not a PNG": b"GIF89a" + bytes(40),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_pngs_take_the_fast_path_and_decode_as_pillow_does(name: str) -> None:
    data = PLAIN[name]
    assert isinstance(open_image(data, LIMIT), PlainPng)
    for size, channels in TARGETS:
        assert_same(answer(data, size, channels), pillow_only(data, size, channels))


@pytest.mark.parametrize("name", sorted(NOT_PLAIN))
def test_other_pngs_go_to_pillow_with_the_same_answers(name: str) -> None:
    data = NOT_PLAIN[name]
    try:
        opened = open_image(data, LIMIT)
    except ImageError:
        opened = None
    assert not isinstance(opened, PlainPng)
    for size, channels in TARGETS:
        assert_same(answer(data, size, channels), pillow_only(data, size, channels))


def test_a_plain_png_over_the_pixel_limit_gets_pillows_refusal() -> None:
    data = png("RGB", (40, 40))
    ours, reference = answer(data, (28, 28), "L", 1000), pillow_only(data, (28, 28), "L", 1000)
    assert isinstance(reference, ImageError) and reference.kind == "too_large"
    assert_same(ours, reference)


def test_larger_pngs_go_to_pillow() -> None:
    side = int(images.PLAIN_PNG_PIXELS**0.5) + 1
    data = png("L", (side, side))
    assert not isinstance(open_image(data, LIMIT), PlainPng)
    assert_same(answer(data, (28, 28), "L"), pillow_only(data, (28, 28), "L"))


def test_a_broken_deflate_stream_gets_pillows_error() -> None:
    data = bytearray(png("RGB", (64, 64)))
    position = next(offset for offset, kind in chunks(bytes(data)) if kind == b"IDAT")
    data[position + 20 : position + 60] = bytes(40)  # inside the compressed pixels
    broken = bytes(data)
    ours, reference = answer(broken, (28, 28), "L"), pillow_only(broken, (28, 28), "L")
    assert isinstance(reference, ImageError)
    assert_same(ours, reference)
    (length,) = struct.unpack_from(">I", broken, position)  # the same, its checksum made right
    checksum = struct.pack(">I", zlib.crc32(broken[position + 4 : position + 8 + length]))
    broken = broken[: position + 8 + length] + checksum + broken[position + 12 + length :]
    assert isinstance(open_image(broken, LIMIT), PlainPng)
    ours, reference = answer(broken, (28, 28), "L"), pillow_only(broken, (28, 28), "L")
    assert isinstance(reference, ImageError)
    assert_same(ours, reference)


@given(odd_images(max_side=80))
def test_any_valid_image_decodes_as_pillow_alone_would(case) -> None:
    data, _ = case
    for size, channels in TARGETS[:2]:
        assert_same(answer(data, size, channels), pillow_only(data, size, channels))


@given(broken_bytes())
def test_any_bytes_get_pillows_answer(data: bytes) -> None:
    assert_same(answer(data, (28, 28), "L"), pillow_only(data, (28, 28), "L"))
