"""A model version in memory: its SavedModel signatures, batchers, warm-up and leases."""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY
from service.inference.batching import Batcher
from service.inference.errors import ModelLoadError, unknown_signature
from service.inference.lone import LoneCopy, fastest_ms
from service.inference.runtime import Runtime
from service.inference.signatures import check_signatures, served_signatures, warm_up_inputs
from service.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import Gauge

log = logging.getLogger("convbridge.models")

# The shortest call alone, on one core, that a lone copy spreads over every core (see
# LoadedModel._add_lone_copy).
SPLIT_MIN_MS = 2.0


def padded_size(count: int, sizes: tuple[int, ...]) -> int:
    """The smallest allowed batch size that holds ``count`` images."""
    index = bisect.bisect_left(sizes, count)
    if index == len(sizes):
        raise ValueError(f"a batch of {count} is larger than the largest allowed ({sizes[-1]})")
    return sizes[index]


class LoadedModel:
    """A SavedModel in memory: its card, and one batcher per signature on its inference threads.

    Requests hold a lease (:meth:`acquire` / :meth:`release`) while they use it; unloading
    waits for them (:meth:`drain`).
    """

    def __init__(
        self,
        card: ModelCard,
        saved: Any,
        runtime: Runtime,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.card = card
        self.name = card.name
        self.version = card.version
        self.device = runtime.device
        self._saved = saved  # owns the variables the signatures read
        self._signatures = {name: saved.signatures[name] for name in served_signatures(card)}
        self._lone: LoneCopy | None = None  # see _add_lone_copy
        # Milliseconds of a call alone on one core, once timed (see _add_lone_copy).
        self.one_core_ms: float | None = None
        self._runtime = runtime
        self.executor = ThreadPoolExecutor(
            runtime.batch_threads, thread_name_prefix=f"infer-{card.name}-{card.version}"
        )
        self._batchers: dict[str, Batcher] = {}
        self._full: set[str] = set()
        # Looked up once: labels() takes a lock and hashes the labels, several times a request.
        self._depth_gauge: Gauge | None = None
        # Called when a signature's queue fills up (True) and when it has room again (False).
        self.on_pressure: Callable[[str, bool], None] = lambda signature, full: None
        self._leases = 0
        self._settings = settings
        self._metrics = metrics
        self.batch_sizes = settings.batch_sizes(runtime.kind)

    @classmethod
    def load(
        cls, path: Path, card: ModelCard, runtime: Runtime, settings: Settings, metrics: Metrics
    ) -> LoadedModel:
        """Load the SavedModel at ``path``, check its signatures and warm it up; blocking."""
        import tensorflow as tf

        with tf.device(runtime.device):
            saved = tf.saved_model.load(str(path))
        wanted = served_signatures(card)
        check_signatures({s: saved.signatures[s] for s in wanted if s in saved.signatures}, card)
        missing = [s for s in wanted if s not in saved.signatures]
        if missing:
            raise ModelLoadError(f"the SavedModel lacks signatures {missing}")
        model = cls(card, saved, runtime, settings, metrics)
        try:
            # Warm up on the inference threads themselves: that is where requests will run.
            # Submitted together, each job starts its own thread (a waited-for job frees its
            # thread for the next, which would warm one thread several times).
            threads = runtime.batch_threads
            warming = [model.executor.submit(model.warm_up, eager=True) for _ in range(threads)]
            for job in warming:
                job.result()
        except BaseException:
            model.executor.shutdown(wait=True)
            raise
        if runtime.lone_threads:
            model._add_lone_copy(path)
        return model

    @property
    def lone_threads(self) -> int:
        """Intra-op threads of the lone copy; 0: no copy."""
        return self._lone.threads if self._lone is not None else 0

    @property
    def batches_on_copy(self) -> bool:
        """Whether the lone copy runs every call, batches too: a light model's (see
        _add_lone_copy)."""
        return (
            self._lone is not None
            and self.one_core_ms is not None
            and self.one_core_ms < SPLIT_MIN_MS
        )

    def _add_lone_copy(self, path: Path) -> None:
        """Load and warm up the lone copy, on every core only for a call long enough to share.

        Every core helps a heavy model's call alone (the benchmark's `flatten`, batch 1, in
        process: 3.2 ms on two cores, 4.6 on one), but a light model's ops are too short to
        share: handing each one to the other core and waiting for it costs more than it saves
        (`gap`: 0.84 ms on two, 0.41 on one; a round trip between this VM's cores took 91-173
        us, docs/throughput.md). So the smallest batch is timed on the eager signature (one
        core, see configure_tensorflow), and a call shorter than :data:`SPLIT_MIN_MS` gets a
        copy on one thread: still a session, which skips the eager signature's argument
        handling.

        That light model's batches run on its copy too (:attr:`batches_on_copy`). The session
        runs a whole call on its one pool thread, where an eager call hands its ops between
        the eager context's inter-op threads; each hand-over waits for the other thread to be
        woken and scheduled, which a loaded machine delays. `gap` at 64 connections, one front
        end: the executor's compute threads were busy 77-79% of the time against 88-91% on
        the copy, and the service answered 1.11 times as much (docs/throughput.md). A heavy
        model's batches stay on the eager signatures: on its copy they would share (or, on
        one thread, queue for) one pool, where each now keeps a core of its own.
        """
        threads = self._runtime.lone_threads
        self.one_core_ms = self._time_alone()
        light = self.one_core_ms < SPLIT_MIN_MS
        if light:
            threads = 1
        log.info(
            "%s v%s: a call alone takes %.2f ms on one core: its lone copy gets %d thread(s)%s",
            self.name,
            self.version,
            self.one_core_ms,
            threads,
            " and runs its batches too" if light else "",
        )
        self._lone = _lone_copy(path, self.card, self._runtime, threads)
        if self._lone is None:
            return
        try:
            self.warm_up(eager=False)
        except Exception as error:
            log.warning(
                "%s v%s: its lone copy failed to warm up (%s); dropped",
                self.name,
                self.version,
                error,
            )
            self._drop_lone_copy()

    def _time_alone(self) -> float:
        """Milliseconds of the smallest batch (what a call alone is padded to) of the classify
        signature, on the eager signatures' one core: the fastest of several calls."""
        inputs = self._blank_inputs(CLASSIFY, self.batch_sizes[0])  # every model serves it
        return fastest_ms(lambda: self._call_eager(CLASSIFY, inputs))

    def _drop_lone_copy(self) -> None:
        if self._lone is not None:
            self._lone.close()
            self._lone = None

    def run(self, signature: str, images: np.ndarray, **extra: np.ndarray) -> dict[str, np.ndarray]:
        """Call one signature on a uint8 batch, padded to an allowed size; blocking.

        ``extra``: the signature's other inputs, one row per image (explain's ``class_index``,
        padded with -1: the top class).
        """
        count = len(images)
        size = padded_size(count, self.batch_sizes)
        inputs = {self.card.input.name: images, **extra}
        if size > count:
            inputs = {name: _pad(values, size) for name, values in inputs.items()}
        # A call that finds no other under way uses every core, on the lone copy; the others
        # keep to one core each (the eager signatures, see configure_tensorflow), but for a
        # light model's, which its one-thread copy runs too (see _add_lone_copy).
        with self._runtime.calls.call() as alone:
            if self._lone is not None and (alone or self.batches_on_copy):
                outputs = self._lone.run(signature, inputs)
            else:
                outputs = self._call_eager(signature, inputs)
        return {name: value[:count] for name, value in outputs.items()}

    def _call_eager(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        with tf.device(self._runtime.device):
            outputs = self._signatures[signature](
                **{name: tf.constant(values) for name, values in inputs.items()}
            )
        return {name: value.numpy() for name, value in outputs.items()}

    def warm_up(self, eager: bool) -> None:
        """Run every signature once per allowed batch size, on the eager signatures or on the
        lone copy: the first request is not slower."""
        for size in self.batch_sizes:
            for signature in self._signatures:
                inputs = self._blank_inputs(signature, size)
                if eager:
                    outputs = self._call_eager(signature, inputs)
                else:
                    assert self._lone is not None
                    outputs = self._lone.run(signature, inputs)
                if any(len(value) != size for value in outputs.values()):
                    raise ModelLoadError(f"{signature} returned the wrong batch size in warm-up")

    def _blank_inputs(self, signature: str, size: int) -> dict[str, np.ndarray]:
        """Inputs of ``size`` black images for ``signature``, its other inputs at defaults."""
        zeros = np.zeros((size, *self.card.input.shape), dtype=np.uint8)
        return {self.card.input.name: zeros, **warm_up_inputs(signature, size)}

    def start(self) -> None:
        """Create the batchers; call on the event loop."""
        labels = (self.name, str(self.version))
        for signature in self._signatures:
            batcher = Batcher(
                run_batch=functools.partial(self.run, signature),
                executor=self.executor,
                max_batch_size=self._settings.max_batch_size,
                max_delay=self._settings.max_delay_ms / 1000.0,
                max_queue=self._settings.max_queue_images,
                on_batch=self._metrics.batch_size.labels(*labels).observe,
                on_depth=functools.partial(self._report_depth, signature),
                concurrency=self._runtime.batch_threads,
                run_idle_inline=self._runtime.dedicated_loop,
            )
            self._batchers[signature] = batcher
            batcher.start()

    def batcher(self, signature: str) -> Batcher:
        """The batcher of one signature; UnknownSignatureError when the model has none."""
        try:
            return self._batchers[signature]
        except KeyError:
            raise unknown_signature(
                self.name, self.version, signature, list(self._batchers)
            ) from None

    def _report_depth(self, signature: str, _: int) -> None:
        depth = sum(batcher.queued_images for batcher in self._batchers.values())
        if self._depth_gauge is None:  # the series appears with the first request, as before
            labels = (self.name, str(self.version))
            self._depth_gauge = self._metrics.queue_depth.labels(*labels)
        self._depth_gauge.set(depth)
        batcher = self._batchers.get(signature)
        if batcher is None:
            return
        # Full when no image fits; room again once a whole batch has left (no flapping).
        if batcher.pending >= batcher.max_queue:
            full = True
        elif batcher.pending <= batcher.max_queue - batcher.max_batch_size:
            full = False
        else:
            return
        if full != (signature in self._full):
            self._full.symmetric_difference_update({signature})
            self.on_pressure(signature, full)

    def acquire(self) -> None:
        """A request starts using this version: it stays loaded until :meth:`release`."""
        self._leases += 1

    def release(self) -> None:
        self._leases -= 1

    async def drain(self, timeout: float) -> None:
        """Wait until no request holds this version, or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while self._leases > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)
        self._drop_lone_copy()


def _lone_copy(path: Path, card: ModelCard, runtime: Runtime, threads: int) -> LoneCopy | None:
    """The model's lone copy when the runtime asks for one and TF1's loader can read it.

    Without one the model is still served, its lone calls on one core: a copy is an
    optimisation, never a reason to refuse a model.
    """
    try:
        return LoneCopy(path, served_signatures(card), threads, runtime.thread_spinning)
    except Exception as error:
        log.warning(
            "%s v%s: no lone copy (%s); a call alone runs on one core",
            card.name,
            card.version,
            error,
        )
        return None


def _pad(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` with rows appended up to ``size``: zeros, or -1 for integer rows (no class)."""
    fill = -1 if values.dtype.kind == "i" else 0
    padding = np.full((size - len(values), *values.shape[1:]), fill, dtype=values.dtype)
    return np.concatenate([values, padding])
