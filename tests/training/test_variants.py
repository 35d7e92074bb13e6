"""Every builder, two input shapes, stable layer names, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from training.variants import (
    BROADCAST_METHODS,
    VARIANTS,
    build_model,
    exposed_layers,
    resolve_options,
)

SHAPES = [(28, 28, 1), (32, 32, 3)]
EXPECTED_LAYERS = {
    "flatten": ["conv1", "conv2", "conv3", "bridge", "dense"],
    "conv_pool": ["conv1", "conv2", "pool", "bridge", "dense"],
    "gap": ["conv1", "pool1", "conv2", "pool2", "conv3", "bridge"],
    "gmp": ["conv1", "pool1", "conv2", "pool2", "conv3", "bridge", "dense"],
    "residual_gap": [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "residual_conv1",
        "residual_conv2",
        "residual_add",
        "residual_relu",
        "bridge",
    ],
    "global_context": [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "conv3",
        "context_pool",
        "context",
        "context_concat",
        "context_mix",
        "bridge",
    ],
}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builder_takes_raw_pixels_and_names_its_layers(variant: str, shape) -> None:
    model = build_model(variant, shape, num_classes=7)
    assert model.input.dtype == "uint8"
    assert tuple(model.input.shape) == (None, *shape)
    assert tuple(model.output.shape) == (None, 7)
    assert [layer.name for layer in exposed_layers(model)] == EXPECTED_LAYERS[variant]
    images = np.random.default_rng(0).integers(0, 256, (3, *shape), dtype=np.uint8)
    probabilities = np.asarray(model(images))
    np.testing.assert_allclose(probabilities.sum(axis=1), np.ones(3), rtol=1e-5)


def test_flatten_bridge_size_follows_the_input_shape() -> None:
    # No pooling: every position of conv3's 128 channels becomes a feature.
    for side, channels in ((28, 1), (32, 3)):
        model = build_model("flatten", (side, side, channels), 10)
        assert model.get_layer("bridge").output.shape[1] == side * side * 128


def test_larger_inputs_build() -> None:
    model = build_model("global_context", (96, 64, 3), 4, {"broadcast": "tile"})
    assert tuple(model.get_layer("context").output.shape) == (None, 24, 16, 128)


def test_broadcast_methods_give_the_same_context_map() -> None:
    import keras

    models = {
        m: build_model("global_context", (28, 28, 1), 10, {"broadcast": m})
        for m in BROADCAST_METHODS
    }
    weights = models["resize"].get_weights()
    images = np.random.default_rng(1).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    maps = {}
    for method, model in models.items():
        model.set_weights(weights)
        probe = keras.Model(model.input, [model.get_layer("context").output, model.output])
        maps[method] = [np.asarray(t) for t in probe(images)]
    pooled = maps["resize"][0][:, :1, :1, :]
    np.testing.assert_allclose(maps["resize"][0], np.broadcast_to(pooled, maps["resize"][0].shape))
    for method in ("upsample", "tile"):
        np.testing.assert_allclose(maps[method][0], maps["resize"][0], rtol=1e-6)
        np.testing.assert_allclose(maps[method][1], maps["resize"][1], rtol=1e-6)


def test_unknown_variant_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown variant 'vgg'") as error:
        build_model("vgg", (28, 28, 1), 10)
    for name in VARIANTS:
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("variant", "shape", "classes", "options", "message"),
    [
        ("global_context", (28, 28, 1), 10, {"broadcast": "nearest"}, "resize, upsample, tile"),
        ("gap", (28, 28, 1), 10, {"broadcast": "tile"}, "takes no option 'broadcast'"),
        ("gap", (28, 28, 2), 10, None, "channels must be 1"),
        ("gap", (4, 28, 1), 10, None, "at least 8 pixels"),
        ("gap", (28, 28), 10, None, "(height, width, channels)"),
        ("gap", (28, 28, 1), 1, None, "num_classes must be at least 2"),
    ],
)
def test_bad_arguments_raise_clear_errors(variant, shape, classes, options, message) -> None:
    with pytest.raises(ValueError, match=None) as error:
        build_model(variant, shape, classes, options)
    assert message in str(error.value)


def test_options_get_defaults() -> None:
    assert resolve_options("global_context") == {"broadcast": "resize"}
    assert resolve_options("global_context", {"broadcast": "tile"}) == {"broadcast": "tile"}
    assert resolve_options("flatten") == {}
