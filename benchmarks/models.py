"""The benchmark's model: a variant at CIFAR-10's 32x32x3, exported by training/ as usual.

Its weights are untrained (throughput does not depend on them), which its card says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convbridge.layout import list_versions, version_dir


def export_benchmark_model(
    repository: Path, variant: str = "flatten", input_shape: tuple[int, int, int] = (32, 32, 3)
) -> Path:
    """Export ``variant`` at ``input_shape`` into ``repository`` (once) and return its folder."""
    existing = list_versions(repository / variant)
    if existing:
        return version_dir(repository, variant, existing[-1])
    import keras

    from training.data import Dataset, Split
    from training.export import export_model, make_card
    from training.train import TrainConfig, TrainResult
    from training.variants import build_model, resolve_options

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, *input_shape), dtype=np.uint8)
    split = Split(images, np.arange(16) % 10)
    classes = tuple(f"class{i}" for i in range(10))
    dataset = Dataset(
        "random-uint8", "untrained weights: for benchmarks only", classes, split, split, split, 0
    )
    options = resolve_options(variant)
    model = build_model(variant, input_shape, len(classes), options)
    result = TrainResult(model, options, 0, 0.0, 0.0, 0.0, "none (untrained)", 1)
    card = make_card(variant, dataset, TrainConfig(variant=variant), result)
    return export_model(model, card, repository, images[:4])
