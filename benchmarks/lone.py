"""Lone requests, interleaved: one request at a time, each server answering a turn of them.

The c=1 target compares two medians a few milliseconds long, 0.3 ms apart, and this VM's
speed drifts by 10-20% over the minutes between two wrk runs: measured one after the other,
the servers are timed on different machines. Here every server is up at once and each round
gives each of them, in a rotating order, a turn of :data:`TURN` requests sent back to back,
as wrk's one connection sends them; the comparison is the median over rounds of the
difference between a server's turn and the naive server's turn of the same round.

The first request of a turn comes right after the other servers' turns: their models and
their Python have swept the caches, which no single server does to itself, and how much
depends on which servers take part. It is timed apart (``cold``); the c=1 target is judged on
the rest of the turn, the requests that follow one another as they do from a client at c=1.
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

ROUNDS = 300
TURN = 10  # requests a server answers back to back in each round: one cold, the rest not
WARM_UP_ROUNDS = 10


@dataclass(frozen=True)
class LoneResult:
    p50_ms: float  # requests after the first of each turn: back to back, as at c=1
    p99_ms: float
    vs_naive_ms: float  # median over rounds of (this server's turn - the naive server's), p50s
    cold_p50_ms: float  # the first request of each turn, right after the other servers' turns
    cold_vs_naive_ms: float  # median over rounds of (this server's first - the naive one's)


def measure_lone(
    servers: dict[str, tuple[ServerProcess, str]],
    body: bytes,
    baseline: str = "naive",
    rounds: int = ROUNDS,
    content_type: str = "image/png",
    turn: int = TURN,
) -> dict[str, LoneResult]:
    """Each server's lone-request latency, from rounds of a turn of requests to each."""
    if turn < 2:
        raise ValueError("a turn needs its cold first request and at least one after it")
    names = list(servers)
    connections = {
        name: http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for name, (server, _) in servers.items()
    }
    turns: dict[str, list[list[float]]] = {name: [] for name in names}
    try:
        for number in range(WARM_UP_ROUNDS + rounds):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:  # nobody always goes first
                connection, path = connections[name], servers[name][1]
                seconds = [_post(connection, path, body, content_type) for _ in range(turn)]
                if number >= WARM_UP_ROUNDS:
                    turns[name].append(seconds)
    finally:
        for connection in connections.values():
            connection.close()
    return {name: _summary(values, turns[baseline]) for name, values in turns.items()}


def _summary(turns: list[list[float]], baseline: list[list[float]]) -> LoneResult:
    warm = [seconds for each in turns for seconds in each[1:]]
    pairs = list(zip(turns, baseline, strict=True))
    return LoneResult(
        p50_ms=statistics.median(warm) * 1000,
        p99_ms=percentile(warm, 0.99) * 1000,
        vs_naive_ms=statistics.median(
            statistics.median(ours[1:]) - statistics.median(theirs[1:]) for ours, theirs in pairs
        )
        * 1000,
        cold_p50_ms=statistics.median(each[0] for each in turns) * 1000,
        cold_vs_naive_ms=statistics.median(ours[0] - theirs[0] for ours, theirs in pairs) * 1000,
    )


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, kind: str) -> float:
    started = time.perf_counter()
    connection.request("POST", path, body, {"Content-Type": kind})
    response = connection.getresponse()
    response.read()
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"a lone request to {path} answered {response.status}")
    return seconds
