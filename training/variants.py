"""The bridge variants: how the output of a Conv2D stack reaches the classifier.

Every builder is a small pure function of (input_shape, num_classes) returning a Functional
Keras model that takes raw uint8 pixels. Layers a user may ask feature maps of have stable names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers

from convbridge.signatures import INPUT as INPUT_NAME  # the Input layer is named after it
from convbridge.signatures import PROBABILITIES as OUTPUT_NAME

BROADCAST_METHODS = ("resize", "upsample", "tile")
# Layers that are plumbing rather than something to look at.
HIDDEN_LAYERS = frozenset({INPUT_NAME, "rescale", OUTPUT_NAME})
MIN_SIDE = 8


@keras.saving.register_keras_serializable(package="convbridge")
class TileToSize(layers.Layer):
    """Broadcast a (1, 1, c) map back to (height, width, c) with tf.tile semantics."""

    def __init__(self, height: int, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.height = height
        self.width = width

    def call(self, inputs: Any) -> Any:
        return keras.ops.tile(inputs, (1, self.height, self.width, 1))

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "height": self.height, "width": self.width}


def _inputs(input_shape: tuple[int, int, int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The uint8 input and its rescaled float view: preprocessing lives inside the model."""
    images = keras.Input(shape=input_shape, dtype="uint8", name=INPUT_NAME)
    return images, layers.Rescaling(1.0 / 255.0, name="rescale")(images)


def _conv(x: keras.KerasTensor, filters: int, name: str, **kwargs: Any) -> keras.KerasTensor:
    kwargs.setdefault("activation", "relu")
    return layers.Conv2D(filters, 3, padding="same", name=name, **kwargs)(x)


def _stem(x: keras.KerasTensor) -> keras.KerasTensor:
    """conv1 (32) -> pool1 -> conv2 (64) -> pool2 -> conv3 (128): the shared Conv2D stack."""
    x = _conv(x, 32, "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv(x, 64, "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)
    return _conv(x, 128, "conv3")


def _classifier(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    return layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)


def build_flatten(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Conv2D x3 (32, 64, 128) -> Flatten -> Dense(128) -> Dense, no pooling.

    Flattening a full-resolution map is what makes the first Dense layer hold most of the
    parameters (28x28x128 features into 128 units); the report shows what that costs.
    """
    images, x = _inputs(input_shape)
    x = _conv(x, 32, "conv1")
    x = _conv(x, 64, "conv2")
    x = _conv(x, 128, "conv3")
    x = layers.Flatten(name="bridge")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    return keras.Model(images, _classifier(x, num_classes), name="flatten")


def build_conv_pool(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Conv2D -> Conv2D -> MaxPooling2D -> Flatten -> Dense(128) -> Dense."""
    images, x = _inputs(input_shape)
    x = _conv(x, 32, "conv1")
    x = _conv(x, 64, "conv2")
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="bridge")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    return keras.Model(images, _classifier(x, num_classes), name="conv_pool")


def build_gap(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Conv2D stack -> GlobalAveragePooling2D -> Dense."""
    images, x = _inputs(input_shape)
    x = layers.GlobalAveragePooling2D(name="bridge")(_stem(x))
    return keras.Model(images, _classifier(x, num_classes), name="gap")


def build_gmp(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Conv2D stack -> GlobalMaxPooling2D -> Dense(128) -> Dense."""
    images, x = _inputs(input_shape)
    x = layers.GlobalMaxPooling2D(name="bridge")(_stem(x))
    x = layers.Dense(128, activation="relu", name="dense")(x)
    return keras.Model(images, _classifier(x, num_classes), name="gmp")


def build_residual_gap(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Conv2D -> residual block (two 3x3 Conv2D, Add) -> GlobalAveragePooling2D -> Dense."""
    images, x = _inputs(input_shape)
    x = _conv(x, 32, "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv(x, 64, "conv2")
    shortcut = layers.MaxPooling2D(2, name="pool2")(x)
    x = _conv(shortcut, 64, "residual_conv1")
    x = _conv(x, 64, "residual_conv2", activation=None)
    x = layers.Add(name="residual_add")([shortcut, x])
    x = layers.ReLU(name="residual_relu")(x)
    x = layers.GlobalAveragePooling2D(name="bridge")(x)
    return keras.Model(images, _classifier(x, num_classes), name="residual_gap")


def _broadcast(context: keras.KerasTensor, height: int, width: int, method: str) -> Any:
    """Spread a (1, 1, c) context vector over a (height, width) map with the chosen layer."""
    if method == "resize":
        return layers.Resizing(height, width, interpolation="nearest", name="context")(context)
    if method == "upsample":
        return layers.UpSampling2D(size=(height, width), name="context")(context)
    return TileToSize(height, width, name="context")(context)


def build_global_context(
    input_shape: tuple[int, int, int], num_classes: int, broadcast: str = "resize"
) -> keras.Model:
    """Conv2D stack -> 1x1 average -> broadcast back -> concat -> 1x1 Conv2D -> GAP -> Dense."""
    if broadcast not in BROADCAST_METHODS:
        raise ValueError(
            f"unknown broadcast method {broadcast!r}; choose one of {', '.join(BROADCAST_METHODS)}"
        )
    images, x = _inputs(input_shape)
    features = _stem(x)
    height, width = features.shape[1], features.shape[2]
    context = layers.GlobalAveragePooling2D(keepdims=True, name="context_pool")(features)
    context = _broadcast(context, height, width, broadcast)
    x = layers.Concatenate(name="context_concat")([features, context])
    x = layers.Conv2D(128, 1, activation="relu", name="context_mix")(x)
    x = layers.GlobalAveragePooling2D(name="bridge")(x)
    return keras.Model(images, _classifier(x, num_classes), name="global_context")


@dataclass(frozen=True)
class Variant:
    """A registered builder, the bridge it demonstrates and the options it accepts."""

    builder: Callable[..., keras.Model]
    bridge: str
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    "flatten": Variant(build_flatten, "Flatten"),
    "conv_pool": Variant(build_conv_pool, "Conv2D + MaxPooling2D + Flatten"),
    "gap": Variant(build_gap, "GlobalAveragePooling2D"),
    "gmp": Variant(build_gmp, "GlobalMaxPooling2D"),
    "residual_gap": Variant(build_residual_gap, "residual block + GlobalAveragePooling2D"),
    "global_context": Variant(
        build_global_context,
        "global context (average to 1x1, broadcast back, concatenate, 1x1 Conv2D)",
        options={"broadcast": BROADCAST_METHODS},
        defaults={"broadcast": "resize"},
    ),
}


def get_variant(name: str) -> Variant:
    """The registered variant ``name``; ValueError listing the valid names otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def resolve_options(name: str, options: dict[str, str] | None = None) -> dict[str, str]:
    """The variant's options with defaults filled in; ValueError for unknown keys or values."""
    variant = get_variant(name)
    resolved = dict(variant.defaults)
    for key, value in (options or {}).items():
        if key not in variant.options:
            allowed = ", ".join(variant.options) or "none"
            raise ValueError(f"variant {name!r} takes no option {key!r} (options: {allowed})")
        if value not in variant.options[key]:
            choices = ", ".join(variant.options[key])
            raise ValueError(f"option {key}={value!r} is invalid; choose one of {choices}")
        resolved[key] = value
    return resolved


def validate_input_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Check (height, width, channels); ValueError saying what is accepted."""
    if len(input_shape) != 3:
        raise ValueError(f"input shape must be (height, width, channels), not {input_shape}")
    height, width, channels = (int(side) for side in input_shape)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(
            f"input {height}x{width} is too small: both sides must be at least {MIN_SIDE} pixels"
        )
    return height, width, channels


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    options: dict[str, str] | None = None,
) -> keras.Model:
    """Build variant ``name`` after validating every argument."""
    variant = get_variant(name)
    shape = validate_input_shape(input_shape)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}")
    return variant.builder(shape, num_classes, **resolve_options(name, options))


def exposed_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose outputs the feature_maps signature returns, in model order."""
    return [layer for layer in model.layers if layer.name not in HIDDEN_LAYERS]
