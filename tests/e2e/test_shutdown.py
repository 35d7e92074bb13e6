"""SIGTERM with requests in flight: every accepted request is answered, then exit 0.

The signal is sent once the executor's own gauge shows images waiting in the queue, so queued
work (not only requests being computed) is what the shutdown must finish."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.conftest import start_server
from tests.images import digit_png, png_files
from tests.metrics import samples, value

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_sigterm_finishes_in_flight_requests_and_exits_0(demo_repository, digits, tmp_path) -> None:
    server = start_server(demo_repository, tmp_path / "server.log")
    server.wait_ready()
    bodies = [digit_png(image) for image in digits.test.images[:24]]
    finished: list[float] = []
    signalled: list[float] = []

    async def slow_upload():
        """A request still sending its body when the signal arrives."""
        yield bodies[0][:64]
        await asyncio.sleep(1.0)  # the client's own slowness: the body's second half comes late
        yield bodies[0][64:]

    async def post(client: httpx.AsyncClient, content) -> httpx.Response:
        response = await client.post(
            "/models/flatten/classify", content=content, headers={"Content-Type": "image/png"}
        )
        finished.append(time.monotonic())
        return response

    async def post_many(client: httpx.AsyncClient) -> httpx.Response:
        """64 images in one request: two batches of flatten, queued behind the others."""
        response = await client.post("/models/flatten/classify", files=png_files(bodies * 3)[:64])
        finished.append(time.monotonic())
        return response

    async def queued(client: httpx.AsyncClient) -> None:
        """Until the executor reports images waiting in flatten's queue (its own gauge)."""
        while True:
            page = await client.get("/metrics")
            assert page.status_code == 200, page.text
            values = samples(page.text)
            if value(values, "convbridge_queue_depth", model="flatten", version="1") > 0:
                return
            await asyncio.sleep(0.005)  # the interval between two reads of the gauge

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            heavy = [asyncio.ensure_future(post_many(client)) for _ in range(6)]
            requests = [asyncio.ensure_future(post(client, body)) for body in bodies]
            slow = asyncio.ensure_future(post(client, slow_upload()))
            await asyncio.wait_for(queued(client), 30)  # work is waiting in the queue now
            signalled.append(time.monotonic())
            server.process.send_signal(signal.SIGTERM)
            answered = [*await asyncio.gather(*requests), await slow]
            many = await asyncio.gather(*heavy)
            assert [r.status_code for r in many] == [200] * 6
            assert all(len(r.json()["predictions"]) == 64 for r in many)
            return answered

    responses = asyncio.run(scenario())
    # One SIGTERM, as an orchestrator sends it; a second one (as stop() would send) may land
    # while the interpreter finalizes, when Python has restored the default handler.
    code = server.process.wait(timeout=60)
    server.stop()
    assert [r.status_code for r in responses] == [200] * (len(bodies) + 1)
    assert max(finished) > signalled[0] + 0.5  # the slow request was answered after SIGTERM
    labels = [int(r.json()["predictions"][0]["top_k"][0]["label"]) for r in responses[:24]]
    assert sum(a == b for a, b in zip(labels, digits.test.labels[:24], strict=True)) >= 20
    assert code == 0, server.log()[-2000:]
    assert "Shutting down" in server.log()
