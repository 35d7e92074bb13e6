"""Dynamic batching: many requests, one model call. Knows nothing of HTTP or TensorFlow."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

Outputs = Mapping[str, np.ndarray]
RunBatch = Callable[[np.ndarray], Outputs]


class QueueFullError(Exception):
    """The queue holds ``max_queue`` images already; the caller should retry later."""


class DeadlineExceededError(Exception):
    """The request's deadline passed before its batch ran."""


class BatchSizeMismatchError(RuntimeError):
    """The model returned a different number of rows than it was given."""


@dataclass(frozen=True)
class BatchStats:
    """What one request went through: time queued, time computing, size of its batch."""

    queue_seconds: float
    compute_seconds: float
    batch_size: int


@dataclass
class _Item:
    images: np.ndarray
    deadline: float
    future: asyncio.Future[tuple[Outputs, BatchStats]]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Group submitted images into batches and run each batch as one call on ``executor``.

    Contract: every batch holds at least one item and at most ``max_batch_size`` images (an
    item larger than that is split by :meth:`submit`); the first item waits at most
    ``max_delay`` seconds for others, and only while callers have announced images that are
    still on their way (see :meth:`announce`), so a lone request never waits for company that
    is not coming; rows of the outputs go back to the item they came from;
    an exception raised by ``run_batch`` reaches every item of its batch; items whose deadline
    passed before their batch started get DeadlineExceededError and are not computed. Up to
    ``concurrency`` batches run at once (TF Serving's num_batch_threads): a second batch fills
    the cores while the first is in a step that uses only one.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor,
        max_batch_size: int = 32,
        max_delay: float = 0.002,
        max_queue: int = 512,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch_size < 1 or max_delay < 0 or max_queue < max_batch_size or concurrency < 1:
            raise ValueError(
                "need max_batch_size >= 1, max_delay >= 0, max_queue >= max_batch_size, "
                "concurrency >= 1"
            )
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._items: collections.deque[_Item] = collections.deque()
        self._queued_images = 0
        self._announced = 0
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def queued_images(self) -> int:
        return self._queued_images

    def admit(self) -> None:
        """Let one more request in, or refuse it at once with QueueFullError.

        Called before the request's body is read, so an overloaded model costs a refused
        client nothing but the round trip. An admitted request counts as one announced image
        until it knows its images: it then withdraws that one and announces them.
        """
        if self._closed:
            raise QueueFullError("the batcher is shutting down")
        pending = self._queued_images + self._announced
        if pending >= self.max_queue:
            raise QueueFullError(
                f"{pending} images are queued or on their way; the limit is {self.max_queue}"
            )
        self._announced += 1

    def announce(self, count: int) -> None:
        """Say that ``count`` images will be submitted soon (they are being decoded)."""
        self._announced += count

    def withdraw(self, count: int) -> None:
        """Take back an announcement that will not be submitted (decoding failed)."""
        self._announced = max(0, self._announced - count)
        self._arrived.set()  # a waiting batch may not need to wait any longer

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def close(self) -> None:
        """Stop taking work, let queued work finish, then stop the background task."""
        self._closed = True
        while self._items or self._running:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(
        self, images: np.ndarray, timeout: float, announced: int = 0
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        """Run ``images`` (n, ...) through the model; returns outputs with n rows each.

        ``announced``: how many of these images an earlier :meth:`announce` promised.
        """
        self._announced = max(0, self._announced - announced)
        if self._closed:
            raise QueueFullError("the batcher is shutting down")
        count = len(images)
        if self._queued_images + count > self.max_queue:
            raise QueueFullError(
                f"{self._queued_images} images are queued; the limit is {self.max_queue}"
            )
        self.start()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        items = []
        for start in range(0, count, self.max_batch_size):
            chunk = images[start : start + self.max_batch_size]
            items.append(_Item(chunk, deadline, loop.create_future()))
        for item in items:
            self._items.append(item)
        self._queued_images += count
        self._on_depth(self._queued_images)
        self._arrived.set()
        try:
            parts = await asyncio.wait_for(
                asyncio.gather(*(item.future for item in items)),
                timeout=max(0.0, deadline - time.monotonic()),
            )
        except TimeoutError:
            raise DeadlineExceededError(f"no answer within {timeout:.3g} s") from None
        finally:
            for item in items:
                if not item.future.done():
                    item.future.cancel()  # dropped from its batch if not yet started
        return _join(parts)

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()  # at most `concurrency` batches in flight
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Item]) -> None:
        """One model call for ``batch``; rows go back to their items, errors to all of them."""
        try:
            started = time.monotonic()
            stacked = np.concatenate([item.images for item in batch])
            self._on_batch(len(stacked))
            try:
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run_batch, stacked
                )
                _check_rows(outputs, len(stacked))
            except Exception as error:  # every item of the batch learns of it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            compute = time.monotonic() - started
            offset = 0
            for item in batch:
                rows = slice(offset, offset + len(item.images))
                offset = rows.stop
                if not item.future.done():
                    stats = BatchStats(started - item.enqueued, compute, len(stacked))
                    item.future.set_result(({k: v[rows] for k, v in outputs.items()}, stats))
        finally:
            self._slots.release()

    async def _collect(self) -> list[_Item]:
        """Wait for the first item, then up to max_delay for announced ones, up to a full batch."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        flush_at = time.monotonic() + self.max_delay
        while self._announced > 0 and self._queued_images < self.max_batch_size:
            remaining = flush_at - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return self._take()

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        now = time.monotonic()
        while self._items and size + len(self._items[0].images) <= self.max_batch_size:
            item = self._items.popleft()
            self._queued_images -= len(item.images)
            if item.future.done():
                continue  # cancelled: its client gave up, compute nothing for it
            if now >= item.deadline:
                item.future.set_exception(DeadlineExceededError("the deadline passed in the queue"))
                continue
            batch.append(item)
            size += len(item.images)
        self._on_depth(self._queued_images)
        return batch


def _check_rows(outputs: Outputs, expected: int) -> None:
    for name, value in outputs.items():
        if len(value) != expected:
            raise BatchSizeMismatchError(
                f"output {name!r} has {len(value)} rows for {expected} images"
            )


def _join(parts: list[tuple[Outputs, BatchStats]]) -> tuple[dict[str, np.ndarray], BatchStats]:
    """Put the chunks of one request back together; stats describe its slowest chunk."""
    if len(parts) == 1:
        outputs, stats = parts[0]
        return dict(outputs), stats
    joined = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
    stats = BatchStats(
        queue_seconds=max(p[1].queue_seconds for p in parts),
        compute_seconds=sum(p[1].compute_seconds for p in parts),
        batch_size=max(p[1].batch_size for p in parts),
    )
    return joined, stats
