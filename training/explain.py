"""Grad-CAM as a SavedModel signature: where a model looked when it scored a class.

Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel of the last spatial map before the
bridge by the mean gradient of the class's pre-softmax logit over that channel, sums, and keeps
the positive part. For a GlobalAveragePooling2D bridge followed by one Dense layer it equals the
class activation map (Zhou et al., CVPR 2016), the Dense weights of the class times the maps:
:func:`check_explanations` holds every such export to that identity.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from convbridge.signatures import CLASS_INDEX, HEATMAP, INPUT, PROBABILITIES, SCORE

BRIDGE = "bridge"  # every variant names its bridge layer so (training/variants.py)
_FLAT = 1e-12  # a map whose range is below this is flat: its heatmap is all zeros
CAM_TOLERANCE = 1e-4


def explained_layer(model: keras.Model) -> str:
    """The last spatial layer before the bridge: the one whose maps Grad-CAM weighs."""
    tensor = model.get_layer(BRIDGE).input
    layer = tensor._keras_history.operation
    if len(tensor.shape) != 4:
        raise ValueError(f"the layer before {BRIDGE!r} ({layer.name}) is not spatial")
    return str(layer.name)


def explain_function(
    model: keras.Model, height: int, width: int
) -> tuple[Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]], keras.Model]:
    """The ``explain`` signature's function, and the model it calls (to be tracked)."""
    head = model.get_layer(PROBABILITIES)
    maps_and_hidden = keras.Model(model.input, [model.get_layer(BRIDGE).input, head.input])

    def explain(images: tf.Tensor, class_index: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            maps, hidden = maps_and_hidden(images, training=False)
            tape.watch(maps)
            logits = tf.matmul(hidden, head.kernel) + head.bias
            top = tf.argmax(logits, axis=1, output_type=tf.int32)
            chosen = tf.where(class_index < 0, top, class_index)
            # Each image's logit depends on its own maps only: one gradient serves the batch.
            selected = tf.gather(logits, chosen, batch_dims=1)
        gradients = tape.gradient(selected, maps)
        weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))
        score = tf.gather(tf.nn.softmax(logits), chosen, batch_dims=1)
        return {HEATMAP: scaled_heatmap(cam, height, width), CLASS_INDEX: chosen, SCORE: score}

    return explain, maps_and_hidden


def scaled_heatmap(cam: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """``[batch, h, w]`` maps at the input's resolution, each scaled to 0..1 (flat: zeros)."""
    resized = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]
    low = tf.reduce_min(resized, axis=[1, 2], keepdims=True)
    span = tf.reduce_max(resized, axis=[1, 2], keepdims=True) - low
    return tf.where(span > _FLAT, (resized - low) / tf.maximum(span, _FLAT), 0.0)


def is_cam_model(model: keras.Model) -> bool:
    """A GlobalAveragePooling2D bridge straight into the Dense head: Grad-CAM is then CAM."""
    head_input = model.get_layer(PROBABILITIES).input._keras_history.operation
    return isinstance(model.get_layer(BRIDGE), keras.layers.GlobalAveragePooling2D) and (
        head_input is model.get_layer(BRIDGE)
    )


def class_activation_map(model: keras.Model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """CAM computed the original way, without gradients: Dense weights of the class x maps."""
    height, width = images.shape[1:3]
    maps = keras.Model(model.input, model.get_layer(BRIDGE).input)(images, training=False)
    kernel = np.asarray(model.get_layer(PROBABILITIES).kernel)  # (channels, classes)
    cam = np.einsum("bhwk,kb->bhw", np.asarray(maps), kernel[:, classes])
    return np.asarray(scaled_heatmap(tf.nn.relu(cam), height, width))


def check_explanations(
    signature: Callable[..., dict[str, tf.Tensor]],
    model: keras.Model,
    sample: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    """Run ``explain`` at batch 1 and 32; raise ValueError when it is not what it promises."""
    height, width = sample.shape[1:3]
    batch = np.resize(sample, (32, *sample.shape[1:]))  # repeats the sample up to 32
    expected = np.resize(probabilities, (32, probabilities.shape[1]))
    for images, scores in ((batch[:1], expected[:1]), (batch, expected)):
        outputs = signature(**{INPUT: tf.constant(images), CLASS_INDEX: tf.fill([len(images)], -1)})
        heatmap = outputs[HEATMAP].numpy()
        chosen = outputs[CLASS_INDEX].numpy()
        if heatmap.shape != (len(images), height, width):
            raise ValueError(f"explain gave heatmaps of shape {heatmap.shape}")
        if heatmap.min() < 0 or heatmap.max() > 1 or not np.isfinite(heatmap).all():
            raise ValueError("explain gave heatmap values outside 0..1")
        if not (chosen == scores.argmax(axis=1)).all():
            raise ValueError("explain's class_index -1 is not the top-1 class")
        rows = np.arange(len(images))
        if not np.allclose(outputs[SCORE].numpy(), scores[rows, chosen], atol=1e-5):
            raise ValueError("explain's score is not the class's probability")
        if is_cam_model(model):
            cam = class_activation_map(model, images, chosen)
            worst = float(np.abs(cam - heatmap).max())
            if worst > CAM_TOLERANCE:
                raise ValueError(f"Grad-CAM differs from CAM by {worst:.2e} (allowed 1e-4)")
