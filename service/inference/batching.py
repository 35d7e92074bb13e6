"""Dynamic batching: many requests, one model call. Knows nothing of HTTP or TensorFlow."""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from service.inference.batch import BatchStats, Extra, Item, Outputs, Ticket, check_rows, join
from service.inference.errors import DeadlineExceededError, QueueFullError, queue_full

# run_batch(images) -> outputs; with extra inputs, run_batch(images, **extra).
RunBatch = Callable[..., Outputs]


class Batcher:
    """Group submitted images into batches and run each batch as one call on ``executor``.

    Contract: every batch holds at least one item and at most ``max_batch_size`` images (an
    item larger than that is split by :meth:`submit`); the first item waits at most
    ``max_delay`` seconds for others, and only while tickets announce images that are still on
    their way (see :meth:`reserve`), so a lone request never waits for company that is not
    coming; rows of the outputs go back to the item they came from; extra inputs (one row per
    image, all items of a batch name the same ones) are stacked like the images;
    an exception raised by ``run_batch`` reaches every item of its batch; items whose deadline
    passed before their batch started get DeadlineExceededError and are not computed. Up to
    ``concurrency`` batches run at once (TF Serving's num_batch_threads), but only for a model
    whose calls are long (:attr:`OVERLAP_MIN`): a batch on each core keeps the cores busy, while
    the short calls of a light model would mostly contend for the GIL with each other and with
    the loop (`gap`, 64 connections: 4,326 requests/s against 5,229 one at a time).
    ``on_depth`` gets the queued images whenever they, or the places tickets hold
    (:attr:`pending`), change.

    With ``run_idle_inline``, a request submitted as ``alone`` (its
    sender knows of no other under way) that finds the batcher idle (nothing queued, running
    or announced) is run at once on the calling thread, the event loop's. Its batch is the
    one it would have had, without the hand-over to the executor thread and back (about
    0.2 ms of a lone request on a 2-core VM). The loop reads nothing meanwhile, which only a
    process whose loop does nothing but feed the batchers (the model executor) can afford,
    only for a lone request (under load the loop gathers the next batch while one runs), and
    only for a model whose calls are known to be short (:attr:`INLINE_LIMIT`): a slow model
    would stall everything else the loop serves (other models, other front ends, /metrics and
    readiness) for as long as its call lasts.
    """

    # The longest model call, in seconds, that may run on the loop's thread. The estimate is
    # a running mean that halves the weight of older calls: one slow call is enough to keep
    # a slow model off the loop, one hiccup of a fast one is not enough to take it off.
    INLINE_LIMIT = 0.010
    # The shortest call, in seconds (the same estimate), for which batches overlap.
    OVERLAP_MIN = INLINE_LIMIT

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
        run_idle_inline: bool = False,
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
        self._items: collections.deque[Item] = collections.deque()
        self._queued_images = 0
        self._announced = 0
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._inline = run_idle_inline
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self._call_seconds: float | None = None  # the estimate; None until a call is timed

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def pending(self) -> int:
        """Images queued, and places held for requests whose images are on their way."""
        return self._queued_images + self._announced

    def reserve(self) -> Ticket:
        """A place for one request, or QueueFullError at once when the queue is full.

        Called before the request's body is read, so an overloaded model costs a refused
        client nothing but the round trip. The ticket counts as one announced image until
        the request knows its images (:meth:`Ticket.expect`).
        """
        if self._closed:
            raise QueueFullError("the batcher is shutting down")
        if self.pending >= self.max_queue:
            raise queue_full(self.pending, self.max_queue)
        self._announced += 1
        self._on_depth(self._queued_images)
        return Ticket(self)

    def _announce(self, change: int) -> None:
        """Tickets' announced images changed by ``change`` (negative: fewer are coming)."""
        self._announced = max(0, self._announced + change)
        self._on_depth(self._queued_images)
        if change < 0:
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
        self,
        images: np.ndarray,
        timeout: float,
        extra: Extra | None = None,
        alone: bool = False,
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        """Run ``images`` (n, ...) through the model; returns outputs with n rows each.

        ``extra``: further inputs of the call, n rows each (explain's ``class_index``).
        ``alone``: the caller knows of no other request under way (see ``run_idle_inline``).
        """
        return await self._submit(images, timeout, extra or {}, announced=0, alone=alone)

    async def _submit(
        self, images: np.ndarray, timeout: float, extra: Extra, announced: int, alone: bool
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        self._announced = max(0, self._announced - announced)
        if self._closed:
            raise QueueFullError("the batcher is shutting down")
        count = len(images)
        if self._queued_images + count > self.max_queue:
            raise QueueFullError(
                f"{self._queued_images} images are queued; the limit is {self.max_queue}"
            )
        self.start()
        if alone and self._inline and count <= self.max_batch_size and self._can_run_now():
            return self._run_now(images, extra)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        items = []
        for start in range(0, count, self.max_batch_size):
            rows = slice(start, start + self.max_batch_size)
            chunk = {name: values[rows] for name, values in extra.items()}
            items.append(Item(images[rows], deadline, loop.create_future(), chunk))
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
        return join(parts)

    def _can_run_now(self) -> bool:
        """Nothing queued, running or announced, and the model's calls are short."""
        return (
            not self._items
            and not self._running
            and not self._announced
            and self._call_seconds is not None
            and self._call_seconds <= self.INLINE_LIMIT
        )

    def _calls_are_long(self) -> bool:
        """Long enough to overlap; not known yet counts as long (a slow model's first batches
        must not wait for each other)."""
        return self._call_seconds is None or self._call_seconds >= self.OVERLAP_MIN

    def _timed(self, started: float) -> float:
        """The seconds since ``started`` of a call that just ended, folded into the estimate."""
        seconds = time.monotonic() - started
        previous = self._call_seconds
        self._call_seconds = seconds if previous is None else (previous + seconds) / 2
        return seconds

    def _run_now(
        self, images: np.ndarray, extra: Extra
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        """One batch of these images alone, on this thread: the idle batcher's shortcut."""
        started = time.monotonic()
        self._on_depth(self._queued_images)  # the ticket's announced place is gone
        self._on_batch(len(images))
        try:
            outputs = self._run_batch(images, **extra)
        finally:
            compute = self._timed(started)
        check_rows(outputs, len(images))
        return dict(outputs), BatchStats(0.0, compute, len(images))

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()  # at most `concurrency` batches in flight
            try:
                if self._running and not self._calls_are_long():
                    await asyncio.wait(set(self._running))  # short calls: one at a time
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

    async def _run(self, batch: list[Item]) -> None:
        """One model call for ``batch``; rows go back to their items, errors to all of them."""
        try:
            started = time.monotonic()
            stacked = np.concatenate([item.images for item in batch])
            extra = {
                name: np.concatenate([item.extra[name] for item in batch])
                for name in batch[0].extra
            }
            self._on_batch(len(stacked))
            try:
                try:
                    outputs = await asyncio.get_running_loop().run_in_executor(
                        self._executor, functools.partial(self._run_batch, stacked, **extra)
                    )
                finally:
                    compute = self._timed(started)
                check_rows(outputs, len(stacked))
            except Exception as error:  # every item of the batch learns of it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            offset = 0
            for item in batch:
                rows = slice(offset, offset + len(item.images))
                offset = rows.stop
                if not item.future.done():
                    stats = BatchStats(started - item.enqueued, compute, len(stacked))
                    item.future.set_result(({k: v[rows] for k, v in outputs.items()}, stats))
        finally:
            self._slots.release()

    async def _collect(self) -> list[Item]:
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

    def _take(self) -> list[Item]:
        batch: list[Item] = []
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
