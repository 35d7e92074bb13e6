"""Where an inference call parses bodies and encodes answers: small ones on the event loop, as
the trip to a thread would cost more than the work, larger ones on the decoder threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.api.deps import AppContext
from service.api.outline import INLINE_BYTES, Caller, InferenceCall, nbytes
from service.errors import ApiError, bad_request
from service.inference import Engine
from service.metrics import Metrics
from service.settings import Settings


def _thread_name(_: object) -> str:
    return threading.current_thread().name


def _refuse(_: object) -> str:
    raise bad_request("the body says no")


async def _places(tmp_path: Path) -> dict[str, str]:
    settings = Settings(repository=tmp_path)
    metrics = Metrics(CollectorRegistry(), process=False)
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as decoder:
        context = AppContext(settings, metrics, Engine(settings, metrics), decoder)
        call = InferenceCall(Caller(context, {}), "gap", "test", protocol=True)
        places = {
            "small body": await call.parse(_thread_name, b"", size=INLINE_BYTES),
            "large body": await call.parse(_thread_name, b"", size=INLINE_BYTES + 1),
            "message of unknown size (gRPC)": await call.parse(_thread_name, b""),
            "small answer": await call.encode(_thread_name, None, size=INLINE_BYTES),
            "large answer": await call.encode(_thread_name, None, size=INLINE_BYTES + 1),
            "answer of unknown cost": await call.encode(_thread_name, None),
        }
        for size in (1, INLINE_BYTES + 1):  # a parser's error is the same error either way
            with pytest.raises(ApiError, match="the body says no") as refused:
                await call.parse(_refuse, b"", size=size)
            assert refused.value.status == 400
    return places


def test_small_bodies_and_answers_stay_on_the_loop_and_large_ones_go_to_the_threads(
    tmp_path,
) -> None:
    loop_thread = threading.current_thread().name  # asyncio.run's loop runs on this thread
    places = asyncio.run(_places(tmp_path))
    assert places["small body"] == places["small answer"] == loop_thread
    for large in (
        "large body",
        "message of unknown size (gRPC)",
        "large answer",
        "answer of unknown cost",
    ):
        assert places[large].startswith("decode"), places


def test_an_answer_is_sized_by_its_outputs_bytes() -> None:
    outputs = {"probabilities": np.zeros((4, 10), np.float32), "bridge": np.zeros((4, 7), np.uint8)}
    assert nbytes(outputs) == 4 * 10 * 4 + 4 * 7
    assert nbytes({}) == 0
