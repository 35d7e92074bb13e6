"""The in-process ceiling: the SavedModel's serving_default called directly."""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convbridge.signatures import CLASSIFY
from training.report import time_calls


@dataclass(frozen=True)
class CeilingResult:
    batch: int
    median_ms: float
    images_per_second: float


def measure_ceiling(
    path: Path, input_shape: tuple[int, ...], batches: list[int], seconds: float
) -> list[CeilingResult]:
    """Median latency and throughput of one signature call per batch size."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures[CLASSIFY]
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        images = tf.constant(rng.integers(0, 256, (batch, *input_shape), dtype=np.uint8))
        call = functools.partial(signature, images=images)
        probe = statistics.median(time_calls(call, repeats=5))
        repeats = max(10, int(seconds / max(probe, 1e-5)))
        median = statistics.median(time_calls(call, repeats, warmup=0))
        results.append(CeilingResult(batch, median * 1000, batch / median))
    return results
