"""The in-process ceiling: the SavedModel's serving_default called directly."""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convbridge.signatures import CLASSIFY
from training.report import time_calls


@dataclass(frozen=True)
class CeilingResult:
    batch: int
    median_ms: float
    images_per_second: float


class Ceiling:
    """One SavedModel's classify signature, loaded once and timed as often as asked."""

    def __init__(self, path: Path, input_shape: tuple[int, ...]) -> None:
        import tensorflow as tf

        self._signature: Any = tf.saved_model.load(str(path)).signatures[CLASSIFY]
        self._input_shape = input_shape

    def measure(self, batch: int, seconds: float) -> CeilingResult:
        """Median latency and throughput of one call of ``batch`` images, over ``seconds``."""
        import tensorflow as tf

        rng = np.random.default_rng(0)
        images = tf.constant(rng.integers(0, 256, (batch, *self._input_shape), dtype=np.uint8))
        call = functools.partial(self._signature, images=images)
        probe = statistics.median(time_calls(call, repeats=5))
        repeats = max(10, int(seconds / max(probe, 1e-5)))
        median = statistics.median(time_calls(call, repeats, warmup=0))
        return CeilingResult(batch, median * 1000, batch / median)


def measure_ceiling(
    path: Path, input_shape: tuple[int, ...], batches: list[int], seconds: float
) -> list[CeilingResult]:
    """Median latency and throughput of one signature call per batch size."""
    ceiling = Ceiling(path, input_shape)
    return [ceiling.measure(batch, seconds) for batch in batches]
