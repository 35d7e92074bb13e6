"""benchmarks/lone.py: lone requests in turns taken between servers, and the c=1 check it feeds.

Over a real socket to the session's server: two names for the same server are two keep-alive
connections answered by one process, so the comparison between them must come out exactly
even for the baseline and close to even for the other.
"""

from __future__ import annotations

import pytest

from benchmarks.lone import _summary, measure_lone
from benchmarks.report import LATENCY_MARGIN_MS, TUNED, TUNED_FRONT_ENDS, format_markdown
from tests.bench_results import bench_results
from tests.images import digit_png

pytestmark = [pytest.mark.e2e]


def test_every_server_is_timed_in_every_round_against_the_baseline(server, digits) -> None:
    body = digit_png(digits.test.images[0])
    path = "/models/gap/classify"
    results = measure_lone(
        {"naive": (server, path), "again": (server, path)}, body, rounds=12, turn=4
    )

    assert set(results) == {"naive", "again"}
    assert results["naive"].vs_naive_ms == 0.0  # each round against itself
    assert results["naive"].cold_vs_naive_ms == 0.0
    for result in results.values():
        assert 0 < result.p50_ms <= result.p99_ms
        assert result.cold_p50_ms > 0
    # The same server behind two connections: the median difference is far below the margin.
    assert abs(results["again"].vs_naive_ms) < LATENCY_MARGIN_MS


def test_the_first_request_of_a_turn_is_timed_apart_from_the_rest() -> None:
    # Seconds: each turn's first request is slow (the other servers swept the caches).
    ours = [[0.009, 0.004, 0.005, 0.004], [0.011, 0.006, 0.004, 0.004]]
    naive = [[0.008, 0.003, 0.003, 0.004], [0.008, 0.003, 0.004, 0.003]]

    result = _summary(ours, naive)

    assert result.p50_ms == pytest.approx(4.0)  # 4, 5, 4, 6, 4, 4: the firsts left out
    assert result.p99_ms == pytest.approx(6.0)
    # Turn medians 4 - 3 and 4 - 3: back to back, 1 ms slower.
    assert result.vs_naive_ms == pytest.approx(1.0)
    assert result.cold_p50_ms == pytest.approx(10.0)
    assert result.cold_vs_naive_ms == pytest.approx(2.0)  # median of 1 and 3


def test_a_turn_needs_a_request_after_its_first() -> None:
    with pytest.raises(ValueError, match="at least one after it"):  # before any connection
        measure_lone({}, b"", turn=1)


def test_a_server_that_fails_a_request_stops_the_measurement(server, digits) -> None:
    body = digit_png(digits.test.images[0])
    servers = {
        "naive": (server, "/models/gap/classify"),
        "broken": (server, "/models/nope/classify"),
    }
    with pytest.raises(RuntimeError, match="answered 404"):
        measure_lone(servers, body, rounds=1, turn=2)


@pytest.mark.parametrize(("extra", "mark"), [(0.25, "yes"), (0.35, "**no**")])
def test_the_lone_request_target_is_checked_on_the_interleaved_difference(extra, mark) -> None:
    report = format_markdown(bench_results(extra))

    assert "| convbridge, 1 front end(s) | " in report  # the interleaved table's row
    assert "| 4.50 | +0.50 ms |" in report  # with its turns' first requests apart
    check = next(line for line in report.splitlines() if "lone request p50" in line)
    assert f"{extra:+.2f} ms" in check
    assert check.endswith(f"| {mark} |")


def test_a_tuned_server_is_shown_but_never_meets_a_target_for_the_defaults() -> None:
    results = bench_results(0.25)
    comparison = results["comparisons"][0]
    tuned = f"{TUNED}, {TUNED_FRONT_ENDS} front end(s)"
    fast = {**comparison["runs"]["naive"][0], "throughput": 900.0}  # 0.9x the ceiling
    comparison["runs"][tuned] = [fast]
    comparison["lone"][tuned] = {
        "p50_ms": 4.0,
        "p99_ms": 5.0,
        "vs_naive_ms": 2.0,
        "cold_p50_ms": 6.0,
        "cold_vs_naive_ms": 2.5,
    }

    report = format_markdown(results)

    assert f"| {tuned} | 64 | 900 |" in report  # in the throughput table
    assert f"| {tuned} | 4.00 | 5.00 | +2.00 ms | 6.00 | +2.50 ms |" in report  # and lone
    checks = [line for line in report.splitlines() if line.startswith("| `gap`")]
    assert checks and not any(tuned in line for line in checks)
    ceiling = next(line for line in checks if "ceiling" in line)
    assert "(convbridge, 1 front end(s))" in ceiling  # the default's 0.10x, not the tuned 0.90x
    assert ceiling.endswith("| **no** |")
