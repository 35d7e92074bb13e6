"""The benchmark report's scaling section: growth from one front end to two is judged where
the front ends are the bottleneck (TF Serving JSON, parsed holding the GIL), and shown, not
judged, for JPEGs, whose decoding leaves the GIL and so already uses every core from one
front end."""

from __future__ import annotations

from typing import Any

from benchmarks.report import format_markdown
from tests.bench_results import bench_results

JSON, JPEG = "TF Serving JSON (32x32x3 pixel lists)", "640x480 JPEG"


def _levels(throughput: float) -> list[dict[str, Any]]:
    run = bench_results(0.0)["comparisons"][0]["runs"]["naive"][0]
    return [{**run, "concurrency": 64, "throughput": throughput}]


def _body(name: str, judged: bool, one: float, two: float) -> dict[str, Any]:
    return {
        "body": name,
        "bytes": 11_893,
        "path": "/v1/models/gap:predict",
        "judged": judged,
        "runs": {
            "convbridge, 1 front end(s)": _levels(one),
            "convbridge, 2 front end(s)": _levels(two),
        },
    }


def _growth_checks(scaling: dict[str, Any]) -> tuple[str, list[str]]:
    results = bench_results(0.0)
    results["comparisons"][0]["scaling"] = scaling
    report = format_markdown(results)
    return report, [line for line in report.splitlines() if "grows with front ends" in line]


def test_growth_is_judged_on_the_json_bodies_and_the_jpeg_rows_are_shown() -> None:
    report, checks = _growth_checks(
        {"bodies": [_body(JSON, True, 1000.0, 1400.0), _body(JPEG, False, 300.0, 290.0)]}
    )
    assert checks == [f"| `gap` {JSON} c=64 grows with front ends | 1,000 -> 1,400 req/s | yes |"]
    assert "| convbridge, 2 front end(s) | 64 | 290 |" in report  # JPEGs: in the table
    assert f"`gap`, {JPEG} bodies of 11,893 bytes" in report
    assert "growth with front ends shown, not judged" in report


def test_json_bodies_that_do_not_grow_fail_the_check() -> None:
    _, checks = _growth_checks({"bodies": [_body(JSON, True, 1000.0, 990.0)]})
    assert checks == [f"| `gap` {JSON} c=64 grows with front ends | 1,000 -> 990 req/s | **no** |"]


def test_results_from_before_the_json_bodies_still_render() -> None:
    """Earlier runs measured JPEGs alone, judged: their files render as they did."""
    old = _body(JPEG, True, 451.0, 497.0)
    del old["judged"], old["path"]
    _, checks = _growth_checks(old)
    assert checks == [f"| `gap` {JPEG} c=64 grows with front ends | 451 -> 497 req/s | yes |"]
