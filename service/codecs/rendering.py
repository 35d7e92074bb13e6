"""Render feature maps as PNG channel grids a person can look at."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.codecs.layer_outputs import LayerOutput

# Viridis (van der Walt and Smith, CC0), all 256 colours as matplotlib rounds them to 8 bits:
# the table itself, so matplotlib stays out of the serving image.
_VIRIDIS = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e614710634711644713654814674816"
    "6848176948186a481a6c481b6d481c6e481d6f481f7048207148217348237448247548257648267748287848"
    "2979472a7a472c7a472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83"
    "443b84433d84433e85423f854240864241864142874144874045884046883f47883f48893e49893e4a893e4c"
    "8a3d4d8a3d4e8a3c4f8a3c508b3b518b3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d36"
    "5c8d365d8d355e8d355f8d34608d34618d33628d33638d32648e32658e31668e31678e31688e30698e306a8e"
    "2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e2c728e2c738e2b748e2b758e2a768e2a778e2a78"
    "8e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e26828e26828e25838e25848e25858e24"
    "868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d21918c20928c20928c20938c"
    "1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f881fa0881fa1881fa1"
    "871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad8128ae8029"
    "af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8"
    "645cc8635ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517c"
    "d2507fd34e81d34d84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39"
    "a2da37a5db36a8db34aadc32addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e0"
    "20cae11fcde11dd0e11cd2e21bd5e21ad8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51bef"
    "e51cf1e51df4e61ef6e620f8e621fbe723fde725"
)
COLORMAP = np.frombuffer(bytes.fromhex(_VIRIDIS), dtype=np.uint8).reshape(256, 3)

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
