"""Benchmark results for the report's tests: the shape `python -m benchmarks` writes."""

from __future__ import annotations

from typing import Any


def bench_results(vs_naive_ms: float) -> dict[str, Any]:
    """A benchmark run's results, as `python -m benchmarks` writes them: one `gap` comparison
    at c=64, 0.10x the ceiling, with a lone request ``vs_naive_ms`` slower than the naive
    server's."""
    run = {
        "concurrency": 64,
        "throughput": 100.0,
        "p50_ms": 10.0,
        "p99_ms": 12.0,
        "errors": 0,
        "cpu_ms_per_request": 1.0,
        "server_cpu": 1.0,
        "wrk_cpu": 0.1,
    }
    lone = {
        "p50_ms": 2.0 + vs_naive_ms,
        "p99_ms": 3.0,
        "vs_naive_ms": vs_naive_ms,
        "cold_p50_ms": 4.5,
        "cold_vs_naive_ms": 0.5,
    }
    comparison = {
        "variant": "gap",
        "ceiling": [{"batch": 32, "images_per_second": 1000.0, "median_ms": 32.0}],
        "runs": {"naive": [run], "convbridge, 1 front end(s)": [run]},
        "lone": {
            "naive": {
                "p50_ms": 2.0,
                "p99_ms": 3.0,
                "vs_naive_ms": 0.0,
                "cold_p50_ms": 4.0,
                "cold_vs_naive_ms": 0.0,
            },
            "convbridge, 1 front end(s)": lone,
        },
    }
    return {
        "machine": "test",
        "command": "python -m benchmarks",
        "date": "2026-11-23",
        "seconds": 1,
        "comparisons": [comparison],
    }
