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
