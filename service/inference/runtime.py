"""TensorFlow set-up for serving: threads, device choice, GPU memory. Called once, at start-up."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from service.settings import Settings

log = logging.getLogger("convbridge.runtime")


class DeviceError(RuntimeError):
    """The requested device is not available."""


class CallCount:
    """Model calls under way in this process, over every model and thread.

    A call that starts when no other is under way may spread over every core (a model's lone
    copy); one that starts beside another keeps to its own core. How long the oldest has run
    goes into the executor's heartbeat: a call that never returns (a wedged device, a stuck
    kernel) leaves the event loop turning, and only its age shows the executor is hung.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._started: dict[int, float] = {}  # in the order the calls started

    @contextlib.contextmanager
    def call(self) -> Iterator[bool]:
        """Count one call for the block's duration; yields whether it started alone."""
        key = next(self._keys)
        with self._lock:
            alone = not self._started
            self._started[key] = time.monotonic()
        try:
            yield alone
        finally:
            with self._lock:
                del self._started[key]

    def oldest(self) -> float | None:
        """When (``time.monotonic()``) the longest-running call under way started; None: none."""
        with self._lock:
            return next(iter(self._started.values()), None)


@dataclass(frozen=True)
class Runtime:
    device: str  # a TensorFlow device string such as "/GPU:0"
    kind: str  # "cpu" or "gpu"
    description: str
    # The event loop does nothing but feed the batchers (the model executor's): an idle
    # batcher may run a lone request on it (see Batcher's run_idle_inline).
    dedicated_loop: bool = False
    batch_threads: int = 1  # batches of one model that may run at once
    # Intra-op threads of each model's lone copy (see LoadedModel.run); 0: no copy.
    lone_threads: int = 0
    thread_spinning: bool = False  # the lone copies' pools spin as the eager context's do
    calls: CallCount = field(default_factory=CallCount, compare=False)


def configure_tensorflow(settings: Settings) -> Runtime:
    """Apply thread and GPU settings before TensorFlow initialises, and pick the device.

    On a CPU with more than one core, each model gets a lone copy by default
    (``lone_threads``): batches then run on one core each, up to one per core at once, and a
    call that starts alone runs on the copy, whose ops use every core (a light model's copy
    has one thread and runs its batches too, see LoadedModel._add_lone_copy). An op split
    across cores waits for its slower part, and the front ends and the executor's loop take
    CPU from any of them at random; with one core per batch nothing waits, and the copy keeps
    a lone request as fast as TensorFlow's default pools (docs/throughput.md).
    """
    import tensorflow as tf

    running = _tensorflow_running()
    if running:
        log.warning(
            "TensorFlow is already initialised: its threads stay as they are (spinning, pool "
            "sizes) and models get no lone copy"
        )
    else:
        _set_thread_spinning(settings.thread_spinning)
    gpus = tf.config.list_physical_devices("GPU")
    if settings.device == "gpu" and not gpus:
        raise DeviceError(
            "CONVBRIDGE_DEVICE=gpu but TensorFlow sees no GPU: install the CUDA build "
            "(tensorflow[and-cuda]) and expose the GPU, or set CONVBRIDGE_DEVICE=auto"
        )
    on_cpu = settings.device == "cpu" or not gpus
    lone, intra, batch_threads = _plan_threads(settings, on_cpu, running)
    if lone:
        # Each session (the lone copies) gets the intra-op pool its config asks for, beside
        # the eager context's; otherwise every session shares the eager context's pool. Read
        # once, when TensorFlow creates its first CPU device.
        os.environ["TF_OVERRIDE_GLOBAL_THREADPOOL"] = "1"
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if settings.inter_op_threads and not running:
        tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
    if on_cpu:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        threads = f"{intra or 'default'} intra-op thread(s) a batch, {batch_threads} at once"
        if lone:
            threads += f", a lone call on {lone} threads"
        device, kind, description = "/CPU:0", "cpu", f"CPU ({threads}; {cpu_kernels()})"
    else:
        _configure_gpus(tf, gpus, settings.gpu_memory_limit_mb)
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        device, kind, description = "/GPU:0", "gpu", f"{name}"
    runtime = Runtime(
        device,
        kind,
        description,
        batch_threads=batch_threads,
        lone_threads=lone,
        thread_spinning=settings.thread_spinning,
    )
    log.info("inference device: %s (%s)", runtime.device, runtime.description)
    return runtime


def cpu_kernels() -> str:
    """Whose kernels TensorFlow runs on the CPU, and who chose them.

    oneDNN's are TensorFlow's default on x86 CPUs with AVX-512 VNNI, BF16 or AMX, Eigen's on
    the others, and ``TF_ENABLE_ONEDNN_OPTS`` (read once, as TensorFlow loads) overrides the
    default. The choice moves a model's speed more than most settings here, and not all one
    way: on an AVX2 CPU, oneDNN on made `gap` 1.24 times faster at 64 connections and a lone
    `gap` request 0.45 ms slower (README, *TensorFlow's CPU kernels*).
    """
    try:  # TensorFlow's own answer: the variable and the CPU together
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return "oneDNN kernels unknown"
    state = "on" if _pywrap_util_port.IsMklEnabled() else "off"
    asked = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if asked is None:
        return f"oneDNN kernels {state}, TensorFlow's default for this CPU"
    return f"oneDNN kernels {state}, TF_ENABLE_ONEDNN_OPTS={asked}"


def _plan_threads(settings: Settings, on_cpu: bool, running: bool) -> tuple[int, int, int]:
    """(lone copy's threads, intra-op threads of the batches, batches at once); 0: not set.

    The lone copy is on by default on a CPU with more than one core; with it, a batch takes
    one core and one batch per core may run at once. Explicit settings win.
    """
    cores = usable_cores()
    lone = 0
    if on_cpu and not running:
        default = cores if cores > 1 else 0
        lone = settings.lone_threads if settings.lone_threads is not None else default
    intra = 0 if running else settings.intra_op_threads or (1 if lone else 0)
    batch_threads = settings.batch_threads or (cores if lone else 1)
    return lone, intra, batch_threads


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its affinity (a container's cpuset, taskset), capped
    by a cgroup v2 CPU quota (docker --cpus, a Kubernetes CPU limit), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # cgroup v1 or no cgroup file system: the affinity alone
    return cores


def _set_thread_spinning(spinning: bool) -> None:
    """Whether TensorFlow's pool threads spin before they sleep once their queue is empty.

    They spin by default, which suits a process that only runs TensorFlow. Here a front end
    and the executor's event loop share the cores with those threads, and their spinning took
    CPU both needed: off, `gap` at 64 connections serves about 10% more (0.202 -> 0.187 ms of
    executor CPU a request) and a lone request is 0.1 ms faster (docs/throughput.md).
    The switch is ConfigProto's, which TensorFlow's public API does not reach; it must be set
    before the eager context initialises, when it reads the config.
    """
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    eager = context.context()
    config = config_pb2.ConfigProto()
    if eager._config is not None:
        config.CopyFrom(eager._config)
    config.experimental.disable_thread_spinning = not spinning
    eager._config = config


def _tensorflow_running() -> bool:
    """Whether TensorFlow's eager context has initialised: its configuration is fixed then."""
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None


def _configure_gpus(tf: object, gpus: list[object], memory_limit_mb: int | None) -> None:
    config = tf.config  # type: ignore[attr-defined]
    for gpu in gpus:
        if memory_limit_mb:
            # A memory limit is a logical device configuration, which excludes memory growth.
            config.set_logical_device_configuration(
                gpu, [config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
            )
        else:
            config.experimental.set_memory_growth(gpu, True)


def freeze_startup_heap() -> None:
    """Move everything imported so far (TensorFlow, Keras, the app) out of the collector's
    reach, before any model loads: a full collection then scans only what came later, 5 ms
    instead of 165 ms, so :func:`release_memory` does not stall the event loop."""
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    """Give an unloaded model's memory back to the system.

    A loaded SavedModel holds reference cycles, so its tensors wait for the cyclic garbage
    collector; without a collection each reload of `flatten` (100 MB of weights) kept about
    11 MiB. ``malloc_trim`` then returns the freed heap pages to the OS (glibc only).
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the memory is still free for reuse, just not returned


def exit_past_stuck_calls(code: int) -> NoReturn:
    """End the process at once with ``code``; called once everything it owes is answered.

    A thread stuck in TensorFlow (a load past CONVBRIDGE_LOAD_TIMEOUT_S, a call on a wedged
    device) cannot be stopped, and a normal exit first joins every model's worker threads
    (concurrent.futures does so at exit), so the process would never end. Logs and output
    are flushed first; TensorFlow's teardown, which frees nothing the exit does not, is skipped.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
