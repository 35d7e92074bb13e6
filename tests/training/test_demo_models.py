"""The demo models that `make models` trains: every variant, at least 0.90 held-out accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from convbridge.card import read_card
from convbridge.layout import list_models
from training.variants import VARIANTS

pytestmark = pytest.mark.slow


def test_all_six_variants_are_exported(demo_repository) -> None:
    assert list_models(demo_repository) == sorted(VARIANTS)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_held_out_accuracy_is_at_least_90_percent(demo_repository, digits, name) -> None:
    path = demo_repository / name / "1"
    card = read_card(path)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    probabilities = serve(images=tf.constant(digits.test.images))["probabilities"].numpy()
    accuracy = float(np.mean(probabilities.argmax(axis=1) == digits.test.labels))
    assert accuracy >= 0.90
    # The card reports what the SavedModel really does on the same held-out images.
    assert accuracy == pytest.approx(card.evaluation.accuracy, abs=0.002)
    assert card.evaluation.samples == len(digits.test) == 1000


def test_report_has_a_row_per_model(demo_repository) -> None:
    report = (demo_repository / "REPORT.md").read_text()
    for name in VARIANTS:
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 10
        assert float(cells[4]) >= 0.90  # accuracy
        assert float(cells[7]) > 0 and float(cells[8]) > 0  # latency at batch 1 and 32


def test_report_says_where_each_bridge_looks_when_digits_move(demo_repository) -> None:
    report = (demo_repository / "REPORT.md").read_text()
    section = report.split("## Where each bridge looks", 1)[1]
    kept = {}
    for name in VARIANTS:
        row = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 8
        moves, accuracy, shifted = float(cells[2]), float(cells[3]), float(cells[4])
        assert 0 < moves < 8  # the heatmap follows a digit moved 4 px, roughly
        assert 0 <= shifted <= accuracy
        assert float(cells[6]) > 0 and float(cells[7]) > 0  # explain latency at batch 1 and 32
        kept[name] = shifted / accuracy
    verdict = next(line for line in section.splitlines() if line.startswith("Flatten keeps"))
    holds = kept["flatten"] < np.mean(
        [kept[n] for n in ("gap", "gmp", "residual_gap")] + [kept["global_context"]]
    )
    assert verdict.endswith(("holds here.",) if holds else ("does not hold here.",))


def test_shifting_pads_and_crops_like_an_independent_implementation() -> None:
    from training.report import centre_x, shift_images

    rng = np.random.default_rng(3)
    images = rng.integers(1, 256, (20, 9, 7, 1), dtype=np.uint8)
    dx, dy = rng.integers(-4, 5, 20), rng.integers(-4, 5, 20)
    moved = shift_images(images, dx, dy)
    for image, out, x, y in zip(images, moved, dx, dy, strict=True):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))  # zeros around, then a window
        expected = padded[4 - y : 4 - y + 9, 4 - x : 4 - x + 7]
        np.testing.assert_array_equal(out, expected)
    heatmaps = np.zeros((2, 5, 5))
    heatmaps[0, 2, 3] = 1.0
    assert centre_x(heatmaps)[0] == 3.0 and np.isnan(centre_x(heatmaps)[1])
