"""Render feature maps as PNG channel grids a person can look at."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.codecs.layer_outputs import LayerOutput

# Viridis at nine evenly spaced points; linear interpolation between them is indistinguishable
# from the full table at these cell sizes and keeps matplotlib out of the serving image.
_VIRIDIS_ANCHORS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
COLORMAP = np.stack(
    [
        np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 9), _VIRIDIS_ANCHORS[:, i])
        for i in range(3)
    ],
    axis=1,
).astype(np.uint8)

TARGET_CELL = 112  # a 28x28 map is drawn 4x, a 7x7 map 16x
VECTOR_CELL = 14
VECTOR_COLUMNS = 32
GAP = 2
HEADER = 20
MAX_SIDE = 4096


class RenderError(ValueError):
    """The requested grid would be too large to draw."""


@dataclass(frozen=True)
class GridLayout:
    columns: int
    rows: int
    cell_width: int
    cell_height: int
    width: int
    height: int  # including the header line

    def describe(self, name: str, output: LayerOutput) -> str:
        first, last = output.channels[0], output.channels[-1]
        return (
            f"{name} channels={len(output.channels)} first={first} last={last} "
            f"grid={self.columns}x{self.rows} cell={self.cell_width}x{self.cell_height} "
            f"size={self.width}x{self.height}"
        )


def layout(output: LayerOutput) -> GridLayout:
    """Where each channel goes: maps as a near-square grid, vectors as rows of 32 cells."""
    if output.kind == "map":
        height, width, count = output.values.shape
        scale = max(1, TARGET_CELL // max(height, width))
        cell_w, cell_h = width * scale, height * scale
        columns = math.ceil(math.sqrt(count))
    else:
        count = output.values.shape[0]
        cell_w = cell_h = VECTOR_CELL
        columns = min(VECTOR_COLUMNS, count)
    rows = math.ceil(count / columns)
    total_w = columns * cell_w + (columns + 1) * GAP
    total_h = HEADER + rows * cell_h + (rows + 1) * GAP
    if max(total_w, total_h) > MAX_SIDE:
        raise RenderError(
            f"layer {output.name} with {count} channels makes a {total_w}x{total_h} image; "
            f"ask for fewer with ?channels=0:64"
        )
    return GridLayout(columns, rows, cell_w, cell_h, max(total_w, 240), total_h)


def render_grid(output: LayerOutput) -> tuple[Image.Image, GridLayout]:
    """One layer as a grid: each channel normalised to its own range (vectors: the layer's)."""
    grid = layout(output)
    canvas = Image.new("RGB", (grid.width, grid.height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    shape = "x".join(str(side) for side in output.values.shape[:-1])
    shape = f"{shape}x{output.total_channels}" if shape else str(output.total_channels)
    title = (
        f"{output.name}  {shape}  reduce={output.reduce}  showing {len(output.channels)} of "
        f"{output.total_channels}: {output.channels[0]}..{output.channels[-1]}"
    )
    draw.text((GAP + 2, 4), title, fill=(235, 235, 235), font=ImageFont.load_default())
    if output.kind == "map":
        cells = [_colorize(output.values[:, :, i]) for i in range(output.values.shape[2])]
        cells = [
            c.resize((grid.cell_width, grid.cell_height), Image.Resampling.NEAREST) for c in cells
        ]
    else:
        colors = _colorize(output.values[None, :])
        cells = [
            Image.new("RGB", (grid.cell_width, grid.cell_height), colors.getpixel((i, 0)))
            for i in range(output.values.shape[0])
        ]
    for index, cell in enumerate(cells):
        row, column = divmod(index, grid.columns)
        x = GAP + column * (grid.cell_width + GAP)
        y = HEADER + GAP + row * (grid.cell_height + GAP)
        canvas.paste(cell, (x, y))
    return canvas, grid


def render_png(outputs: list[LayerOutput]) -> tuple[bytes, list[str]]:
    """All requested layers stacked vertically in one PNG, and a description of each grid."""
    rendered = [render_grid(output) for output in outputs]
    width = max(image.width for image, _ in rendered)
    height = sum(image.height for image, _ in rendered)
    if height > MAX_SIDE:
        raise RenderError(
            f"{len(outputs)} layers make a {width}x{height} image; ask for fewer "
            "with ?layers= or ?channels="
        )
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    top = 0
    for image, _ in rendered:
        sheet.paste(image, (0, top))
        top += image.height
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", compress_level=3)
    descriptions = [
        grid.describe(o.name, o) for o, (_, grid) in zip(outputs, rendered, strict=True)
    ]
    return buffer.getvalue(), descriptions


def _colorize(values: np.ndarray) -> Image.Image:
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(COLORMAP[np.round(scaled * 255).astype(np.uint8)], "RGB")
