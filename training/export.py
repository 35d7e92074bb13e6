"""Export a trained model as a versioned SavedModel with its model card, atomically."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from convbridge.card import (
    CHANNEL_MODES,
    DatasetInfo,
    Evaluation,
    InputInfo,
    LayerInfo,
    ModelCard,
    TrainingInfo,
    write_card,
)
from convbridge.layout import TEMPORARY_PREFIX, next_version, validate_model_name
from convbridge.signatures import (
    CLASS_INDEX,
    CLASSIFY,
    EXPLAIN,
    FEATURE_MAPS,
    INPUT,
    PROBABILITIES,
    SIGNATURES,
)
from training.data import Dataset
from training.explain import check_explanations, explain_function, explained_layer
from training.train import TrainConfig, TrainResult, predict_probabilities
from training.variants import exposed_layers, get_variant

# A rename can lose a race with another exporter taking the same number; try the next one.
_RENAME_ATTEMPTS = 20
_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The exported SavedModel does not behave like the Keras model it came from."""


def make_card(name: str, dataset: Dataset, config: TrainConfig, result: TrainResult) -> ModelCard:
    """The model card of a freshly trained model; the version is filled in at export."""
    model = result.model
    height, width, channels = dataset.input_shape
    layers = tuple(
        LayerInfo(
            name=layer.name,
            shape=tuple(int(side) for side in layer.output.shape[1:]),
            kind="map" if len(layer.output.shape) == 4 else "vector",
        )
        for layer in exposed_layers(model)
    )
    return ModelCard(
        name=name,
        version=0,
        variant=config.variant,
        bridge=get_variant(config.variant).bridge,
        options=dict(result.options),
        input=InputInfo(shape=(height, width, channels), channels=CHANNEL_MODES[channels]),
        classes=dataset.class_names,
        layers=layers,
        parameters=int(model.count_params()),
        dataset=DatasetInfo(
            name=dataset.name,
            source=dataset.source,
            train_samples=len(dataset.train),
            validation_samples=len(dataset.validation),
            test_samples=len(dataset.test),
            seed=dataset.seed,
        ),
        training=TrainingInfo(
            epochs_requested=config.epochs,
            epochs_run=result.epochs_run,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            optimizer="adam",
            early_stopping_patience=config.patience,
            strategy=result.strategy,
            replicas=result.replicas,
            seconds=result.seconds,
        ),
        evaluation=Evaluation(
            accuracy=round(result.accuracy, 6),
            loss=round(result.loss, 6),
            samples=len(dataset.test),
        ),
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        signatures=(*SIGNATURES, EXPLAIN),
        explain_layer=explained_layer(model),
    )


def build_archive(model: keras.Model, card: ModelCard) -> keras.export.ExportArchive:
    """An ExportArchive with the serving_default, feature_maps and explain signatures."""
    feature_model = keras.Model(
        model.inputs, {layer.name: model.get_layer(layer.name).output for layer in card.layers}
    )
    spec = tf.TensorSpec([None, *card.input.shape], tf.uint8, name=INPUT)

    def classify(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {PROBABILITIES: model(images, training=False)}

    def feature_maps(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return feature_model(images, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(feature_model)
    archive.add_endpoint(CLASSIFY, classify, input_signature=[spec])
    archive.add_endpoint(FEATURE_MAPS, feature_maps, input_signature=[spec])
    height, width, _ = card.input.shape
    explain, explainer = explain_function(model, height, width)
    archive.track(explainer)
    classes = tf.TensorSpec([None], tf.int32, name=CLASS_INDEX)
    archive.add_endpoint(EXPLAIN, explain, input_signature=[spec, classes])
    return archive


def export_model(model: keras.Model, card: ModelCard, repository: Path, sample: np.ndarray) -> Path:
    """Write ``model`` to ``repository/<card.name>/<next version>/`` and return that folder.

    The SavedModel and card are written to a hidden temporary folder, checked against the Keras
    model on ``sample`` images, then renamed into place, so a reader never sees half a model.
    """
    model_dir = Path(repository) / validate_model_name(card.name)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}"
    try:
        build_archive(model, card).write_out(str(staging), verbose=False)
        verify_export(staging, model, card, sample)
        return _publish(staging, model_dir, card)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify_export(path: Path, model: keras.Model, card: ModelCard, sample: np.ndarray) -> None:
    """Raise ExportError unless the SavedModel at ``path`` matches the Keras model."""
    loaded = tf.saved_model.load(str(path))
    images = tf.constant(sample, dtype=tf.uint8)
    served = loaded.signatures[CLASSIFY](**{INPUT: images})[PROBABILITIES].numpy()
    expected = predict_probabilities(model, sample)
    difference = float(np.max(np.abs(served - expected)))
    if difference > _TOLERANCE:
        raise ExportError(f"serving_default differs from the Keras model by {difference:.2e}")
    maps = loaded.signatures[FEATURE_MAPS](**{INPUT: images})
    if set(maps) != set(card.layer_names):
        raise ExportError(f"feature_maps outputs {sorted(maps)} != card layers {card.layer_names}")
    for layer in card.layers:
        if tuple(maps[layer.name].shape[1:]) != layer.shape:
            raise ExportError(f"layer {layer.name}: {maps[layer.name].shape[1:]} != {layer.shape}")
    try:
        check_explanations(loaded.signatures[EXPLAIN], model, sample, expected)
    except ValueError as error:
        raise ExportError(f"explain: {error}") from None


def _publish(staging: Path, model_dir: Path, card: ModelCard) -> Path:
    for _ in range(_RENAME_ATTEMPTS):
        version = next_version(model_dir)
        write_card(staging, dataclasses.replace(card, version=version))
        target = model_dir / str(version)
        try:
            # One rename publishes the whole folder. POSIX refuses to rename onto a non-empty
            # folder, so a concurrent exporter that took this number first makes us retry.
            staging.rename(target)
        except OSError:
            if target.exists():
                continue
            raise
        return target
    raise ExportError(f"could not claim a version number in {model_dir}")
