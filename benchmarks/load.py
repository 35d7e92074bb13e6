"""Load generation with wrk (C, one thread): cheap enough to share two cores with a server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA = r"""
local file = io.open(os.getenv("CONVBRIDGE_BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = file:read("*all")
file:close()
wrk.headers["Content-Type"] = os.getenv("CONVBRIDGE_BENCH_TYPE")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by rank (0 when there are none), as every table gives it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class WrkMissingError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int  # connection errors, timeouts and non-2xx answers
    wrk_cpu: float  # CPU seconds wrk used per wall second (1.0 = one core)
    server_cpu: float  # the same for the server and all its processes
    cpu_ms_per_request: float  # server CPU (all processes) per answered request


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and every process it started, from /proc."""
    from benchmarks.servers import process_tree

    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    body: Path,
    concurrency: int,
    seconds: float,
    server_pid: int,
    workdir: Path,
    content_type: str = "image/png",
) -> LoadResult:
    """POST ``body`` to ``url`` from ``concurrency`` connections for ``seconds``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkMissingError("wrk is not installed: apt-get install wrk (Debian's package)")
    script = workdir / "post.lua"
    script.write_text(LUA)
    server_before = process_cpu_seconds(server_pid)
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "CONVBRIDGE_BENCH_BODY": str(body),
            "CONVBRIDGE_BENCH_TYPE": content_type,
        },
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    output = process.stdout.read() if process.stdout else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = process_cpu_seconds(server_pid) - server_before
    line = next((ln for ln in output.splitlines() if ln.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {output[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    duration = data["duration_us"] / 1e6
    return LoadResult(
        concurrency=concurrency,
        requests=data["requests"],
        seconds=round(duration, 2),
        throughput=data["requests"] / duration,
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"] + data["non2xx"],
        wrk_cpu=(usage.ru_utime + usage.ru_stime) / wall,
        server_cpu=server_cpu / wall,
        cpu_ms_per_request=server_cpu * 1000 / max(1, data["requests"]),
    )
