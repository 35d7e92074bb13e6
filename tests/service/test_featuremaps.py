"""Channel selection, reductions against numpy, npy/npz encoding and PNG grid layout."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from service.codecs.layer_outputs import (
    SelectionError,
    encode_npy,
    parse_channels,
    select_and_reduce,
)
from service.codecs.rendering import RenderError, layout, render_png

MAP = np.random.default_rng(0).normal(size=(7, 5, 16)).astype(np.float32)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, list(range(16))),
        ("all", list(range(16))),
        ("0:4", [0, 1, 2, 3]),
        ("3", [3]),
        ("-1", [15]),
        ("0,5,9", [0, 5, 9]),
        ("0:2, 10:12", [0, 1, 10, 11]),
        ("12:", [12, 13, 14, 15]),
        ("0:100", list(range(16))),  # slices clip, as in Python
        ("::4", None),
    ],
)
def test_parse_channels(text, expected) -> None:
    if expected is None:
        with pytest.raises(SelectionError, match="not understood"):
            parse_channels(text, 16)
    else:
        assert parse_channels(text, 16) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("16", "channels 0 to 15"), ("20:30", "selects nothing"), ("a:b", "not understood")],
)
def test_bad_channel_selections(text, message) -> None:
    with pytest.raises(SelectionError, match=message):
        parse_channels(text, 16)


def test_reductions_match_numpy() -> None:
    picked = MAP[..., [1, 4, 9]]
    assert np.array_equal(select_and_reduce("x", MAP, "1,4,9", "none").values, picked)
    np.testing.assert_allclose(
        select_and_reduce("x", MAP, "1,4,9", "mean").values, picked.mean(axis=(0, 1)), rtol=1e-6
    )
    np.testing.assert_allclose(
        select_and_reduce("x", MAP, "1,4,9", "max").values, picked.max(axis=(0, 1))
    )
    mean = picked.mean(axis=(0, 1))
    l2 = select_and_reduce("x", MAP, "1,4,9", "l2").values
    np.testing.assert_allclose(l2, mean / np.linalg.norm(mean), rtol=1e-6)
    assert np.linalg.norm(l2) == pytest.approx(1.0)


def test_vector_layers_are_left_as_they_are_by_mean_and_max() -> None:
    vector = np.arange(6, dtype=np.float32)
    assert np.array_equal(select_and_reduce("v", vector, "1:4", "max").values, [1, 2, 3])
    output = select_and_reduce("v", vector, None, "l2")
    assert output.kind == "vector" and np.linalg.norm(output.values) == pytest.approx(1.0)


def test_summary_describes_the_values() -> None:
    summary = select_and_reduce("conv", MAP, "0:2", "none").summary()
    assert summary["shape"] == [7, 5, 2] and summary["total_channels"] == 16
    assert summary["min"] == pytest.approx(float(MAP[..., :2].min()))
    assert summary["channels"] == [0, 1] and summary["kind"] == "map"


def test_npy_for_one_layer_and_npz_for_several() -> None:
    one = select_and_reduce("conv1", MAP, None, "none")
    body, media, suffix = encode_npy([one])
    assert (media, suffix) == ("application/x-npy", "npy")
    assert np.array_equal(np.load(io.BytesIO(body)), MAP)
    two = select_and_reduce("vec", MAP, None, "mean")
    body, media, suffix = encode_npy([one, two])
    assert (media, suffix) == ("application/zip", "npz")
    assert zipfile.is_zipfile(io.BytesIO(body))
    archive = np.load(io.BytesIO(body))
    assert sorted(archive.files) == ["conv1", "vec"]
    np.testing.assert_allclose(archive["vec"], MAP.mean(axis=(0, 1)), rtol=1e-6)


def test_png_grid_has_the_stated_layout() -> None:
    """The layout spelled out, not read from the implementation: a map's cells are enlarged
    by the largest whole factor that keeps them within 112 px (7x5 -> 16x: 80x112), laid in
    ceil(sqrt(n)) columns with 2 px gaps under a 20 px header line; a vector's values are 14 px
    squares, 32 to a row; an image is at least 240 px wide; layers are stacked."""
    import matplotlib

    outputs = [
        select_and_reduce("conv", MAP, "0:10", "none"),
        select_and_reduce("vec", MAP, None, "mean"),
    ]
    body, grids = render_png(outputs)
    image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    conv_width, conv_height = 4 * 80 + 5 * 2, 20 + 3 * 112 + 4 * 2  # 4 columns, 3 rows
    vec_width, vec_height = max(16 * 14 + 17 * 2, 240), 20 + 14 + 2 * 2  # one row of 16
    assert image.shape[:2] == (conv_height + vec_height, max(conv_width, vec_width))
    assert "grid=4x3" in grids[0] and "channels=10" in grids[0]
    assert f"size={conv_width}x{conv_height}" in grids[0]
    # Channel 7 (row 1, column 3): its own range through viridis, each value a 16x16 square.
    plane = MAP[:, :, 7]
    scaled = (plane - plane.min()) / (plane.max() - plane.min())
    viridis = matplotlib.colormaps["viridis"]
    expected = np.round(viridis(np.round(scaled * 255) / 255)[..., :3] * 255)
    top, left = 20 + 2 + 1 * (112 + 2), 2 + 3 * (80 + 2)
    cell = image[top : top + 112, left : left + 80]
    np.testing.assert_allclose(cell[8::16, 8::16], expected, atol=1)
    # The vector row: value i of the channel means is square i, coloured on the row's range.
    means = MAP.mean(axis=(0, 1))
    ranked = (means - means.min()) / (means.max() - means.min())
    colours = np.round(viridis(np.round(ranked * 255) / 255)[:, :3] * 255)
    row = image[conv_height + 20 + 2 + 7, [2 + i * 16 + 7 for i in range(16)]]
    np.testing.assert_allclose(row, colours, atol=1)


def test_png_refuses_grids_too_large_to_draw() -> None:
    huge = select_and_reduce("wide", np.zeros((28, 28, 4096), np.float32), None, "none")
    with pytest.raises(RenderError, match="channels=0:64"):
        layout(huge)
