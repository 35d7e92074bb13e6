"""Explanations (Grad-CAM heatmaps) as clients get them: the class they name, JSON, npy, PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.codecs.rendering import COLORMAP

TOP_CLASS = -1  # the signature's class_index for "the class the model chose"
PANEL = 224  # each panel of the PNG is drawn at least this wide: a 28x28 digit 8x
HEADER = 20
GAP = 4


class ClassError(ValueError):
    """A class the model does not have; ``valid`` lists the ones it has."""

    def __init__(self, message: str, valid: Sequence[str]) -> None:
        super().__init__(message)
        self.valid = list(valid)


def class_index(asked: str | int | None, classes: Sequence[str]) -> int:
    """The index of the class ``asked`` for, by label or by index; TOP_CLASS for None or -1.

    A label wins over an index when both read the same (a class labelled "3" is that class).
    """
    if asked is None or (isinstance(asked, str) and not asked.strip()):
        return TOP_CLASS
    if isinstance(asked, str):
        text = asked.strip()
        if text in classes:
            return list(classes).index(text)
        if text.lstrip("-").isdigit():
            asked = int(text)
    if isinstance(asked, int) and not isinstance(asked, bool) and -1 <= asked < len(classes):
        return asked  # -1: the top class, as the signature reads it
    raise ClassError(
        f"unknown class {asked!r}: give a label ({', '.join(classes)}) or an index from 0 to "
        f"{len(classes) - 1}; -1, or none, explains the top class",
        classes,
    )


def explanation(
    heatmap: np.ndarray, index: int, score: float, classes: Sequence[str]
) -> dict[str, Any]:
    """One image's explanation as JSON: the class, its label and score, the heatmap rows."""
    return {
        "class_index": int(index),
        "label": classes[int(index)],
        "score": float(score),
        "heatmap": np.round(heatmap.astype(np.float64), 6).tolist(),
    }


def encode_npy(heatmap: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, heatmap.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """The image as the model saw it (uint8 HxWxC) under the heatmap's colours: RGB uint8."""
    image = pixels if pixels.shape[2] == 3 else np.repeat(pixels, 3, axis=2)
    colours = COLORMAP[np.round(np.clip(heatmap, 0, 1) * 255).astype(np.uint8)]
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colours.astype(np.float64)
    result: np.ndarray = np.round(blended).astype(np.uint8)
    return result


def render_png(pixels: np.ndarray, heatmap: np.ndarray, alpha: float, title: str) -> bytes:
    """The overlay beside the heatmap alone, both enlarged, under a header line ``title``."""
    height, width = heatmap.shape
    scale = max(1, PANEL // max(height, width))
    size = (width * scale, height * scale)
    panels = [
        Image.fromarray(overlay(pixels, heatmap, alpha), "RGB"),
        Image.fromarray(overlay(pixels, heatmap, 1.0), "RGB"),
    ]
    canvas_width = max(2 * size[0] + 3 * GAP, 240)
    canvas = Image.new("RGB", (canvas_width, HEADER + size[1] + 2 * GAP), (24, 24, 24))
    ImageDraw.Draw(canvas).text(
        (GAP, 4), title, fill=(235, 235, 235), font=ImageFont.load_default()
    )
    for number, panel in enumerate(panels):
        canvas.paste(
            panel.resize(size, Image.Resampling.NEAREST),
            (GAP + number * (size[0] + GAP), HEADER + GAP),
        )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
