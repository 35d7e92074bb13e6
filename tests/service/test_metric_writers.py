"""The request path's metric writers (service/metric_writers.py) leave a front end's files
exactly as prometheus_client's own observe() and inc() would: each side writes the same
observations, in its own process, into its own folder, and the files are compared byte for
byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.metrics import LATENCY_BUCKETS, Metrics
from tests.metrics import samples, value

# Bounds exactly, just past them, below the first, past the last finite one, zero, a NaN.
AMOUNTS = [0.0, 0.0005, 0.00050001, 0.0001, 0.03, 7.5, 10.0, 12.0, 0.25, float("nan")]
WRITE = """
import json
import sys
from service.metrics import Metrics

fast = sys.argv[1] == "fast"
metrics = Metrics(process=False)
amounts = json.loads({amounts!r})
for index, seconds in enumerate(amounts):
    stage = ("decode", "queue", "compute", "encode")[index % 4]
    if fast:
        metrics.observe_stage("gap", 1, stage, seconds)
        metrics.observe_http("POST", "/models/{{name}}/classify", 200, seconds)
        metrics.count_request("gap", "classify", "ok", "rest")
    else:
        metrics.inference_duration.labels("gap", "1", stage).observe(seconds)
        metrics.http_duration.labels("POST", "/models/{{name}}/classify", "200").observe(seconds)
        metrics.requests.labels("gap", "classify", "ok", "rest").inc()
# The writers in use are this module's, not a fallback to the children's own methods.
writer = metrics._stage("gap", "1", "decode")
print(getattr(writer, "__self__", None) is None and writer is not None)
"""


def _write(folder: Path, how: str) -> bool:
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", WRITE.format(amounts=json.dumps(AMOUNTS)), how],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() == "True"


def _files(folder: Path) -> dict[str, bytes]:
    """Each file's contents by its kind (``histogram``, ``counter``): the pid left out."""
    return {path.name.split("_")[0]: path.read_bytes() for path in sorted(folder.glob("*.db"))}


def test_the_writers_leave_the_same_bytes_as_prometheus_client(tmp_path) -> None:
    assert _write(tmp_path / "fast", "fast"), "the front ends' writers fell back to observe()"
    _write(tmp_path / "own", "own")
    fast, own = _files(tmp_path / "fast"), _files(tmp_path / "own")
    assert sorted(fast) == ["counter", "histogram"]
    assert fast == own


def test_the_writers_count_what_the_page_shows(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "fast", "fast")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "fast"))
    page = samples(Metrics(CollectorRegistry(), process=False).exposition().decode())
    route = {"method": "POST", "route": "/models/{name}/classify", "status": "200"}
    name = "convbridge_http_request_duration_seconds"
    # A NaN is counted in no bucket, +Inf's included, as prometheus_client does it; the
    # multiprocess page's count is the +Inf bucket's.
    assert value(page, f"{name}_bucket", le="+Inf", **route) == len(AMOUNTS) - 1
    assert value(page, f"{name}_count", **route) == len(AMOUNTS) - 1
    at_most = {bound: sum(a <= bound for a in AMOUNTS) for bound in LATENCY_BUCKETS}
    for bound, count in at_most.items():
        assert value(page, f"{name}_bucket", le=str(bound), **route) == count, bound
    labels = {"model": "gap", "endpoint": "classify", "outcome": "ok", "protocol": "rest"}
    assert value(page, "convbridge_requests_total", **labels) == len(AMOUNTS)


def test_without_multiprocess_files_the_writers_are_the_childrens_own(monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.observe_stage("gap", 1, "decode", 0.002)
    metrics.count_request("gap", "classify", "ok", "rest")
    registry = metrics.registry
    labels = {"model": "gap", "version": "1", "stage": "decode"}
    assert registry.get_sample_value("convbridge_inference_duration_seconds_sum", labels) == 0.002
    assert metrics._stage("gap", "1", "decode").__self__ is not None  # a bound observe()
    with pytest.raises(ValueError, match="non-negative"):
        metrics._outcome("gap", "classify", "ok", "rest")(-1.0)
