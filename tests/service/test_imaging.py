"""Decoding: formats, modes, orientation, animation, and the images that must be refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from service.codecs.images import ImageError, decode_image
from tests.images import bomb_png, encode

LIMIT = 25_000_000


def decode(data: bytes, channels: str = "L", size=(28, 28)):
    return decode_image(data, size, channels, LIMIT)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_supported_format_decodes(fmt: str) -> None:
    image = Image.new("RGB", (40, 30), (200, 200, 200))
    decoded = decode(encode(image, fmt), channels="RGB")
    assert decoded.pixels.shape == (28, 28, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.format == fmt and decoded.original_size == (40, 30)
    assert abs(int(decoded.pixels.mean()) - 200) <= 3
    assert decoded.describe()["resize_filter"] == "bilinear"


def test_same_size_grayscale_is_passed_through_exactly() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    decoded = decode(encode(Image.fromarray(pixels, "L")))
    assert np.array_equal(decoded.pixels[:, :, 0], pixels)
    assert decoded.describe()["resize_filter"] == "none"


def test_alpha_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # fully transparent black
    image.paste((0, 0, 0, 255), (0, 0, 14, 28))  # left half opaque black
    decoded = decode(encode(image))
    assert decoded.original_mode == "RGBA"
    assert decoded.pixels[:, :14].max() == 0 and decoded.pixels[:, 14:].min() == 255


def test_palette_with_transparency_and_la() -> None:
    palette = Image.new("P", (28, 28), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert decode(encode(palette)).pixels.min() == 255
    la = Image.new("LA", (28, 28), (0, 255))
    assert decode(encode(la)).pixels.max() == 0


def test_sixteen_bit_images_are_scaled_to_eight_bits() -> None:
    values = np.full((28, 28), 65535, dtype=np.uint16)
    values[:, :14] = 32768
    decoded = decode(encode(Image.fromarray(values)))
    assert decoded.pixels[0, 20, 0] == 255 and decoded.pixels[0, 0, 0] in (127, 128)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (28, 28), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode(encode(cmyk, "JPEG"), channels="RGB")
    assert decoded.original_mode == "CMYK"
    red, green, blue = decoded.pixels[14, 14]
    assert red > 200 and green < 60 and blue < 60


def _sideways(fmt: str, how: str) -> bytes:
    """A 40x20 picture, left half white, stored to be shown rotated 90 degrees clockwise."""
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (0, 0, 20, 20))
    if how == "xmp":  # Adobe's XMP packet, in a PNG text chunk
        text = PngInfo()
        orientation = '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
        text.add_itxt("XML:com.adobe.xmp", orientation)
        return encode(image, fmt, pnginfo=text)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, fmt, exif=exif.tobytes())


# PNG orientations are checked too: the decoder skips the EXIF step when no source is present.
@pytest.mark.parametrize(("fmt", "how"), [("JPEG", "exif"), ("PNG", "exif"), ("PNG", "xmp")])
def test_exif_orientation_is_applied(fmt: str, how: str) -> None:
    decoded = decode_image(_sideways(fmt, how), (40, 20), "L", LIMIT)
    # After rotation the picture is 20 wide and 40 tall, white on top.
    assert decoded.original_size == (20, 40)
    top, bottom = decoded.pixels[:20].mean(), decoded.pixels[20:].mean()
    assert top > 200 > 50 > bottom


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("L", (28, 28), value) for value in (250, 5, 120)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode(data)
    assert decoded.frames == 3
    assert decoded.pixels.min() > 200


@pytest.mark.parametrize(
    ("data", "kind", "message"),
    [
        (b"", "empty", "empty"),
        (b"this is not an image at all", "unsupported", "not an image"),
        (
            encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)))[
                :-300
            ],
            "corrupt",
            "could not be decoded",
        ),
        (encode(Image.new("RGB", (64, 64), 9), "JPEG")[:200], "corrupt", "could not be decoded"),
        (encode(Image.new("RGB", (8, 8)), "ICO"), "unsupported", "not an image"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "ico"],
)
def test_bad_images_are_refused_with_a_reason(data: bytes, kind: str, message: str) -> None:
    with pytest.raises(ImageError, match=message) as error:
        decode(data)
    assert error.value.kind == kind


def test_decompression_bombs_are_refused_before_decoding() -> None:
    data = bomb_png(6000)
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="36,000,000 pixels") as error:
        decode(data)
    assert error.value.kind == "too_large"
