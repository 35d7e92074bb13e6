"""The executor's client keeps the in-process engine's contract: same answers, same errors.

Both ends run in this test's event loop, joined by a real Unix socket and a real arena.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client import CollectorRegistry

from convbridge.signatures import CLASSIFY, FEATURE_MAPS, PROBABILITIES
from service.executor.client import RemoteEngine
from service.executor.server import ExecutorServer
from service.inference import (
    DeadlineExceededError,
    Engine,
    ModelNotFoundError,
    ModelNotReadyError,
    QueueFullError,
    UnknownSignatureError,
)
from service.inference.runtime import Runtime
from service.metrics import Metrics
from service.settings import Settings
from tests.numerics import assert_same_float32

pytestmark = pytest.mark.slow


async def _until(predicate, seconds: float = 60) -> None:
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)  # the interval between two checks of the condition
    raise AssertionError("condition not met in time")


async def _joined(
    settings: Settings, folder: Path, arena: bool = True, runtime: Runtime | None = None
) -> tuple[Engine, ExecutorServer, RemoteEngine]:
    """An engine (not started), its executor server on a Unix socket in ``folder``, and a
    client connecting to it (with an arena in ``folder`` unless ``arena`` is False)."""
    engine = Engine(settings, Metrics(CollectorRegistry(), http=False), runtime)
    server = ExecutorServer(engine, folder / "executor.sock")
    await server.start()
    client = RemoteEngine(settings, folder / "executor.sock", folder if arena else None)
    await client.start()
    return engine, server, client


def test_the_client_answers_like_the_engine(gap_repository: Path, tmp_path: Path, digits) -> None:
    images = digits.test.images[:2]  # the queue below holds two
    saved = tf.saved_model.load(str(gap_repository / "gap" / "1"))
    expected = saved.signatures[CLASSIFY](images=tf.constant(images))[PROBABILITIES].numpy()
    maps = {
        k: v.numpy() for k, v in saved.signatures[FEATURE_MAPS](images=tf.constant(images)).items()
    }
    settings = Settings(repository=gap_repository, max_batch_size=2, max_queue_images=2)

    async def scenario() -> None:
        engine, server, client = await _joined(settings, tmp_path)
        with pytest.raises(ModelNotReadyError):
            client.names()  # not connected yet, or the engine still starting
        await engine.start()
        await _until(lambda: client.readiness().ready)
        assert client.names() == ["gap"] and client.knows("gap")
        assert client.status("gap").served_version == 1
        with pytest.raises(ModelNotFoundError, match="available models: gap"):
            await client.reserve("vgg", None, CLASSIFY).__aenter__()
        with pytest.raises(ModelNotFoundError, match=r"no version 12345678901234567890123"):
            await client.model("gap", 12345678901234567890123)  # beyond 64 bits: never sent

        async with client.reserve("gap", None, CLASSIFY) as lease:
            assert (lease.model.name, lease.model.version) == ("gap", 1)
            assert lease.model.card.classes == tuple(str(i) for i in range(10))
            lease.expect(2)
            result = await lease.run(images, timeout=10)
            features = await lease.run(images[:1], timeout=10, signature=FEATURE_MAPS)
        np.testing.assert_allclose(result.outputs[PROBABILITIES], expected, atol=1e-6)
        for name, values in maps.items():  # large outputs came back through the arena
            # A batch of one against this process's batch of two: sums in another order.
            assert_same_float32(features.outputs[name], np.asarray(values)[:1])
        assert client.arena is not None and client.arena.free_bytes == client.arena.size

        # A full queue in the executor (two places held there) is refused in the front end,
        # before a body would be read, until a whole batch has room again.
        held = [await engine.reserve("gap", None, CLASSIFY).__aenter__() for _ in range(2)]
        await _until(lambda: ("gap", 1, CLASSIFY) in client.full, 5)
        with pytest.raises(QueueFullError, match="2 images are queued or on their way"):
            await client.reserve("gap", None, CLASSIFY).__aenter__()
        async with client.reserve("gap", None, FEATURE_MAPS):
            pass  # another queue
        for lease in held:
            await lease.__aexit__(None, None, None)
        await _until(lambda: not client.full, 5)
        async with client.reserve("gap", None, CLASSIFY) as lease:
            result = await lease.run(images, timeout=10)
        np.testing.assert_allclose(result.outputs[PROBABILITIES], expected, atol=1e-6)
        with pytest.raises(
            UnknownSignatureError, match="offers serving_default, feature_maps, explain"
        ):
            await client.reserve("gap", None, "regress").__aenter__()

        # Runs asked in one turn of the loop travel as one message; each gets its own rows.
        async def one(rows: slice) -> np.ndarray:
            async with client.reserve("gap", None, CLASSIFY) as lease:
                result = await lease.run(images[rows], timeout=10)
            assert result.stats.batch_size == 2
            return result.outputs[PROBABILITIES]

        first, second = await asyncio.gather(one(slice(0, 1)), one(slice(1, 2)))
        np.testing.assert_allclose(np.concatenate([first, second]), expected, atol=1e-6)

        # Gathered with a longer one, a short deadline still ends as a deadline, on time.
        async def run(timeout: float) -> np.ndarray:
            async with client.reserve("gap", None, CLASSIFY) as lease:
                return (await lease.run(images[:1], timeout=timeout)).outputs[PROBABILITIES]

        # The group's one timer is armed for its earliest deadline, whichever part came first.
        for short_first in (True, False):
            runs = [run(1e-4), run(10)] if short_first else [run(10), run(1e-4)]
            answers = await asyncio.gather(*runs, return_exceptions=True)
            short, long = answers if short_first else answers[::-1]
            assert isinstance(short, DeadlineExceededError), repr(short)
            assert "no answer within 0.0001 s" in str(short)
            np.testing.assert_allclose(long, expected[:1], atol=1e-6)
        assert not any(client.pending.values())  # every place was given back
        assert client.arena is not None and client.arena.free_bytes == client.arena.size

        metrics = (await client.metrics_text()).decode()
        assert 'convbridge_batch_size_count{model="gap",version="1"}' in metrics
        assert "convbridge_http_request_duration_seconds" not in metrics  # front ends' own

        await server.stop()
        await _until(lambda: not client.readiness().ready, 5)
        assert "executor is not available" in (client.readiness().error or "")
        with pytest.raises(ModelNotReadyError, match="executor is not available"):
            await client.reserve("gap", None, CLASSIFY).__aenter__()
        await client.close()

    asyncio.run(scenario())


def test_a_lone_request_runs_at_once_in_an_executor_whose_loop_only_feeds_batchers(
    gap_repository: Path, tmp_path: Path, digits
) -> None:
    """The front end says when a request is the only one it has under way; the executor then
    runs it at once on its loop (no time queued) once it knows the model's calls are short, and
    anything else through its batch thread."""
    images = digits.test.images[:2]
    settings = Settings(repository=gap_repository)
    runtime = Runtime("/CPU:0", "cpu", "CPU", dedicated_loop=True)

    async def scenario() -> None:
        engine, server, client = await _joined(settings, tmp_path, runtime=runtime)
        await engine.start()
        await _until(lambda: client.readiness().ready)
        connection = next(iter(server.connections))
        seen: list[bool] = []
        infer = connection._infer

        async def spy(header, payload):  # what the front end said, then the executor's work
            seen.append(header["alone"])
            return await infer(header, payload)

        connection._infer = spy

        async def run(rows: slice) -> float:
            async with client.reserve("gap", None, CLASSIFY) as lease:
                result = await lease.run(images[rows], timeout=10)
            return result.stats.queue_seconds

        assert await run(slice(0, 2)) > 0.0  # alone, but no call of the batcher timed yet
        assert await run(slice(0, 2)) == 0.0  # alone, and the model is fast: run at once
        # Two under way, asked in one turn: one message, which holds all there is: at once.
        async with (
            client.reserve("gap", None, CLASSIFY) as first,
            client.reserve("gap", None, CLASSIFY) as second,
        ):
            both = await asyncio.gather(first.run(images[:1], 10), second.run(images[1:], 10))
        assert [result.stats.queue_seconds for result in both] == [0.0, 0.0]
        assert [result.stats.batch_size for result in both] == [2, 2]
        async with client.reserve("gap", None, CLASSIFY):  # another one under way here
            assert await run(slice(0, 1)) > 0.0  # through the batcher and its thread
        assert seen == [True, True, True, False] and client.leases == 0
        await server.stop()
        await client.close()

    asyncio.run(scenario())


def test_every_wait_for_the_executor_ends(gap_repository: Path, tmp_path: Path, caplog) -> None:
    """A reply that never comes ends at its timeout; a reply handler's bug is logged and the
    replies after it still arrive; when the executor goes, what is under way fails at once."""
    settings = Settings(repository=gap_repository)

    async def scenario() -> None:
        _, server, client = await _joined(settings, tmp_path, arena=False)
        await client.attached()

        # The executor logs an operation it does not know, and answers nothing.
        with pytest.raises(TimeoutError, match="did not answer in 0.2 s"):
            await client.request({"op": "unknown"}, timeout=0.2)

        seen = []

        def broken(outcome) -> None:
            seen.append(outcome)
            raise RuntimeError("a bug in a reply handler")

        client.send({"op": "metrics"}, b"", 10, broken)
        assert b"convbridge_batch_size" in await client.metrics_text()  # the next reply
        assert len(seen) == 1 and not isinstance(seen[0], BaseException)
        assert "handling the executor's reply failed" in caplog.text

        waiting = client.request({"op": "unknown"}, timeout=60)
        await server.stop()
        with pytest.raises(ModelNotReadyError, match="executor is not available"):
            await asyncio.wait_for(waiting, 10)
        await client.close()

    asyncio.run(scenario())
