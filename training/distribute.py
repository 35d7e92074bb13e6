"""Choose the tf.distribute strategy: the one training path from one CPU to many machines."""

from __future__ import annotations

import os

import tensorflow as tf


def select_strategy(cpu_devices: int = 1) -> tf.distribute.Strategy:
    """The strategy for this process; call it before any other TensorFlow work.

    - ``TF_CONFIG`` set: MultiWorkerMirroredStrategy across the cluster it describes.
    - ``cpu_devices > 1``: the CPU split into that many logical devices under MirroredStrategy,
      which exercises the multi-replica path on a machine without GPUs.
    - several GPUs: MirroredStrategy over all of them; one GPU: that GPU; otherwise the default.
    """
    if cpu_devices < 1:
        raise ValueError(f"cpu_devices must be at least 1, not {cpu_devices}")
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_devices > 1:
        return _mirrored_cpus(cpu_devices)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if gpus:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def _mirrored_cpus(count: int) -> tf.distribute.Strategy:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            "logical CPU devices must be configured before TensorFlow initialises: "
            "select the strategy first thing in the process"
        ) from error
    devices = [f"/cpu:{index}" for index in range(count)]
    # NCCL all-reduce is GPU-only; reduce through one device instead.
    return tf.distribute.MirroredStrategy(
        devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def describe(strategy: tf.distribute.Strategy) -> str:
    """A short name for the model card, such as 'MirroredStrategy'."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    name = type(strategy).__name__
    return "default (one device)" if name == "_DefaultDistributionStrategy" else name
