"""The batcher without a server: grouping, max_delay, errors, full queues, deadlines, routing.

Synchronised on events, never on the clock: a batch is "inside the model" when the model
function says it entered; "the batcher had its chance" is a number of event-loop turns; a wait
that must not happen is given a minute, so it would show as a failed deadline, not as a slow
test. The one lower bound on time left is the max_delay a request must have waited.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.inference.batching import Batcher
from service.inference.errors import (
    BatchSizeMismatchError,
    DeadlineExceededError,
    QueueFullError,
)


class Recorder:
    """A real batch function: doubles its input and remembers the batch sizes it saw.

    ``gate``: each call waits for it (a batch held inside the model); ``entered`` is set as
    soon as a call starts.
    """

    def __init__(self, seconds: float = 0.0, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.seconds = seconds
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.seconds)  # the model's compute time, not a synchronisation
        self.sizes.append(len(batch))
        return {"double": batch * 2, "sum": batch.reshape(len(batch), -1).sum(axis=1)}


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as pool:
        yield pool


def run(coroutine):
    return asyncio.run(coroutine)


async def turns(count: int = 20) -> None:
    """Let the event loop run everything that is ready, ``count`` times over."""
    for _ in range(count):
        await asyncio.sleep(0)  # one turn of the loop, not a wait on the clock


async def inside(recorder: Recorder) -> None:
    """Until a batch has entered the model (waited for on another thread)."""
    assert await asyncio.to_thread(recorder.entered.wait, 5)


# A max_delay no test may wait out: if a request waited for it, its 10 s deadline would fail.
FOREVER = 60.0


def test_concurrent_submits_share_batches_and_get_their_own_rows(executor) -> None:
    recorder = Recorder(seconds=0.01)

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=8, max_delay=0.05, max_queue=64)
        results = await asyncio.gather(
            *(batcher.submit(np.full((1, 2), i, dtype=np.int64), timeout=5) for i in range(20))
        )
        await batcher.close()
        return results

    results = run(scenario())
    for i, (outputs, stats) in enumerate(results):
        assert outputs["double"].tolist() == [[2 * i, 2 * i]]
        assert outputs["sum"].tolist() == [2 * i]
        assert 1 <= stats.batch_size <= 8
    assert sum(recorder.sizes) == 20
    assert max(recorder.sizes) == 8
    assert len(recorder.sizes) <= 4  # 20 requests in batches of up to 8, not one call each


def test_a_lone_request_does_not_wait_for_company_that_is_not_coming(executor) -> None:
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=32, max_delay=FOREVER, max_queue=64)
        _, stats = await batcher.submit(np.zeros((1, 1)), timeout=10)
        await batcher.close()
        return stats

    assert run(scenario()).batch_size == 1  # answered, long before max_delay


def test_announced_requests_are_waited_for_up_to_max_delay(executor) -> None:
    recorder = Recorder()

    async def waited_for():
        batcher = Batcher(recorder, executor, max_batch_size=32, max_delay=FOREVER, max_queue=64)
        tickets = [batcher.reserve() for _ in range(3)]  # each announces one image
        first = asyncio.ensure_future(tickets[0].submit(np.zeros((1, 1)), timeout=10))
        await turns()  # the batcher has seen the first image, and the two still announced
        assert recorder.sizes == []
        results = await asyncio.gather(
            first, *(ticket.submit(np.zeros((1, 1)), timeout=10) for ticket in tickets[1:])
        )
        await batcher.close()
        return results

    results = run(waited_for())
    assert recorder.sizes == [3]  # the first waited for the two announced ones
    assert all(stats.batch_size == 3 for _, stats in results)

    async def up_to_max_delay():
        batcher = Batcher(recorder, executor, max_batch_size=32, max_delay=0.2, max_queue=64)
        early, late = batcher.reserve(), batcher.reserve()
        first = await early.submit(np.zeros((1, 1)), timeout=10)  # late has not sent yet
        second = await late.submit(np.zeros((1, 1)), timeout=10)
        await batcher.close()
        return first, second

    recorder.sizes.clear()
    (_, first), _ = run(up_to_max_delay())
    assert recorder.sizes == [1, 1]  # the first went alone once max_delay was over
    assert first.queue_seconds >= 0.19  # and not before: it did wait for the announced one


def test_withdrawn_announcements_stop_the_wait(executor) -> None:
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=32, max_delay=FOREVER, max_queue=64)
        decoded, failing = batcher.reserve(), batcher.reserve()
        first = asyncio.ensure_future(decoded.submit(np.zeros((1, 1)), timeout=10))
        await turns()  # the first image waits for the announced one
        assert not first.done()
        failing.release()  # its decoding failed: nothing more is coming
        _, stats = await first
        await batcher.close()
        return stats

    assert run(scenario()).batch_size == 1


def test_a_full_batch_does_not_wait_for_max_delay(executor) -> None:
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=4, max_delay=FOREVER, max_queue=64)
        tickets = [batcher.reserve() for _ in range(5)]  # a fifth is announced and never comes
        await asyncio.gather(*(t.submit(np.zeros((1, 1)), timeout=10) for t in tickets[:4]))
        tickets[4].release()
        await batcher.close()

    run(scenario())  # within the deadlines: the full batch did not wait for the fifth
    assert recorder.sizes == [4]


def test_multi_image_requests_are_split_and_joined_in_order(executor) -> None:
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=4, max_delay=0.01, max_queue=64)
        images = np.arange(10, dtype=np.int64).reshape(10, 1)
        outputs, _ = await batcher.submit(images, timeout=5)
        await batcher.close()
        return outputs

    outputs = run(scenario())
    assert outputs["double"].ravel().tolist() == [2 * i for i in range(10)]
    assert all(size <= 4 for size in recorder.sizes) and sum(recorder.sizes) == 10


def test_an_exception_reaches_every_request_of_its_batch(executor) -> None:
    def explode(batch: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError(f"model failed on {len(batch)} images")

    async def scenario():
        batcher = Batcher(explode, executor, max_batch_size=8, max_delay=0.05, max_queue=64)
        results = await asyncio.gather(
            *(batcher.submit(np.zeros((1, 1)), timeout=5) for _ in range(5)),
            return_exceptions=True,
        )
        await batcher.close()
        return results

    results = run(scenario())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert {str(r) for r in results} == {"model failed on 5 images"}


def test_wrong_number_of_output_rows_is_an_error(executor) -> None:
    async def scenario():
        batcher = Batcher(
            lambda b: {"x": b[:1]}, executor, max_batch_size=8, max_delay=0.02, max_queue=64
        )
        results = await asyncio.gather(
            *(batcher.submit(np.zeros((1, 1)), timeout=5) for _ in range(3)), return_exceptions=True
        )
        await batcher.close()
        return results

    assert all(isinstance(r, BatchSizeMismatchError) for r in run(scenario()))


def test_a_full_queue_rejects_at_once(executor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=2, max_delay=0, max_queue=4)
        first = asyncio.ensure_future(batcher.submit(np.zeros((2, 1)), timeout=5))
        await inside(recorder)  # the first batch is now held inside the model
        queued = asyncio.ensure_future(batcher.submit(np.zeros((4, 1)), timeout=5))
        await turns(1)  # its first step queues its four images
        assert batcher.queued_images == 4
        refused = batcher.submit(np.zeros((1, 1)), timeout=5)
        with pytest.raises(QueueFullError, match="limit is 4"):
            refused.send(None)  # raised on its first step: the caller never waits
        gate.set()
        await asyncio.gather(first, queued)
        await batcher.close()

    run(scenario())
    assert recorder.sizes == [2, 2, 2]


def test_admission_holds_a_place_until_the_images_are_known(executor) -> None:
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=2, max_delay=0, max_queue=3)
        tickets = [batcher.reserve() for _ in range(3)]  # three requests are reading their bodies
        with pytest.raises(QueueFullError, match="3 images are queued or on their way"):
            batcher.reserve()
        with tickets.pop(0):  # one body was malformed: leaving the block gives its place back
            pass
        tickets.append(batcher.reserve())
        # Two requests now know their images: each turns its place into them.
        for ticket in tickets[:2]:
            ticket.expect(1)
        results = await asyncio.gather(
            *(ticket.submit(np.ones((1, 1)), timeout=5) for ticket in tickets[:2])
        )
        tickets[2].release()  # the last request failed before decoding
        tickets[2].release()  # releasing twice gives back nothing more
        with batcher.reserve(), batcher.reserve(), batcher.reserve():
            pass  # the queue is empty again: all three places are free
        await batcher.close()
        with pytest.raises(QueueFullError, match="shutting down"):
            batcher.reserve()
        return results

    assert [outputs["double"].tolist() for outputs, _ in run(scenario())] == [[[2]], [[2]]]


def test_a_passed_deadline_answers_and_the_work_is_dropped(executor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def scenario():
        batcher = Batcher(recorder, executor, max_batch_size=1, max_delay=0, max_queue=8)
        blocker = asyncio.ensure_future(batcher.submit(np.zeros((1, 1)), timeout=5))
        await inside(recorder)  # held inside the model while the next one's deadline passes
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(np.ones((1, 1)), timeout=0.1)
        gate.set()
        await blocker
        await batcher.close()  # lets queued work finish: the expired item would run now

    run(scenario())
    assert recorder.sizes == [1]  # the expired request never reached the model


def test_invalid_configuration_is_refused(executor) -> None:
    with pytest.raises(ValueError):
        Batcher(Recorder(), executor, max_batch_size=0)
    with pytest.raises(ValueError):
        Batcher(Recorder(), executor, max_batch_size=8, max_queue=4)


def test_concurrency_lets_batches_overlap() -> None:
    active, peak = 0, 0
    lock = threading.Lock()
    pairs = threading.Barrier(2, timeout=5)

    def slow(batch: np.ndarray, meet: bool) -> dict[str, np.ndarray]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        if meet:
            pairs.wait()  # only passes when two batches are inside at once
        # Compute time, long enough that an overlap would show, and long enough to overlap.
        time.sleep(Batcher.OVERLAP_MIN * 2)
        with lock:
            active -= 1
        return {"x": batch}

    async def scenario(concurrency: int) -> None:
        with ThreadPoolExecutor(4) as pool:  # more threads than allowed: the batcher limits
            batcher = Batcher(
                lambda batch: slow(batch, concurrency == 2),
                pool,
                max_batch_size=1,
                max_delay=0,
                max_queue=8,
                concurrency=concurrency,
            )
            await asyncio.gather(*(batcher.submit(np.zeros((1, 1)), timeout=10) for _ in range(4)))
            await batcher.close()

    run(scenario(1))
    assert peak == 1
    run(scenario(2))
    assert peak == 2


def test_short_calls_run_one_at_a_time_once_timed() -> None:
    """A light model's batches would only contend for the GIL: once its calls are timed below
    OVERLAP_MIN, the batcher runs them one after the other whatever its concurrency."""
    active, peak_after_first = 0, 0
    calls = 0
    lock = threading.Lock()

    def short(batch: np.ndarray) -> dict[str, np.ndarray]:
        nonlocal active, peak_after_first, calls
        with lock:
            active += 1
            calls += 1
            if calls > 2:  # the first two start before any call is timed
                peak_after_first = max(peak_after_first, active)
        time.sleep(Batcher.OVERLAP_MIN / 5)
        with lock:
            active -= 1
        return {"x": batch}

    async def scenario() -> None:
        with ThreadPoolExecutor(4) as pool:
            batcher = Batcher(short, pool, max_batch_size=1, max_delay=0, concurrency=2)
            await asyncio.gather(*(batcher.submit(np.zeros((1, 1)), timeout=10) for _ in range(8)))
            await batcher.close()

    run(scenario())
    assert calls == 8
    assert peak_after_first == 1


def test_extra_inputs_are_stacked_with_their_images(executor) -> None:
    """explain's class_index travels with its images: one row each, batched and split alike."""
    seen: list[tuple[list[int], list[int]]] = []

    def run_batch(batch: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
        seen.append((batch[:, 0].tolist(), class_index.tolist()))
        return {"echo": class_index * 10 + batch[:, 0]}

    async def scenario():
        batcher = Batcher(run_batch, executor, max_batch_size=4, max_delay=0.05, max_queue=64)
        results = await asyncio.gather(
            *(
                batcher.submit(
                    np.full((n, 1), i, dtype=np.int32),
                    timeout=5,
                    extra={"class_index": np.arange(n, dtype=np.int32) + 100 * i},
                )
                for i, n in enumerate([1, 2, 6])
            )
        )
        await batcher.close()
        return results

    results = run(scenario())
    for i, n in enumerate([1, 2, 6]):
        outputs, _ = results[i]
        assert outputs["echo"].tolist() == [(100 * i + k) * 10 + i for k in range(n)]
    # Every call got as many class rows as images, and none held more than a batch.
    assert all(len(images) == len(classes) <= 4 for images, classes in seen)
    assert sum(len(images) for images, _ in seen) == 9


def test_a_request_alone_runs_on_the_loops_thread_only_when_the_batcher_is_idle(
    executor,
) -> None:
    """run_idle_inline: an idle batcher whose last call was short runs a lone request at once
    on the caller's thread, whatever the batcher's concurrency; one that is not alone, a busy
    batcher, an untimed or slow model keep the executor's thread."""
    threads: list[str] = []
    slow = threading.Event()

    def run_batch(batch: np.ndarray) -> dict[str, np.ndarray]:
        threads.append(threading.current_thread().name)
        if slow.is_set():
            time.sleep(Batcher.INLINE_LIMIT * 4)
        return {"double": batch * 2}

    gate = threading.Event()
    held = Recorder(gate=gate)

    async def scenario() -> None:
        batcher = Batcher(run_batch, executor, max_queue=64, run_idle_inline=True)
        # No call timed yet: the model may be slow, so even a lone request takes the thread.
        await batcher.submit(np.ones((1, 2)), timeout=10, alone=True)
        outputs, stats = await batcher.submit(np.ones((3, 2)), timeout=10, alone=True)
        assert outputs["double"].tolist() == [[2, 2]] * 3
        assert (stats.queue_seconds, stats.batch_size) == (0.0, 3)
        await batcher.submit(np.ones((1, 2)), timeout=10)  # not known to be alone
        # One call far slower than INLINE_LIMIT (even one run inline) sends the next to the thread.
        slow.set()
        await batcher.submit(np.ones((1, 2)), timeout=10, alone=True)
        slow.clear()
        await batcher.submit(np.ones((1, 2)), timeout=10, alone=True)
        await batcher.close()
        # Two batch threads: an idle batcher is idle however many it has.
        pair = Batcher(run_batch, executor, max_queue=64, concurrency=2, run_idle_inline=True)
        await pair.submit(np.ones((1, 2)), timeout=10, alone=True)
        await pair.submit(np.ones((1, 2)), timeout=10, alone=True)
        await pair.close()

    async def busy() -> None:  # a batch is inside the model: the lone one queues behind it
        batcher = Batcher(held, executor, max_queue=64, run_idle_inline=True)
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 2)), timeout=10))
        await inside(held)
        second = asyncio.ensure_future(batcher.submit(np.ones((2, 2)), timeout=10, alone=True))
        await turns()
        assert not second.done()  # not run at once on this thread: it waits its turn
        gate.set()
        await asyncio.gather(first, second)
        await batcher.close()

    run(scenario())
    main = threading.main_thread().name
    # untimed, inline, not alone, slow (inline: its last call was short), after slow, then the
    # pair: untimed, inline
    assert [name == main for name in threads] == [False, True, False, True, False, False, True]
    run(busy())
    assert held.sizes == [1, 2]
