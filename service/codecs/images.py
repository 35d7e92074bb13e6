"""Decode client images into the model's uint8 pixels. Runs on worker threads, knows no HTTP."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyspng
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Pillow's JPEG opener also reads the multi-picture (MPO) JPEGs many phone cameras write.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif", "image/tiff")
RESIZE_FILTER = "bilinear"
# A request with up to this many pixels in all (four 64x64 images) is decoded on the event loop:
# about 0.1 ms per image, less than the trip to a decoder thread and back costs (about 0.16 ms).
INLINE_PIXELS = 4 * 64 * 64
_RESAMPLE = Image.Resampling.BILINEAR
# Where Pillow's getexif() finds an orientation (besides a TIFF's own tags): without any of
# them, exif_transpose has nothing to do, and skipping it saves a fifth of a small decode.
_ORIENTATION_SOURCES = frozenset({"exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"})
# PNG chunks that change nothing in the pixels Pillow decodes (it applies no gamma or colour
# profile): a small PNG with only these is decoded by libspng (pyspng), 4x faster at 32x32
# (12 against 52 us; at 128x128 160 against 189, at 512x512 10 ms against 6: Pillow's own
# overhead is what the fast path saves, so it stops at PLAIN_PNG_PIXELS).
PLAIN_PNG_PIXELS = 128 * 128
_PLAIN_PNG_CHUNKS = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs", b"iCCP", b"sBIT", b"tIME"}
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PLAIN_PNG_MODES = {0: "L", 2: "RGB"}  # IHDR colour types at 8 bits a sample
# Never decode half an image silently: a truncated file is the client's to fix.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image the service cannot use; ``kind`` says why (too_large, unsupported, corrupt)."""

    # The status every API answers for each kind (the protocols then say 400 for 415 and 422).
    STATUS = {"too_large": 413, "unsupported": 415, "corrupt": 422, "empty": 400}

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def status(self) -> int:
        return self.STATUS.get(self.kind, 422)


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8 (height, width, channels) at the model's input size
    format: str
    original_size: tuple[int, int]  # width, height as displayed (EXIF orientation applied)
    original_mode: str
    frames: int
    seconds: float = 0.0

    def describe(self) -> dict[str, object]:
        height, width = self.pixels.shape[:2]
        return {
            "format": self.format,
            "original_size": list(self.original_size),
            "original_mode": self.original_mode,
            "frames": self.frames,
            "model_size": [width, height],
            "resize_filter": RESIZE_FILTER if self.original_size != (width, height) else "none",
        }


def decode_image(
    data: bytes, size: tuple[int, int], channels: str, max_pixels: int
) -> DecodedImage:
    """Decode ``data`` to ``channels`` ("L" or "RGB") at ``size`` (height, width).

    EXIF orientation is applied, alpha is flattened onto white, 16-bit and CMYK images are
    converted, animations give their first frame, and images over ``max_pixels`` are refused
    before their pixels are decoded.
    """
    return finish_decoding(open_image(data, max_pixels), size, channels, max_pixels)


@dataclass(frozen=True)
class PlainPng:
    """A PNG whose pixels libspng decodes exactly as Pillow does: 8-bit grey or RGB, no
    palette, transparency, animation or text (which may carry an EXIF orientation), and
    not interlaced, every chunk's checksum right."""

    data: bytes
    size: tuple[int, int]  # width, height
    mode: str
    stream: tuple[memoryview, ...]  # the IDAT chunks' data: one zlib stream


def open_image(data: bytes, max_pixels: int) -> Image.Image | PlainPng:
    """Read only the image's header: its format and size, refused when over ``max_pixels``.

    Cheap enough for the event loop; :func:`finish_decoding` does the costly part.
    """
    if not data:
        raise ImageError("empty", "the image is empty (0 bytes)")
    # Over a limit, Pillow's path says which; larger images decode as fast there.
    plain = _plain_png(data, min(max_pixels, PLAIN_PNG_PIXELS))
    if plain is not None:
        return plain
    return _open_with_pillow(data, max_pixels)


def _plain_png(data: bytes, max_pixels: int) -> PlainPng | None:
    """The PNG as a :class:`PlainPng` of at most ``max_pixels``, or None: Pillow decodes it
    (and finds what is wrong)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    view, position, size, mode = memoryview(data), len(_PNG_SIGNATURE), None, ""
    stream: list[memoryview] = []
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data) or kind not in _PLAIN_PNG_CHUNKS or (size is None) != (kind == b"IHDR"):
            return None
        # pyspng tells libspng to ignore checksums, zlib's Adler-32 too: a wrong one sends the
        # file to Pillow, which checks them (every chunk's but IDAT's, and the zlib stream).
        (checksum,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[position + 4 : end - 4]) != checksum:
            return None
        if kind == b"IHDR":
            if length != 13:
                return None
            width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(
                ">IIBBBBB", data, position + 8
            )
            mode = _PLAIN_PNG_MODES.get(colour, "") if depth == 8 else ""
            if not (mode and 0 < width * height <= max_pixels) or compression + filtering:
                return None
            if interlace:  # Adam7: kept on Pillow's path, which the tests compare against
                return None
            size = (width, height)
        elif kind == b"IDAT":
            stream.append(view[position + 8 : end - 4])
        elif kind == b"IEND":
            return PlainPng(data, size, mode, tuple(stream)) if size is not None else None
        position = end
    return None


def _open_with_pillow(data: bytes, max_pixels: int) -> Image.Image:
    with _decoding_errors(max_pixels):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                "too_large",
                f"the image is {width}x{height} = {width * height:,} pixels; the limit is "
                f"{max_pixels:,}: send a smaller image",
            )
        return image


def pixel_count(image: Image.Image | PlainPng) -> int:
    width, height = image.size
    return width * height


def finish_decoding(
    image: Image.Image | PlainPng, size: tuple[int, int], channels: str, max_pixels: int
) -> DecodedImage:
    """The pixels of an image :func:`open_image` opened, as :func:`decode_image` describes."""
    if isinstance(image, PlainPng):
        try:
            zlib.decompress(b"".join(image.stream))  # a broken stream: Pillow's error
            pixels = pyspng.load(image.data)
        except Exception:  # noqa: BLE001 - broken data: Pillow's error says what is wrong
            image = _open_with_pillow(image.data, max_pixels)
        else:
            return _from_plain_png(image, pixels, size, channels)
    with _decoding_errors(max_pixels):
        return _convert(image, size, channels)


def _from_plain_png(
    png: PlainPng, pixels: np.ndarray, size: tuple[int, int], channels: str
) -> DecodedImage:
    target_height, target_width = size
    if png.mode != channels or png.size != (target_width, target_height):
        # From bytes: Image.fromarray goes through the array interface (6.4 against 4.0 us
        # at 32x32, in a 45 us decode).
        image = Image.frombytes(png.mode, png.size, pixels)
        image = _to_mode(image, channels)
        if image.size != (target_width, target_height):
            image = image.resize((target_width, target_height), _RESAMPLE)
        return DecodedImage(_pixels(image), "PNG", png.size, png.mode, 1)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return DecodedImage(pixels, "PNG", png.size, png.mode, 1)


@contextmanager
def _decoding_errors(max_pixels: int) -> Iterator[None]:
    """Pillow's failures as ImageErrors: each says what is wrong with the client's bytes."""
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            "unsupported",
            "the body is not an image in a supported format "
            f"({', '.join(FORMATS)}); check the file and its Content-Type",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            "too_large", f"the image has too many pixels; the limit is {max_pixels:,}"
        ) from None
    except Exception as error:
        # Pillow's plugins raise many types on malformed files (OSError, ValueError, SyntaxError,
        # TypeError, struct.error...: found by tests/service/test_fuzz_imaging.py). All of them
        # mean the bytes are broken, which the client must fix; none may become a 500.
        raise ImageError("corrupt", f"the image could not be decoded: {_reason(error)}") from None


def _convert(image: Image.Image, size: tuple[int, int], channels: str) -> DecodedImage:
    original_format, original_mode = image.format or "unknown", image.mode
    frames = getattr(image, "n_frames", 1)
    image.seek(0)
    image.load()
    if _ORIENTATION_SOURCES.intersection(image.info) or hasattr(image, "tag_v2"):
        image = ImageOps.exif_transpose(image) or image
    # As displayed: after EXIF orientation. (Pillow's TIFF reader already rotates on open, so
    # the stored size would differ between formats for the same picture.)
    width, height = image.size
    image = _to_mode(image, channels)
    target_height, target_width = size
    if image.size != (target_width, target_height):
        image = image.resize((target_width, target_height), _RESAMPLE)
    return DecodedImage(_pixels(image), original_format, (width, height), original_mode, frames)


def _pixels(image: Image.Image) -> np.ndarray:
    """An L or RGB image's pixels, height x width x channels (read-only), through its bytes:
    np.asarray goes through the array interface (4.1 against 3.1 us at 28x28)."""
    width, height = image.size
    return np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, len(image.getbands()))


def _to_mode(image: Image.Image, channels: str) -> Image.Image:
    """Convert any Pillow mode to L or RGB: alpha onto white, 16/32-bit scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if values.max(initial=0) > 255 else 255.0
        return Image.fromarray(
            np.clip(values / scale * 255.0, 0, 255).astype(np.uint8), "L"
        ).convert(channels)
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, high = values.min(initial=0), values.max(initial=0)
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert(channels)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == channels else image.convert(channels)


def warm_up_decoder() -> None:
    """Decode one PNG and one JPEG so Pillow's plugins are loaded before the first request."""
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, format=fmt)
        decode_image(buffer.getvalue(), (4, 4), "L", 64)


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.split("\n", 1)[0][:200]
