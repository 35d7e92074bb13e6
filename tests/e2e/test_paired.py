"""benchmarks/paired.py: each server run between two ceilings taken right around it, and the
throughput target judged on the median of those rounds.

The pairing runs on real parts: the demo `gap` SavedModel called in process and the session's
server over a real socket (plain http.client requests: wrk is the benchmark's load, and CI has
no wrk). The report's tests feed it rounds with chosen figures.
"""

from __future__ import annotations

import http.client
import time

import pytest

from benchmarks.ceiling import Ceiling
from benchmarks.paired import as_dicts, measure_paired, median_ratio
from benchmarks.report import format_markdown
from convbridge.layout import list_versions, version_dir
from tests.bench_results import bench_results
from tests.images import digit_png

pytestmark = [pytest.mark.e2e]

SERVER = "convbridge, 1 front end(s)"


def test_each_run_sits_between_the_ceilings_measured_right_around_it(
    server, demo_repository, digits
) -> None:
    model = version_dir(demo_repository, "gap", list_versions(demo_repository / "gap")[-1])
    ceiling = Ceiling(model, (28, 28, 1))
    body = digit_png(digits.test.images[0])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    events: list[tuple[str, float]] = []

    def in_process() -> float:
        result = ceiling.measure(batch=8, seconds=0.05)
        events.append(("ceiling", result.images_per_second))
        return result.images_per_second

    def load() -> dict[str, float]:
        started = time.perf_counter()
        for _ in range(20):
            connection.request("POST", "/models/gap/classify", body, {"Content-Type": "image/png"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        throughput = 20 / (time.perf_counter() - started)
        events.append(("load", throughput))
        return {"throughput": throughput, "errors": 0}

    try:
        rounds = measure_paired(in_process, load, rounds=2)
    finally:
        connection.close()

    assert [kind for kind, _ in events] == ["ceiling", "load", "ceiling", "load", "ceiling"]
    figures = [value for _, value in events]
    assert all(value > 0 for value in figures)
    # Neighbouring rounds share the ceiling between them.
    assert [(r.ceiling_before, r.run["throughput"], r.ceiling_after) for r in rounds] == [
        (figures[0], figures[1], figures[2]),
        (figures[2], figures[3], figures[4]),
    ]
    for paired in rounds:  # against the faster of the two around it
        assert paired.ratio == paired.run["throughput"] / max(
            paired.ceiling_before, paired.ceiling_after
        )
    assert median_ratio(as_dicts(rounds)) == sum(r.ratio for r in rounds) / 2
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        measure_paired(in_process, load, rounds=0)


def _with_paired(throughputs: list[float], ceilings: list[float], errors: int = 0) -> dict:
    """bench_results with paired rounds of these figures (its table says 0.10x the ceiling)."""
    results = bench_results(0.25)
    figures = iter(ceilings)
    runs = iter(throughputs)
    template = results["comparisons"][0]["runs"][SERVER][0]
    rounds = measure_paired(
        lambda: next(figures),
        lambda: {**template, "throughput": next(runs), "errors": errors},
        rounds=len(throughputs),
    )
    results["comparisons"][0]["paired"] = {
        "server": SERVER,
        "concurrency": 64,
        "batch": 32,
        "rounds": as_dicts(rounds),
    }
    return results


@pytest.mark.parametrize(
    ("throughputs", "ratios", "median", "mark"),
    [
        ([520.0, 480.0, 510.0], "0.52 / 0.48 / 0.51", "0.51x", "yes"),
        ([490.0, 480.0, 520.0], "0.49 / 0.48 / 0.52", "0.49x", "**no**"),
    ],
)
def test_the_throughput_target_is_judged_on_the_median_paired_round(
    throughputs, ratios, median, mark
) -> None:
    report = format_markdown(_with_paired(throughputs, [1000.0] * 4))

    check = next(line for line in report.splitlines() if "c=64 >= 0.5x ceiling" in line)
    assert f"| {median}, the median of {ratios} paired ({SERVER}; 0.10x in the table) |" in check
    assert check.endswith(f"| {mark} |")
    assert f"| 1 | 1,000 | {throughputs[0]:,.0f} | 10.00 | 12.00 | 0 | 1,000 |" in report


def test_a_ratio_just_under_the_target_is_not_shown_rounded_onto_it() -> None:
    # 0.4965 to two decimals reads 0.50: a miss shown as the target itself.
    report = format_markdown(_with_paired([496.5, 502.0, 494.0], [1000.0] * 4))

    check = next(line for line in report.splitlines() if "c=64 >= 0.5x ceiling" in line)
    assert "| 0.496x, the median of 0.496 / 0.50 / 0.49 paired" in check  # 0.502: 0.50
    assert check.endswith("| **no** |")


def test_a_round_is_judged_against_the_faster_ceiling_around_it() -> None:
    # The VM sped up during the second run: its ratio is taken against the 1,250 after it.
    report = format_markdown(_with_paired([500.0, 500.0, 500.0], [1000.0, 1000.0, 1250.0, 1000.0]))

    assert "| 2 | 1,000 | 500 | 10.00 | 12.00 | 0 | 1,250 | 0.40 |" in report
    assert "| 3 | 1,250 | 500 | 10.00 | 12.00 | 0 | 1,000 | 0.40 |" in report
    check = next(line for line in report.splitlines() if "c=64 >= 0.5x ceiling" in line)
    assert "0.40x, the median of 0.50 / 0.40 / 0.40 paired" in check


def test_errors_in_a_paired_round_fail_the_no_errors_check() -> None:
    report = format_markdown(_with_paired([520.0, 480.0, 510.0], [1000.0] * 4, errors=1))

    check = next(line for line in report.splitlines() if f"no errors ({SERVER})" in line)
    assert check.endswith("| 3 | **no** |")
