"""Train one variant on a data set and evaluate it on the held-out split."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data import Dataset, Split
from training.distribute import describe
from training.variants import build_model, resolve_options


@dataclass(frozen=True)
class TrainConfig:
    variant: str
    options: dict[str, str] = field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 3
    seed: int = 0
    verbose: int | str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, not {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 or more, not {self.patience}")


@dataclass(frozen=True)
class TrainResult:
    model: keras.Model  # built outside any strategy scope, ready to export
    options: dict[str, str]
    epochs_run: int
    accuracy: float
    loss: float
    seconds: float
    strategy: str
    replicas: int


def train_variant(
    dataset: Dataset, config: TrainConfig, strategy: tf.distribute.Strategy | None = None
) -> TrainResult:
    """Train with early stopping on validation loss, then score on the held-out test split."""
    strategy = strategy or tf.distribute.get_strategy()
    options = resolve_options(config.variant, config.options)
    keras.utils.set_random_seed(config.seed)
    num_classes = len(dataset.class_names)
    with strategy.scope():
        model = build_model(config.variant, dataset.input_shape, num_classes, options)
        _compile(model, config.learning_rate)
    batch = config.batch_size * strategy.num_replicas_in_sync
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with _multi_worker_fit(model, dataset.train, strategy) if multi_worker else nullcontext():
        history = model.fit(
            _batches(dataset.train, batch, shuffle_seed=config.seed),
            validation_data=_batches(dataset.validation, batch),
            epochs=config.epochs,
            callbacks=[stop],
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=config.verbose,
        )
    seconds = time.perf_counter() - started
    # Export a plain copy: variables created under a distribution strategy are mirrored.
    plain = build_model(config.variant, dataset.input_shape, num_classes, options)
    plain.set_weights(model.get_weights())
    _compile(plain, config.learning_rate)
    loss, accuracy = plain.evaluate(_batches(dataset.test, 256), verbose=0)
    return TrainResult(
        model=plain,
        options=options,
        epochs_run=len(history.history["loss"]),
        accuracy=float(accuracy),
        loss=float(loss),
        seconds=round(seconds, 2),
        strategy=describe(strategy),
        replicas=strategy.num_replicas_in_sync,
    )


@contextmanager
def _multi_worker_fit(
    model: keras.Model, split: Split, strategy: tf.distribute.Strategy
) -> Iterator[None]:
    """Work around two Keras 3 bugs that stop ``fit`` under MultiWorkerMirroredStrategy.

    1. fit builds the optimizer and metrics from its first distributed batch through a
       cross-worker ``strategy.reduce`` that fails (keras-team/keras#20585, open). Here they
       are built from one local batch inside the scope, and that step is skipped.
    2. Each step's scalar metrics are reduced across workers with ``axis=0``, which fails on
       a scalar. Here they are averaged over the replicas with ``axis=None``, which is what
       the single-worker path computes.

    Every variable is still created by the strategy and every step still all-reduces its
    gradients: tests/training/test_distributed.py trains on two workers and checks both end
    with the same weights.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    one = (tf.constant(split.images[:1]), tf.constant(split.labels[:1]), None)
    with strategy.scope():
        model._symbolic_build(data_batch=one)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values
            )
        return original(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build  # the class's method again


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _batches(split: Split, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if shuffle_seed is not None:
        data = data.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities for a uint8 batch, as float32."""
    return np.asarray(model(tf.constant(images), training=False), dtype=np.float32)
