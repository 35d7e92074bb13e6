"""The explanation codecs on their own: classes by label or index, :explain bodies, overlays."""

from __future__ import annotations

import numpy as np
import pytest

from service.codecs.explanations import TOP_CLASS, ClassError, class_index, overlay
from service.codecs.rendering import COLORMAP
from service.codecs.tfserving import parse_explain
from service.errors import ApiError

CLASSES = ("cat", "dog", "7", "bird")


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        (None, TOP_CLASS),
        ("", TOP_CLASS),
        (-1, TOP_CLASS),
        ("-1", TOP_CLASS),
        ("dog", 1),
        (" dog ", 1),
        ("1", 1),  # an index...
        ("7", 2),  # ...unless a label reads the same: labels win
        (3, 3),
    ],
)
def test_a_class_by_label_or_index(asked, expected) -> None:
    assert class_index(asked, CLASSES) == expected


@pytest.mark.parametrize("asked", ["cow", "4", "-2", 4, -5, "1.0", "0x1"])
def test_an_unknown_class_lists_the_valid_ones(asked) -> None:
    with pytest.raises(ClassError) as caught:
        class_index(asked, CLASSES)
    assert caught.value.valid == list(CLASSES)
    assert "cat, dog, 7, bird" in str(caught.value) and "0 to 3" in str(caught.value)


def test_the_overlay_blends_image_and_colours() -> None:
    pixels = np.full((2, 3, 1), 200, np.uint8)
    heatmap = np.array([[0.0, 0.5, 1.0], [1.0, 0.0, 0.25]])
    blended = overlay(pixels, heatmap, 0.25)
    assert blended.shape == (2, 3, 3) and blended.dtype == np.uint8
    index = np.round(heatmap * 255).astype(int)
    expected = 0.75 * 200 + 0.25 * COLORMAP[index].astype(float)
    np.testing.assert_allclose(blended, expected, atol=0.51)
    assert (overlay(pixels, heatmap, 0.0) == 200).all()


class _Card:
    class input:  # noqa: N801 (the card's attribute)
        name, shape = "images", (2, 2, 1)

    classes = CLASSES


def _explain(body):
    return parse_explain(body, _Card, max_pixels=100, max_images=4)  # type: ignore[arg-type]


def test_explain_bodies_give_each_instance_its_class() -> None:
    image = [[[1], [2]], [[3], [4]]]
    parsed = _explain(
        {
            "instances": [image, {"images": image, "class_index": "dog"}, image],
            "class_index": [3, 0, -1],
        }
    )
    assert parsed.images.shape == (3, 2, 2, 1) and parsed.images.dtype == np.uint8
    assert parsed.classes.tolist() == [3, 1, -1]  # its own class wins over the shared list
    assert _explain({"instances": [image, image], "class_index": "bird"}).classes.tolist() == [
        3,
        3,
    ]
    assert _explain({"instances": [image]}).classes.tolist() == [TOP_CLASS]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"inputs": []}, '"instances"'),
        ({"instances": []}, "non-empty"),
        ({"instances": [[[[0]]]] * 5}, "at most 4"),
        ({"instances": [[[[0], [0]], [[0], [0]]]], "signature_name": "x"}, "unknown keys"),
        ({"instances": [[[[0], [0]], [[0], [0]]]] * 2, "class_index": [1]}, "one per instance"),
        ({"instances": [[[[0], [0]], [[0], [0]]]], "class_index": "cow"}, "unknown class"),
        ({"instances": [[[[0], [0]], [[0], [0]]]], "class_index": True}, "index or a label"),
        ({"instances": [{"class_index": 1, "b64": "x"}]}, 'as {"images": ...}'),
    ],
)
def test_malformed_explain_bodies_say_what_to_fix(body, words) -> None:
    with pytest.raises(ApiError) as caught:
        _explain(body)
    assert caught.value.status == 400 and words in caught.value.message
