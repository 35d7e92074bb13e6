"""Real image bytes made with Pillow, for the service tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def digit_png(pixels: np.ndarray, scale: int = 1) -> bytes:
    """A (28, 28, 1) uint8 digit as PNG bytes, optionally enlarged."""
    image = Image.fromarray(pixels[:, :, 0], "L")
    if scale != 1:
        image = image.resize((28 * scale, 28 * scale), Image.Resampling.NEAREST)
    return encode(image)


def png_files(images: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """PNG bytes as the multipart ``images`` files of one request: 0.png, 1.png..."""
    return [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


def kserve_tensor(**changes: object) -> dict:
    """A valid KServe v2 UINT8 input tensor for a 28x28x1 digit model, some fields changed."""
    return {
        "name": "images",
        "shape": [1, 28, 28, 1],
        "datatype": "UINT8",
        "data": [0] * 784,
        **changes,
    }


def bomb_png(side: int = 6000) -> bytes:
    """A tiny file that decodes to side*side pixels."""
    return encode(Image.new("L", (side, side)), optimize=False)


# --- odd but valid images, for property-based tests -------------------------------------------

# Pillow modes each format can write; the service must turn every one into L or RGB.
WRITABLE_MODES = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "WEBP": ("RGB", "RGBA"),
    "BMP": ("1", "L", "P", "RGB"),
    "GIF": ("L", "P"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
}
ANIMATED = ("PNG", "GIF", "WEBP", "TIFF")
EXIF_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")


def odd_image(
    fmt: str, mode: str, width: int, height: int, seed: int, frames: int = 1, orientation: int = 1
) -> bytes:
    """Noise of the given size in the given mode and format, maybe animated or EXIF-rotated."""
    rng = np.random.default_rng(seed)

    def frame() -> Image.Image:
        if mode == "I;16":
            return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        if mode == "I":
            return Image.fromarray(rng.integers(-(2**20), 2**20, (height, width), dtype=np.int32))
        if mode == "F":
            return Image.fromarray(rng.normal(0, 1e3, (height, width)).astype(np.float32))
        rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        image = Image.fromarray(rgba, "RGBA")
        if mode == "P":
            return image.convert("RGB").quantize(colors=int(rng.integers(2, 256)))
        return image.convert(mode)

    images = [frame() for _ in range(frames if fmt in ANIMATED else 1)]
    options: dict[str, object] = {}
    if len(images) > 1:
        options.update(save_all=True, append_images=images[1:], duration=40)
    if orientation != 1 and fmt in EXIF_FORMATS:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    if fmt == "JPEG":
        options["quality"] = int(rng.integers(5, 100))
    return encode(images[0], fmt, **options)
