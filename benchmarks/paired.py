"""Throughput targets, paired: the server's run between two ceilings taken seconds around it.

The targets are ratios of convbridge at c=64 to the in-process ceiling at batch 32, and this
VM's speed drifts by 10-20% within one run (docs/throughput.md): the table's ceilings are
measured minutes apart, before and after every server, and one run saw `flatten`'s go from
1,184 to 1,255 images/s between the two. Taking the faster of those keeps the table's ratios
from flattering the server, but it also moves them with the drift by as much as the margins
the targets are judged by. Here the server's run sits between two in-process measurements
taken right before and right after it, in several rounds; each round's ratio is against the
faster of its two ceilings (still the harder reading of the moment), and the target is
judged on the median round. The same idea as the lone-request check (benchmarks/lone.py),
which takes turns between servers so that all of them see the same moments.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.ceiling import Ceiling
    from benchmarks.servers import ServerProcess

ROUNDS = 3
CONCURRENCY = 64  # the targets' load
BATCH = 32  # and the ceiling's batch
CEILING_SECONDS = 3.0  # as long as each of the table's ceilings


@dataclass(frozen=True)
class PairedRound:
    ceiling_before: float  # images/s in process, right before the server's run
    run: Mapping[str, Any]  # the server's run (a LoadResult as a dict): throughput and more
    ceiling_after: float  # and right after it

    @property
    def ratio(self) -> float:
        """The run's throughput against the faster of the two ceilings around it."""
        return float(self.run["throughput"]) / max(self.ceiling_before, self.ceiling_after)


def measure_paired(
    ceiling: Callable[[], float], load: Callable[[], Mapping[str, Any]], rounds: int = ROUNDS
) -> list[PairedRound]:
    """``rounds`` runs of ``load``, each between two calls of ``ceiling`` (shared by neighbours)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    ceilings = [ceiling()]
    runs = []
    for _ in range(rounds):
        runs.append(load())
        ceilings.append(ceiling())
    return [PairedRound(ceilings[i], run, ceilings[i + 1]) for i, run in enumerate(runs)]


def median_ratio(rounds: list[dict[str, Any]]) -> float:
    """The median ratio of rounds as the results' JSON holds them (:func:`as_dicts`)."""
    return statistics.median(paired["ratio"] for paired in rounds)


def as_dicts(rounds: list[PairedRound]) -> list[dict[str, Any]]:
    """The rounds as the results' JSON holds them, each ratio written out."""
    return [
        {
            "ceiling_before": paired.ceiling_before,
            "run": dict(paired.run),
            "ceiling_after": paired.ceiling_after,
            "ratio": paired.ratio,
        }
        for paired in rounds
    ]


def pair_with_ceiling(
    server: ServerProcess,
    path: str,
    body: Path,
    ceiling: Ceiling,
    seconds: float,
    workdir: Path,
) -> dict[str, Any]:
    """``server`` (started) under wrk at c=64, ROUNDS times, between ceilings at batch 32."""
    from benchmarks.load import run_wrk

    def in_process() -> float:
        result = ceiling.measure(BATCH, CEILING_SECONDS)
        print(f"  in process, batch {BATCH}: {result.images_per_second:8.1f} images/s", flush=True)
        return result.images_per_second

    def load() -> dict[str, Any]:
        result = run_wrk(server.url + path, body, CONCURRENCY, seconds, server.pid, workdir)
        print(f"  over HTTP, c={CONCURRENCY}:  {result.throughput:8.1f} req/s", flush=True)
        return asdict(result)

    server.wait_ready()
    run_wrk(server.url + path, body, 8, 2, server.pid, workdir)  # warm the whole path up
    rounds = measure_paired(in_process, load)
    return {"concurrency": CONCURRENCY, "batch": BATCH, "rounds": as_dicts(rounds)}
