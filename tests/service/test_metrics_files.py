"""The front ends' /metrics over prometheus_client's multiprocess files, in every state a
process leaves them: one counting process writes them for real; the exposition reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from tests.metrics import samples, value

COUNT = """
from service.metrics import Metrics
metrics = Metrics()
for _ in range({n}):
    metrics.count_request("gap", "classify", "ok", "rest")
"""


def _count_in_a_front_end(folder: Path, n: int) -> None:
    """A process with the front ends' environment counts n requests into its own files."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", COUNT.format(n=n)], env=env, check=True, timeout=60)


def _exposition(folder: Path, monkeypatch) -> str:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    return Metrics(CollectorRegistry(), process=False).exposition().decode()


def test_front_ends_counts_add_up(tmp_path, monkeypatch) -> None:
    _count_in_a_front_end(tmp_path, 3)
    _count_in_a_front_end(tmp_path, 4)
    labels = {"model": "gap", "endpoint": "classify", "outcome": "ok", "protocol": "rest"}
    assert (
        value(samples(_exposition(tmp_path, monkeypatch)), "convbridge_requests_total", **labels)
        == 7
    )


def test_a_file_not_sized_yet_is_read_as_no_samples(tmp_path, monkeypatch) -> None:
    """A front end creates its file empty and sizes it just after: /metrics read in between
    (or forever, if the process was killed in between) answered 500 (struct.error)."""
    _count_in_a_front_end(tmp_path, 5)
    (tmp_path / "counter_999999.db").touch()
    (tmp_path / "histogram_999999.db").touch()
    text = _exposition(tmp_path, monkeypatch)
    labels = {"model": "gap", "endpoint": "classify", "outcome": "ok", "protocol": "rest"}
    assert value(samples(text), "convbridge_requests_total", **labels) == 5
    # the histogram family, whose only file is the empty one, is still named, as in one process
    assert "# TYPE convbridge_http_request_duration_seconds histogram" in text
