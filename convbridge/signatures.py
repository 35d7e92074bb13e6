"""The names a SavedModel's signatures are called by: one place for training/ and service/."""

from __future__ import annotations

CLASSIFY = "serving_default"  # images -> probabilities
FEATURE_MAPS = "feature_maps"  # images -> one output per exposed layer
SIGNATURES = (CLASSIFY, FEATURE_MAPS)

INPUT = "images"  # the one input of every signature: uint8 [batch, height, width, channels]
PROBABILITIES = "probabilities"  # the classification signature's output: float32 [batch, classes]
