"""Training is reproducible from its seed, and early stopping keeps the best epoch's weights.

The oracle for "best weights restored" is a second, independent run: training is
deterministic on CPU (the first test), so stopping early after epoch E with patience P must
leave exactly the weights of a run that trains E - P epochs and no more.
"""

from __future__ import annotations

import numpy as np
import pytest

from training.data import load_dataset
from training.train import TrainConfig, train_variant

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small():
    return load_dataset("digits", seed=0, limit=256)


def _weights(small, **config) -> tuple[list[np.ndarray], int]:
    result = train_variant(small, TrainConfig(variant="gap", verbose=0, **config))
    return result.model.get_weights(), result.epochs_run


def test_the_same_seed_gives_the_same_weights_and_another_does_not(small) -> None:
    first, _ = _weights(small, epochs=2, seed=3)
    again, _ = _weights(small, epochs=2, seed=3)
    other, _ = _weights(small, epochs=2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert max(float(np.abs(a - b).max()) for a, b in zip(first, other, strict=True)) > 1e-3


def test_early_stopping_restores_the_best_epoch(small) -> None:
    stopped, epochs_run = _weights(small, epochs=40, patience=1, seed=5, learning_rate=0.01)
    assert epochs_run < 40, "validation loss kept improving: no early stop to check"
    best, ran = _weights(small, epochs=epochs_run - 1, patience=100, seed=5, learning_rate=0.01)
    assert ran == epochs_run - 1
    assert all(np.array_equal(a, b) for a, b in zip(stopped, best, strict=True))
