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
    outputs = [
        select_and_reduce("conv", MAP, "0:10", "none"),
        select_and_reduce("vec", MAP, None, "mean"),
    ]
    body, grids = render_png(outputs)
    image = Image.open(io.BytesIO(body))
    first, second = layout(outputs[0]), layout(outputs[1])
    assert (first.columns, first.rows) == (4, 3)  # 10 channels in a near-square grid
    assert (first.cell_width, first.cell_height) == (5 * 16, 7 * 16)  # 112 // 7 = 16x
    assert (second.columns, second.rows) == (16, 1)
    assert image.size == (max(first.width, second.width), first.height + second.height)
    assert "grid=4x3" in grids[0] and "channels=10" in grids[0]


def test_png_refuses_grids_too_large_to_draw() -> None:
    huge = select_and_reduce("wide", np.zeros((28, 28, 4096), np.float32), None, "none")
    with pytest.raises(RenderError, match="channels=0:64"):
        layout(huge)
