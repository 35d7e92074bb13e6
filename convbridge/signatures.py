"""The names a SavedModel's signatures are called by: one place for training/ and service/."""

from __future__ import annotations

CLASSIFY = "serving_default"  # images -> probabilities
FEATURE_MAPS = "feature_maps"  # images -> one output per exposed layer
SIGNATURES = (CLASSIFY, FEATURE_MAPS)

INPUT = "images"  # the one input of every signature: uint8 [batch, height, width, channels]
PROBABILITIES = "probabilities"  # the classification signature's output: float32 [batch, classes]

# Grad-CAM, exported since the explanations issue (a card lists it when the model has it).
EXPLAIN = "explain"  # images, class_index -> heatmap, class_index, score
CLASS_INDEX = "class_index"  # int32 [batch]: the class to explain, -1 for the top-1 class
HEATMAP = "heatmap"  # float32 [batch, height, width], 0..1 per image
SCORE = "score"  # float32 [batch]: the explained class's probability
