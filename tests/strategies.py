"""Hypothesis strategies for the property-based tests: odd valid images and broken bytes."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.images import EXIF_FORMATS, WRITABLE_MODES, odd_image


@st.composite
def odd_images(draw: st.DrawFn, max_side: int = 300) -> tuple[bytes, tuple[int, int]]:
    """A valid image file in any supported format and writable mode, of any size from 1x1,
    possibly animated or EXIF-rotated; with its (width, height) as displayed."""
    fmt = draw(st.sampled_from(sorted(WRITABLE_MODES)))
    mode = draw(st.sampled_from(WRITABLE_MODES[fmt]))
    width = draw(st.integers(1, max_side))
    height = draw(st.integers(1, max_side))
    orientation = draw(st.integers(1, 8))
    data = odd_image(
        fmt,
        mode,
        width,
        height,
        seed=draw(st.integers(0, 2**32 - 1)),
        frames=draw(st.integers(1, 3)),
        orientation=orientation,
    )
    turned = orientation >= 5 and fmt in EXIF_FORMATS  # 5 to 8 swap width and height
    return data, (height, width) if turned else (width, height)


@st.composite
def broken_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid image truncated, or with some bytes overwritten."""
    kind = draw(st.sampled_from(["random", "truncated", "mutated"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=4096))
    data, _ = draw(odd_images(max_side=64))
    if kind == "truncated":
        return data[: draw(st.integers(1, max(1, len(data) - 1)))]
    mutable = bytearray(data)
    for _ in range(draw(st.integers(1, 16))):
        mutable[draw(st.integers(0, len(mutable) - 1))] = draw(st.integers(0, 255))
    return bytes(mutable)
