"""How close a served tensor must be to the one the test computed itself."""

from __future__ import annotations

import numpy as np


def assert_same_float32(actual: np.ndarray, expected: np.ndarray) -> None:
    """The same float32 values up to their last bits, on the scale of the whole tensor.

    The server runs the model on other threads and batch sizes than the test's process, and
    TensorFlow's kernels may sum in another order for those: oneDNN's
    (``TF_ENABLE_ONEDNN_OPTS=1``) put a feature map reaching about 30 off by up to 2.7e-5
    between a batch of one and a batch of two, and values near 0 off by 8.4e-6 (sums of
    terms near 30). So the absolute part is 1e-6 of the tensor's largest value, and never
    under 1e-6.
    """
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * scale)
