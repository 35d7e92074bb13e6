"""The front ends' /metrics over prometheus_client's multiprocess files, in every state a
process leaves them: one counting process writes them for real; the exposition reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.metrics import Metrics, archive_dead
from tests.metrics import samples, value

COUNT = """
import os
from service.metrics import Metrics, archive_dead
metrics = Metrics()
for i in range({n}):
    metrics.count_request("gap", "classify", "ok", "rest")
    metrics.observe_http("POST", "/models/{{name}}/classify", 200, 0.001 * (i + 1))
print(os.getpid())
"""
LABELS = {"model": "gap", "endpoint": "classify", "outcome": "ok", "protocol": "rest"}
ROUTE = {"method": "POST", "route": "/models/{name}/classify", "status": "200"}


def _count_in_a_front_end(folder: Path, n: int) -> int:
    """A process with the front ends' environment counts n requests into its own files; its
    pid."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", COUNT.format(n=n)],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


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


def test_a_dead_front_ends_counts_join_the_archive(tmp_path, monkeypatch) -> None:
    """What the supervisor does when a front end dies: its files go, its counts stay."""
    first, second = _count_in_a_front_end(tmp_path, 3), _count_in_a_front_end(tmp_path, 4)
    before = samples(_exposition(tmp_path, monkeypatch))
    assert value(before, "convbridge_requests_total", **LABELS) == 7
    archive_dead(str(tmp_path), first)
    assert not list(tmp_path.glob(f"*_{first}.db"))
    assert (tmp_path / "counter_archive.db").exists()
    assert (tmp_path / "histogram_archive.db").exists()
    assert samples(_exposition(tmp_path, monkeypatch)) == before  # every bucket, sum and count
    archive_dead(str(tmp_path), second)  # onto an archive that holds counts already
    archive_dead(str(tmp_path), second)  # again: nothing left to fold, nothing changes
    third = _count_in_a_front_end(tmp_path, 2)  # a live one beside the archive
    after = samples(_exposition(tmp_path, monkeypatch))
    assert {path.name for path in tmp_path.glob("*.db")} == {
        "counter_archive.db",
        f"counter_{third}.db",
        "histogram_archive.db",
        f"histogram_{third}.db",
    }
    assert value(after, "convbridge_requests_total", **LABELS) == 9
    assert value(after, "convbridge_http_request_duration_seconds_count", **ROUTE) == 9
    # 1+2+3 ms, 1+2+3+4 ms and 1+2 ms
    assert abs(value(after, "convbridge_http_request_duration_seconds_sum", **ROUTE) - 0.019) < 1e-9
    le_2ms = {**ROUTE, "le": "0.002"}
    assert value(after, "convbridge_http_request_duration_seconds_bucket", **le_2ms) == 6
