"""The engine interface without HTTP: lookup errors, leases, queue places and both signatures."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client import CollectorRegistry

from convbridge.signatures import CLASSIFY, FEATURE_MAPS, PROBABILITIES
from service.inference import (
    Engine,
    ModelNotFoundError,
    ModelNotReadyError,
    QueueFullError,
    State,
    UnknownSignatureError,
)
from service.metrics import Metrics
from service.settings import Settings
from tests.models import export_slow

pytestmark = pytest.mark.slow


def _engine(gap_repository: Path) -> tuple[Engine, Metrics]:
    # A queue of two images: two held places fill it.
    settings = Settings(repository=gap_repository, max_batch_size=2, max_queue_images=2)
    metrics = Metrics(CollectorRegistry())
    return Engine(settings, metrics), metrics


def test_the_engine_serves_through_leases(gap_repository: Path, digits) -> None:
    images = digits.test.images[:2]
    saved = tf.saved_model.load(str(gap_repository / "gap" / "1"))
    expected = saved.signatures[CLASSIFY](images=tf.constant(images))[PROBABILITIES].numpy()

    async def scenario() -> None:
        engine, metrics = _engine(gap_repository)
        assert engine.readiness().error == "starting" and not engine.knows("gap")
        with pytest.raises(ModelNotReadyError, match="starting"):
            engine.names()
        await engine.start()
        assert engine.readiness().ready and engine.readiness().models == {"gap": "ready"}
        status = engine.status("gap")
        assert status.served_version == 1 and status.versions[0].state is State.READY
        assert status.device == "/CPU:0" and status.versions[0].card is not None

        with pytest.raises(ModelNotFoundError, match="available models: gap"):
            await engine.reserve("vgg", None, CLASSIFY).__aenter__()
        with pytest.raises(ModelNotFoundError, match=r"no version 7; versions: \[1\]"):
            await engine.model("gap", 7)

        async with engine.reserve("gap", None, CLASSIFY) as lease:
            assert (lease.model.name, lease.model.version) == ("gap", 1)
            lease.expect(2)
            result = await lease.run(images, timeout=10)
        np.testing.assert_allclose(result.outputs[PROBABILITIES], expected, atol=1e-6)
        assert result.stats.batch_size == 2
        batches = metrics.registry.get_sample_value(
            "convbridge_batch_size_count", {"model": "gap", "version": "1"}
        )
        assert batches == 1

        # A request reserved for classification may run feature maps (KServe asks for both).
        async with engine.reserve("gap", 1, CLASSIFY) as lease:
            maps = await lease.run(images[:1], timeout=10, signature=FEATURE_MAPS)
        assert set(maps.outputs) == set(lease.model.card.layer_names)
        await engine.close()

    asyncio.run(scenario())


def test_queue_places_are_held_until_the_lease_ends(gap_repository: Path) -> None:
    async def scenario() -> None:
        engine, _ = _engine(gap_repository)
        pressure: list[tuple[str, int, str, bool]] = []
        engine.on_pressure = lambda *change: pressure.append(change)
        await engine.start()
        first = await engine.reserve("gap", None, CLASSIFY).__aenter__()
        assert pressure == []
        second = await engine.reserve("gap", None, CLASSIFY).__aenter__()
        assert pressure == [("gap", 1, CLASSIFY, True)]  # the executor tells front ends
        with pytest.raises(QueueFullError, match="2 images are queued or on their way"):
            await engine.reserve("gap", None, CLASSIFY).__aenter__()
        # The feature-map queue is another queue: it still has room.
        async with engine.reserve("gap", None, FEATURE_MAPS):
            pass
        await first.__aexit__(None, None, None)
        with pytest.raises(RuntimeError, match="decoding failed"):
            async with engine.reserve("gap", None, CLASSIFY) as third:
                third.expect(1)
                raise RuntimeError("decoding failed")  # the place is given back all the same
        async with engine.reserve("gap", None, CLASSIFY):
            pass
        assert pressure == [("gap", 1, CLASSIFY, True)]  # room for one: not a whole batch
        await second.__aexit__(None, None, None)
        assert pressure[1:] == [("gap", 1, CLASSIFY, False)]
        with pytest.raises(
            UnknownSignatureError, match="offers serving_default, feature_maps, explain"
        ):
            await engine.reserve("gap", None, "regress").__aenter__()
        async with (
            engine.reserve("gap", None, CLASSIFY),
            engine.reserve("gap", None, CLASSIFY),
        ):
            pass  # both places are free again: nothing leaked
        await engine.close()

    asyncio.run(scenario())


def test_a_load_past_its_timeout_fails_and_what_it_loads_later_is_dropped(
    gap_repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`late` sleeps 1 s in every call, so its warm-up outlasts a 1 s load timeout: it is
    reported failed and `gap` loads after it. Its load still ends, and what it loaded is
    closed and dropped; the version stays failed."""
    root = tmp_path / "models"
    export_slow(gap_repository / "gap" / "1", root / "late" / "1", "late", seconds=1.0)
    shutil.copytree(gap_repository / "gap", root / "gap")
    caplog.set_level(logging.INFO, "convbridge.repository")

    async def scenario() -> None:
        settings = Settings(repository=root, max_batch_size=2, load_timeout_s=1)
        engine = Engine(settings, Metrics(CollectorRegistry()))
        await engine.start()
        (late,) = engine.status("late").versions
        assert late.state is State.FAILED, late
        assert late.error is not None and "within 1 s (CONVBRIDGE_LOAD_TIMEOUT_S)" in late.error
        assert engine.readiness().ready
        assert engine.readiness().models == {"gap": "ready", "late": "failed"}
        with pytest.raises(ModelNotReadyError, match="CONVBRIDGE_LOAD_TIMEOUT_S"):
            await engine.model("late")
        deadline = time.monotonic() + 120  # its warm-up's few one-second calls, then the drop
        while "late version 1 loaded after its timeout: dropped" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.1)
        assert engine.status("late").versions[0].state is State.FAILED
        assert engine.status("gap").served_version == 1
        await engine.close()

    asyncio.run(scenario())
