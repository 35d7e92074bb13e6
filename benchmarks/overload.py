"""Overload: about four times the measured capacity, offered at a fixed rate, then quiet again.

Its open-loop load generator is shared with the overload test (tests/e2e/test_overload.py),
which checks what must hold on any machine (every request answered, refused ones with
Retry-After, nothing computed for them, memory bounded); the ratios that depend on the
machine's speed are measured here, in one run: what the server still serves under overload
against its capacity, and a lone request's latency after the load against before it.

The generator is aiohttp: at about 1 ms of CPU per request it keeps up with the offered rate
on two cores shared with the server, where httpx (about 2.3 ms) fell behind and turned the open
loop into a closed one.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson

from benchmarks.load import percentile
from benchmarks.servers import ServerProcess

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
        return percentile(self.latencies.get(status, []), q) * 1000


class RssSampler(threading.Thread):
    """The server's resident memory (its whole process tree) every 100 ms."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.values, self.running = server, [server.resident_bytes()], True

    def run(self) -> None:
        while self.running:
            self.values.append(self.server.resident_bytes())
            time.sleep(0.1)  # the sampling interval

    def stop(self) -> list[int]:
        self.running = False
        self.join()
        return self.values


@dataclass(frozen=True)
class Body:
    """One multipart request, encoded once so the load generator spends little CPU per request."""

    content: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, images: list[bytes]) -> Body:
        files = [("images", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
        request = httpx.Request("POST", "http://127.0.0.1/", files=files)
        return cls(request.read(), {"Content-Type": request.headers["Content-Type"]})


@dataclass(frozen=True)
class Load:
    """What to send (``body``, to ``route``) and the top-1 labels every 200 must carry."""

    base: str
    route: str
    body: Body
    expected: list[str]


async def _post(client: aiohttp.ClientSession, load: Load, phase: Phase) -> None:
    started = time.perf_counter()
    try:
        async with client.post(load.route, data=load.body.content, headers=load.body.headers) as r:
            content = await r.read()
            status, headers = r.status, r.headers
    except aiohttp.ClientError as error:
        phase.transport_errors.append(repr(error))
        return
    phase.add(status, time.perf_counter() - started)
    if status == 200:
        labels = [p["top_k"][0]["label"] for p in orjson.loads(content)["predictions"]]
        phase.wrong += labels != load.expected
    elif status == 503:
        phase.missing_retry_after += "Retry-After" not in headers
        phase.wrong += "overloaded" not in orjson.loads(content)["error"]


def _session(base: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def _closed_loop(load: Load, workers: int, seconds: float) -> Phase:
    phase = Phase()
    async with _session(load.base, workers) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                await _post(client, load, phase)

        await asyncio.gather(*(worker() for _ in range(workers)))
    return phase


async def _open_loop(load: Load, rate: float, seconds: float) -> Phase:
    """Requests at a fixed arrival rate, whether or not earlier ones were answered."""
    phase = Phase()
    total = min(MAX_REQUESTS, int(rate * seconds))
    async with _session(load.base, 512) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the arrival schedule
            tasks.append(asyncio.ensure_future(_post(client, load, phase)))
        phase.sending_seconds = time.perf_counter() - start
        await asyncio.gather(*tasks)
    return phase


def quiet_latencies(base: str, route: str, png: bytes, count: int = 30) -> list[float]:
    """Seconds per lone request, one after another."""
    with httpx.Client(base_url=base, timeout=30) as client:
        values = []
        for _ in range(count):
            started = time.perf_counter()
            answer = client.post(route, content=png, headers={"Content-Type": "image/png"})
            answer.raise_for_status()
            values.append(time.perf_counter() - started)
    return values


@dataclass
class Overload:
    """Capacity (closed loop), then the open-loop overload phase, with memory and latency."""

    capacity: Phase
    overload: Phase
    images_per_second: float  # capacity, served
    rate: float  # requests/s asked of the open loop
    rss: list[int]  # the server's memory, from before the capacity phase to the end
    rss_before_overload: int
    quiet_before: list[float]
    quiet_after: list[float]

    @property
    def offered(self) -> float:
        """Requests/s the generator really sent."""
        return sum(self.overload.statuses.values()) / self.overload.sending_seconds

    def summary(self) -> dict[str, Any]:
        served = self.overload.statuses[200] / self.overload.sending_seconds
        capacity_rps = self.images_per_second / IMAGES_PER_REQUEST
        return {
            "images_per_request": IMAGES_PER_REQUEST,
            "capacity_images_per_second": self.images_per_second,
            "offered_vs_capacity": self.offered / capacity_rps,
            "served_vs_capacity": served / capacity_rps,
            "statuses": dict(self.overload.statuses),
            "p50_ms": {str(s): self.overload.p(s, 0.5) for s in self.overload.statuses},
            "p99_ms": {str(s): self.overload.p(s, 0.99) for s in self.overload.statuses},
            "quiet_p50_ms_before": statistics.median(self.quiet_before) * 1000,
            "quiet_p50_ms_after": statistics.median(self.quiet_after) * 1000,
            "rss_growth_mib": (max(self.rss) - self.rss_before_overload) / 2**20,
            "errors": len(self.overload.transport_errors) + self.overload.wrong,
        }


def run_overload(server: ServerProcess, load: Load, quiet_png: bytes, quiet_route: str) -> Overload:
    """Measure capacity with four clients, then offer OVERLOAD_FACTOR times it."""
    quiet_before = quiet_latencies(server.url, quiet_route, quiet_png)
    memory = RssSampler(server)
    memory.start()
    capacity = asyncio.run(_closed_loop(load, 4, CAPACITY_SECONDS))
    served = capacity.statuses[200] * IMAGES_PER_REQUEST / CAPACITY_SECONDS
    rate = max(1.0, OVERLOAD_FACTOR * served / IMAGES_PER_REQUEST)
    rss_before = memory.values[-1]
    overload = asyncio.run(_open_loop(load, rate, OVERLOAD_SECONDS))
    rss = memory.stop()
    quiet_after = quiet_latencies(server.url, quiet_route, quiet_png)
    return Overload(capacity, overload, served, rate, rss, rss_before, quiet_before, quiet_after)


def measure_overload(server: ServerProcess, variant: str, png: bytes) -> dict[str, Any]:
    """The benchmark's overload row: ``png`` 64 times a request to ``variant``'s classify."""
    route = f"/models/{variant}/classify"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = Body.of([png] * IMAGES_PER_REQUEST)
        reference = client.post(route + "?top_k=1", content=body.content, headers=body.headers)
        reference.raise_for_status()
    expected = [p["top_k"][0]["label"] for p in reference.json()["predictions"]]
    result = run_overload(server, Load(server.url, route + "?top_k=1", body, expected), png, route)
    summary = result.summary()
    print(
        f"  capacity {summary['capacity_images_per_second']:,.0f} images/s; offered "
        f"{summary['offered_vs_capacity']:.1f}x, served {summary['served_vs_capacity']:.2f}x; "
        f"answers {summary['statuses']}; quiet p50 {summary['quiet_p50_ms_before']:.2f} -> "
        f"{summary['quiet_p50_ms_after']:.2f} ms",
        flush=True,
    )
    return summary
