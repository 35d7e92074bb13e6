"""Deadlines and overload over a real socket: 504s that skip the model, and a bounded load test
at about four times the measured capacity that the server survives."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import httpx
import numpy as np
import orjson
import pytest

from benchmarks.servers import ServerProcess
from tests.conftest import start_server
from tests.images import digit_png, png_files
from tests.metrics import samples, value

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = "X-Request-Timeout-Ms"


def test_a_shorter_deadline_header_answers_504_on_every_api_without_running_the_model(
    client, digits
) -> None:
    image = digits.test.images[0]
    png = digit_png(image)
    short = {TIMEOUT: "0.001"}
    before = samples(client.get("/metrics").text)
    answers = {
        "classify": client.post(
            "/models/residual_gap/classify",
            content=png,
            headers={"Content-Type": "image/png", **short},
        ),
        "feature_maps": client.post(
            "/models/residual_gap/feature-maps", files=png_files([png]), headers=short
        ),
        "tfserving": client.post(
            "/v1/models/residual_gap:predict",
            json={"instances": [image.tolist()]},
            headers=short,
        ),
        "kserve": client.post(
            "/v2/models/residual_gap/infer",
            json={
                "inputs": [
                    {
                        "name": "images",
                        "shape": [1, 28, 28, 1],
                        "datatype": "UINT8",
                        "data": image.ravel().tolist(),
                    }
                ]
            },
            headers=short,
        ),
    }
    after = samples(client.get("/metrics").text)
    for api, answer in answers.items():
        assert answer.status_code == 504, (api, answer.text)
        assert "0.001 ms from X-Request-Timeout-Ms" in answer.json()["error"], api
    # Nothing was computed for requests nobody waits for any more.
    batches = "convbridge_batch_size_count"
    assert value(after, batches, model="residual_gap", version="1") == value(
        before, batches, model="residual_gap", version="1"
    )
    requests = "convbridge_requests_total"
    for endpoint in ("classify", "feature_maps"):
        labels = {"model": "residual_gap", "endpoint": endpoint, "outcome": "timeout"}
        labels["protocol"] = "rest"
        assert value(after, requests, **labels) - value(before, requests, **labels) == 1
    # A generous budget changes nothing.
    fine = client.post(
        "/models/residual_gap/classify",
        content=png,
        headers={"Content-Type": "image/png", TIMEOUT: "20000"},
    )
    assert fine.status_code == 200, fine.text


# --- the load test ---------------------------------------------------------------------------

IMAGES_PER_REQUEST = 64
CAPACITY_SECONDS = 4.0
OVERLOAD_SECONDS = 15.0
OVERLOAD_FACTOR = 4.0
MAX_REQUESTS = 3000


@dataclass
class Phase:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: dict[int, list[float]] = field(default_factory=dict)
    wrong: int = 0
    missing_retry_after: int = 0
    transport_errors: list[str] = field(default_factory=list)
    sending_seconds: float = 0.0

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.setdefault(status, []).append(seconds)

    def p(self, status: int, q: float) -> float:
        values = sorted(self.latencies.get(status, [0.0]))
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


class RssSampler(threading.Thread):
    """The server's resident memory every 100 ms."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.values, self.running = server, [], True

    def run(self) -> None:
        while self.running:
            self.values.append(self.server.resident_bytes())
            time.sleep(0.1)


@dataclass(frozen=True)
class Body:
    """One multipart request, encoded once so the load generator spends little CPU per request."""

    content: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, images: list[bytes]) -> Body:
        request = httpx.Request("POST", "http://127.0.0.1/", files=png_files(images))
        return cls(request.read(), {"Content-Type": request.headers["Content-Type"]})


# The load generator is aiohttp: at about 1 ms of CPU per request it keeps up with the offered
# rate on two cores shared with the server, where httpx (about 2.3 ms) fell behind and turned
# the open loop into a closed one.
ROUTE = "/models/gap/classify?top_k=1"


async def _post(client: aiohttp.ClientSession, body: Body, expected, phase: Phase) -> None:
    started = time.perf_counter()
    try:
        async with client.post(ROUTE, data=body.content, headers=body.headers) as response:
            content = await response.read()
            status, headers = response.status, response.headers
    except aiohttp.ClientError as error:
        phase.transport_errors.append(repr(error))
        return
    phase.add(status, time.perf_counter() - started)
    if status == 200:
        labels = [p["top_k"][0]["label"] for p in orjson.loads(content)["predictions"]]
        phase.wrong += labels != expected
    elif status == 503:
        phase.missing_retry_after += "Retry-After" not in headers
        phase.wrong += "overloaded" not in orjson.loads(content)["error"]


def _session(base: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def _closed_loop(base: str, body, expected, workers: int, seconds: float) -> Phase:
    phase = Phase()
    async with _session(base, workers) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                await _post(client, body, expected, phase)

        await asyncio.gather(*(worker() for _ in range(workers)))
    return phase


async def _open_loop(base: str, body, expected, rate: float, seconds: float) -> Phase:
    """Requests at a fixed arrival rate, whether or not earlier ones were answered."""
    phase = Phase()
    total = min(MAX_REQUESTS, int(rate * seconds))
    async with _session(base, 512) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_post(client, body, expected, phase)))
        phase.sending_seconds = time.perf_counter() - start
        await asyncio.gather(*tasks)
    return phase


def _latencies(base: str, png: bytes, count: int = 30) -> list[float]:
    with httpx.Client(base_url=base, timeout=30) as client:
        values = []
        for _ in range(count):
            started = time.perf_counter()
            answer = client.post(
                "/models/gap/classify", content=png, headers={"Content-Type": "image/png"}
            )
            assert answer.status_code == 200
            values.append(time.perf_counter() - started)
    return values


def test_four_times_capacity_is_survived(demo_repository, digits, tmp_path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(demo_repository / "gap", repository / "gap")
    server = start_server(
        repository,
        tmp_path / "server.log",
        CONVBRIDGE_REQUEST_TIMEOUT_S="5",
    )
    try:
        server.wait_ready()
        images = digits.test.images[:IMAGES_PER_REQUEST]
        pngs = [digit_png(image) for image in images]
        body = Body.of(pngs)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            reference = client.post(
                "/models/gap/classify", content=body.content, headers=body.headers
            ).json()
        expected = [p["top_k"][0]["label"] for p in reference["predictions"]]
        truth = digits.test.labels[:IMAGES_PER_REQUEST]
        assert np.mean(np.array(expected, dtype=int) == truth) >= 0.8

        quiet_before = _latencies(server.url, pngs[0])
        memory = RssSampler(server)
        memory.start()
        capacity = asyncio.run(_closed_loop(server.url, body, expected, 4, CAPACITY_SECONDS))
        assert capacity.statuses[200] > 0 and set(capacity.statuses) == {200}
        images_per_second = capacity.statuses[200] * IMAGES_PER_REQUEST / CAPACITY_SECONDS
        rate = OVERLOAD_FACTOR * images_per_second / IMAGES_PER_REQUEST
        rss_before = memory.values[-1]
        before = samples(httpx.get(server.url + "/metrics").text)
        overload = asyncio.run(_open_loop(server.url, body, expected, rate, OVERLOAD_SECONDS))
        after = samples(httpx.get(server.url + "/metrics").text)
        memory.running = False
        memory.join()
        quiet_after = _latencies(server.url, pngs[0])
    finally:
        code = server.stop(timeout=60)

    answered = sum(overload.statuses.values())
    offered = answered / overload.sending_seconds
    print(
        f"\ncapacity {images_per_second:.0f} images/s ({IMAGES_PER_REQUEST} per request); "
        f"asked {rate:.1f} requests/s, offered {offered:.1f} = "
        f"{offered * IMAGES_PER_REQUEST:.0f} images/s for {overload.sending_seconds:.1f} s; "
        f"answers {dict(overload.statuses)}; "
        f"200 p50/p99 {overload.p(200, 0.5):.0f}/{overload.p(200, 0.99):.0f} ms; "
        f"503 p50/p99 {overload.p(503, 0.5):.1f}/{overload.p(503, 0.99):.1f} ms; "
        f"RSS {rss_before / 2**20:.0f} -> peak {max(memory.values) / 2**20:.0f} MiB; "
        f"quiet p50 {statistics.median(quiet_before) * 1000:.2f} ms before, "
        f"{statistics.median(quiet_after) * 1000:.2f} ms after"
    )
    # Every request got an HTTP answer: served correctly, or refused at once with Retry-After.
    assert overload.transport_errors == []
    assert answered == min(MAX_REQUESTS, int(rate * OVERLOAD_SECONDS))
    assert set(overload.statuses) <= {200, 503, 504}, overload.statuses
    # The generator kept up: what it offered really was several times the capacity.
    assert offered * IMAGES_PER_REQUEST > 2 * images_per_second
    assert overload.statuses[503] > 0
    # Overload does not collapse throughput. Rates, not counts: MAX_REQUESTS may end the phase
    # before OVERLOAD_SECONDS when the server is fast.
    served_per_second = overload.statuses[200] / overload.sending_seconds
    assert served_per_second >= 0.5 * capacity.statuses[200] / CAPACITY_SECONDS
    assert overload.wrong == 0 and overload.missing_retry_after == 0
    # The model ran the 200s' images, at most the 504s' too, and never a refused request's.
    computed = value(after, "convbridge_batch_size_sum", model="gap", version="1") - value(
        before, "convbridge_batch_size_sum", model="gap", version="1"
    )
    ok, late = overload.statuses[200], overload.statuses[504]
    assert ok * IMAGES_PER_REQUEST <= computed <= (ok + late) * IMAGES_PER_REQUEST
    assert value(after, "convbridge_queue_depth", model="gap", version="1") == 0
    # Memory stays bounded: the queue and refused bodies do not pile up.
    assert max(memory.values) - rss_before < 200 * 2**20
    # Normal latency again once the load is gone (a ratio within this run, not a fixed time).
    assert statistics.median(quiet_after) < 3 * statistics.median(quiet_before) + 0.005
    assert code == 0
