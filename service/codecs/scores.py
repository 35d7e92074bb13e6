"""Scores to answers: the best classes of each image, as every API reports them."""

from __future__ import annotations

import numpy as np


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best classes of each row, best first; ties keep class order."""
    k = min(k, probabilities.shape[1])
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
