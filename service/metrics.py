"""Every Prometheus metric of the service, defined once, on an injectable registry."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.metric_writers import Writer, counter_writer, histogram_writer

NAMESPACE = "convbridge"
STAGES = ("decode", "queue", "compute", "encode")
# Requests on two CPU cores take 1-100 ms; a GPU goes below, overload goes above.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.015,
    0.03,
    0.06,
    0.125,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The service's metrics; tests pass their own registry and read it with get_sample_value."""

    def __init__(
        self, registry: CollectorRegistry | None = None, process: bool = True, http: bool = True
    ) -> None:
        """``http=False`` (the executor process): leave out the metrics of the HTTP side, which
        the front ends report, so that the two expositions never name a family twice."""
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            if process:
                # The default collectors live on the global registry; re-register them here.
                for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                    registry.register(collector)
        self.registry = registry
        http_registry = registry if http else CollectorRegistry()
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration by route template and status code.",
            ["method", "route", "status"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=http_registry,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds",
            "Time per request in each inference stage: decode, queue, compute, encode.",
            ["model", "version", "stage"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=http_registry,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Images per model call, after dynamic batching.",
            ["model", "version"],
            namespace=NAMESPACE,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.grpc_duration = Histogram(
            "grpc_request_duration_seconds",
            "gRPC call duration by service, method and status code.",
            ["service", "method", "code"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=http_registry,
        )
        self.requests = Counter(
            "requests",
            "Inference requests by outcome (ok, client_error, unavailable, timeout, error) and "
            "protocol (rest, grpc).",
            ["model", "endpoint", "outcome", "protocol"],
            namespace=NAMESPACE,
            registry=http_registry,
        )
        # labels() takes a lock and converts every value on each call: the request path keeps
        # a writer for each child it made (bounded: these label sets are, and so is each cache).
        self._http = _writers(self.http_duration, histogram_writer)
        self._stage = _writers(self.inference_duration, histogram_writer)
        self._outcome = _writers(self.requests, counter_writer)
        self.queue_depth = Gauge(
            "queue_depth",
            "Images waiting for a model call.",
            ["model", "version"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.model_loaded = Gauge(
            "model_loaded",
            "1 while a model version is loaded, warm and serving on the device named.",
            ["model", "version", "device"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.model_load_seconds = Histogram(
            "model_load_seconds",
            "Time to load and warm up a model version.",
            ["model", "version"],
            namespace=NAMESPACE,
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.model_load_failures = Counter(
            "model_load_failures",
            "Model versions that failed to load.",
            ["model", "version"],
            namespace=NAMESPACE,
            registry=registry,
        )

    def exposition(self) -> bytes:
        """This registry in Prometheus' text format; with PROMETHEUS_MULTIPROC_DIR set (front
        ends), the sum over every front-end process instead."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not folder:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        merged.register(_FrontEnds(folder, self._http_families))
        return generate_latest(merged)

    @property
    def _http_families(self) -> list[Collector]:
        return [self.http_duration, self.grpc_duration, self.inference_duration, self.requests]

    def observe_stage(self, model: str, version: int, stage: str, seconds: float) -> None:
        self._stage(model, str(version), stage)(seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self._http(method, route, str(status))(seconds)

    def count_request(self, model: str, endpoint: str, outcome: str, transport: str) -> None:
        self._outcome(model, endpoint, outcome, transport)(1.0)


def _writers(family: Histogram | Counter, writer: Callable[[Any], Writer]) -> Callable[..., Writer]:
    """``labels(*values)``, cached, as the writer of the child it makes."""
    return functools.lru_cache(maxsize=1024)(lambda *labels: writer(family.labels(*labels)))


@functools.cache  # two possible pages, rendered once each rather than on every scrape
def executor_up(up: bool) -> bytes:
    """The ``convbridge_executor_up`` gauge, in Prometheus' text format: 1 when the page holds
    the executor's families (always, in one process), 0 while the executor is starting,
    restarting or not answering, when a scrape still gets the front ends' metrics."""
    family = GaugeMetricFamily(
        f"{NAMESPACE}_executor_up",
        "1 when the model executor answered this scrape; 0 while it is starting, restarting or "
        "not answering (its families are then missing from the page).",
        value=1.0 if up else 0.0,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([family]))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _FrontEnds(Collector):
    """Every front end's samples (from their files), and the HTTP-side families that have
    none yet, so /metrics names them from the start as one process does."""

    def __init__(self, folder: str, families: list[Collector]) -> None:
        self._folder = folder
        self._families = families

    def collect(self) -> Iterable[Metric]:
        with _folder_lock(self._folder, fcntl.LOCK_SH):  # no archiving half done (below)
            files = _sized_files(self._folder)
            merged = list(MultiProcessCollector.merge(files))  # type: ignore[no-untyped-call]
        seen = {family.name for family in merged}
        for collector in self._families:
            merged += [family for family in collector.collect() if family.name not in seen]
        return merged


def _sized_files(folder: str) -> list[str]:
    """The metric files of ``folder`` that have their size: a process creates its file empty
    and only then sizes it (prometheus_client's MmapedDict), and an empty file is what
    MultiProcessCollector cannot read (struct.error, so /metrics would answer 500 whenever it
    reads the moment a front end counts its first request, or forever after one was killed in
    between). A sized file is zeros or whole entries: its header is written after each entry."""
    return [path for path in glob.glob(os.path.join(folder, "*.db")) if _sized(path)]


# The counts of front ends that died, folded into one file per type (the reader takes the
# type from the name's first part; counters and histograms do not use the rest).
ARCHIVE = "archive"


def archive_dead(folder: str, pid: int) -> None:
    """Fold a dead front end's counter and histogram files into the folder's archive files,
    so that its counts still count and a front end that keeps dying does not leave two files
    (128 KiB of shared memory, read by every scrape) per death. Under the folder's lock, so a
    scrape never sees a count twice or not at all."""
    with _folder_lock(folder, fcntl.LOCK_EX):
        for kind in ("counter", "histogram"):
            dead = os.path.join(folder, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = os.path.join(folder, f"{kind}_{ARCHIVE}.db")
            sources = [path for path in (archive, dead) if _sized(path)]
            # accumulate=False: the counts as stored (histogram buckets not yet cumulative)
            families = MultiProcessCollector.merge(sources, accumulate=False)  # type: ignore[no-untyped-call]
            fresh = archive + ".new"  # not *.db: no reader looks at it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fresh)
            written = MmapedDict(fresh)  # type: ignore[no-untyped-call]
            for family in families:
                for sample in family.samples:
                    key = mmap_key(
                        family.name,
                        sample.name,
                        list(sample.labels),
                        list(sample.labels.values()),
                        family.documentation,
                    )
                    written.write_value(key, sample.value, 0.0)  # type: ignore[no-untyped-call]
            written.close()  # type: ignore[no-untyped-call]
            os.replace(fresh, archive)
            os.unlink(dead)


@contextlib.contextmanager
def _folder_lock(folder: str, operation: int) -> Iterator[None]:
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


def _sized(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except FileNotFoundError:  # no archive yet, or a dead process's live gauge removed since
        return False
