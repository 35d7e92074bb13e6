"""Lone requests, interleaved: one request at a time, taking turns between servers.

The c=1 target compares two medians of about 2 ms, 0.3 ms apart, and this VM's speed drifts
by 10-20% over the minutes between two wrk runs: measured one after the other, the servers
are timed on different machines. Here every server is up at once and each round sends one
request to each of them, in a rotating order, so all of them see the same moments; the
comparison is the median of the per-round differences against the naive server. Two copies
of the same server measured this way differ by 0.01 ms.
"""

from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.load import percentile

if TYPE_CHECKING:
    from benchmarks.servers import ServerProcess

ROUNDS = 1500
WARM_UP_ROUNDS = 100


@dataclass(frozen=True)
class LoneResult:
    p50_ms: float
    p99_ms: float
    vs_naive_ms: float  # median over rounds of (this server's latency - the naive server's)


def measure_lone(
    servers: dict[str, tuple[ServerProcess, str]],
    body: bytes,
    baseline: str = "naive",
    rounds: int = ROUNDS,
    content_type: str = "image/png",
) -> dict[str, LoneResult]:
    """Each server's lone-request latency, from rounds of one request to each, in turn."""
    names = list(servers)
    connections = {
        name: http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for name, (server, _) in servers.items()
    }
    latencies: dict[str, list[float]] = {name: [] for name in names}
    try:
        for number in range(WARM_UP_ROUNDS + rounds):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:  # nobody always goes first
                seconds = _post(connections[name], servers[name][1], body, content_type)
                if number >= WARM_UP_ROUNDS:
                    latencies[name].append(seconds)
    finally:
        for connection in connections.values():
            connection.close()
    results = {}
    for name, values in latencies.items():
        differences = [v - b for v, b in zip(values, latencies[baseline], strict=True)]
        results[name] = LoneResult(
            p50_ms=statistics.median(values) * 1000,
            p99_ms=percentile(values, 0.99) * 1000,
            vs_naive_ms=statistics.median(differences) * 1000,
        )
    return results


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, kind: str) -> float:
    started = time.perf_counter()
    connection.request("POST", path, body, {"Content-Type": kind})
    response = connection.getresponse()
    response.read()
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"a lone request to {path} answered {response.status}")
    return seconds
