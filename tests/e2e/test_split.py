"""The split over a real socket: front ends and one executor, their faults, and one /metrics.

Each test starts its own `python -m service` with two front ends on a copy of `gap`, kills
or counts what it needs, and bounds its traffic in requests and seconds.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.servers import ServerProcess, process_tree
from service.heartbeat import INTERVAL_S, STALE_S
from tests.conftest import start_server
from tests.images import digit_png
from tests.metrics import samples, value
from tests.models import export_slow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TIMEOUT_S = 5.0  # the server's request timeout in these tests


@pytest.fixture
def split(gap_repository: Path, tmp_path: Path):
    server = start_server(
        gap_repository,
        tmp_path / "server.log",
        CONVBRIDGE_WORKERS="2",
        CONVBRIDGE_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
        # the stopped-executor test holds it stopped for about 20 s: not a hang to end here
        CONVBRIDGE_HANG_TIMEOUT_S="120",
    )
    try:
        server.wait_ready()
        # /readyz answers once one front end is up; wait for the other too (its arena exists).
        assert wait_for(lambda: len(children(server, "service.frontend")) == 2, 30)
        folder = runtime_folder(server)
        pids = children(server, "service.frontend")
        assert wait_for(lambda: all((folder / f"arena-{pid}").exists() for pid in pids), 60)
        yield server
    finally:
        server.stop()


def tunables(pid: int) -> list[str]:
    """The process's glibc tunables, from its environment. glibc 2.36 parses them in place,
    where /proc/<pid>/environ shows them: each colon became a NUL, so the tunables after the
    first read there as entries of their own."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for at, item in enumerate(environ):
        if item.startswith(b"GLIBC_TUNABLES="):
            found = [item[15:]]
            found += itertools.takewhile(lambda more: more.startswith(b"glibc."), environ[at + 1 :])
            return [piece.decode() for text in found for piece in text.split(b":") if piece]
    return []


def children(server: ServerProcess, module: str) -> list[int]:
    """Pids of the server's processes running ``python -m <module>``."""
    found = []
    for pid in process_tree(server.pid)[1:]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in command:
            found.append(pid)
    return found


def runtime_folder(server: ServerProcess) -> Path:
    """The supervisor's folder for the socket, arenas and metrics (a front end's --arena)."""
    pid = children(server, "service.frontend")[0]
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(arguments[arguments.index("--arena") + 1])


def fresh_client(server: ServerProcess) -> httpx.Client:
    """A client that opens a new connection per request, so the kernel spreads them."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(base_url=server.url, timeout=TIMEOUT_S + 5, limits=limits)


class Load(threading.Thread):
    """Classify requests back to back until stopped, recording (sent, seconds, status)."""

    def __init__(self, server: ServerProcess, png: bytes, limit: int = 3000) -> None:
        super().__init__(daemon=True)
        self.server, self.png, self.limit = server, png, limit
        self.results: list[tuple[float, float, int | str]] = []
        self.running = True

    def run(self) -> None:
        with fresh_client(self.server) as client:
            while self.running and len(self.results) < self.limit:
                sent = time.monotonic()
                try:
                    status: int | str = client.post(
                        "/models/gap/classify",
                        content=self.png,
                        headers={"Content-Type": "image/png"},
                    ).status_code
                except httpx.TransportError as error:
                    status = type(error).__name__
                self.results.append((sent, time.monotonic() - sent, status))
                if status != 200:
                    time.sleep(0.02)  # refused: back off a little, as a client should

    def stop(self) -> None:
        self.running = False
        self.join(timeout=30)


def classify(client: httpx.Client, png: bytes) -> httpx.Response:
    return client.post("/models/gap/classify", content=png, headers={"Content-Type": "image/png"})


def post_digit(
    url: str, image: np.ndarray, model: str = "gap", timeout: float = 5.0, **params: str
) -> httpx.Response:
    """One digit as a raw PNG to ``model``'s classify route, on a connection of its own."""
    return httpx.post(
        f"{url}/models/{model}/classify",
        params=params,
        content=digit_png(image),
        headers={"Content-Type": "image/png"},
        timeout=timeout,
    )


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)  # the interval between two checks of the condition
    return False


def ready(server: ServerProcess) -> int:
    try:
        return httpx.get(server.url + "/readyz", timeout=2).status_code
    except httpx.TransportError:
        return 0


def test_one_metrics_page_counts_every_front_end(split: ServerProcess, digits) -> None:
    count = 40
    png = digit_png(digits.test.images[0])
    before = samples(httpx.get(split.url + "/metrics").text)
    with fresh_client(split) as client:
        statuses = Counter(classify(client, png).status_code for _ in range(count))
    after = samples(httpx.get(split.url + "/metrics").text)
    assert statuses == {200: count}
    # Both front ends answered some: each keeps its own metrics file, named by its pid.
    metrics = runtime_folder(split) / "metrics"
    pids = children(split, "service.frontend")
    # Only inference requests write the counters file (/metrics itself writes histograms).
    assert all((metrics / f"counter_{pid}.db").exists() for pid in pids), list(metrics.iterdir())

    def rise(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        rise(
            "convbridge_requests_total",
            model="gap",
            endpoint="classify",
            outcome="ok",
            protocol="rest",
        )
        == count
    )
    route = {"method": "POST", "route": "/models/{name}/classify", "status": "200"}
    assert rise("convbridge_http_request_duration_seconds_count", **route) == count
    for stage in ("decode", "queue", "compute", "encode"):
        labels = {"model": "gap", "version": "1", "stage": stage}
        assert rise("convbridge_inference_duration_seconds_count", **labels) == count
    # The executor's own metrics are on the same page: every image went through a batch.
    assert rise("convbridge_batch_size_sum", model="gap", version="1") == count
    assert value(after, "convbridge_model_loaded", model="gap", version="1", device="/CPU:0") == 1
    assert value(after, "convbridge_executor_up") == 1


def test_each_models_lone_copy_is_sized_by_its_call_alone(server: ServerProcess, digits) -> None:
    """The executor times every model's call alone on one core as it loads it, and gives its
    lone copy every core only when that call is long enough to share, else one thread that
    runs the model's batches too; the log says which, and every model answers."""
    from service.inference.model import SPLIT_MIN_MS

    log = server.log()
    copies = re.search(r"a lone call on (\d+) threads", log)
    choices = re.findall(
        r"(\w+) v1: a call alone takes ([\d.]+) ms on one core: its lone copy gets (\d+) "
        r"thread\(s\)( and runs its batches too)?$",
        log,
        re.MULTILINE,
    )
    if copies is None:  # one core: no copies, nothing to time
        assert choices == []
        return
    models = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
    assert sorted(name for name, *_ in choices) == sorted(model["name"] for model in models)
    for name, milliseconds, threads, batches in choices:
        if abs(float(milliseconds) - SPLIT_MIN_MS) > 0.005:  # the log rounds to 0.01 ms
            every_core = float(milliseconds) >= SPLIT_MIN_MS
            assert threads == (copies[1] if every_core else "1"), (name, milliseconds)
            assert bool(batches) != every_core, (name, milliseconds)  # a light one's batches
        answer = post_digit(server.url, digits.test.images[0], model=name, timeout=30)
        assert answer.status_code == 200, answer.text


def test_the_log_names_the_cpu_kernels_and_the_variable_picks_them(
    server: ServerProcess, gap_repository: Path, tmp_path: Path, digits
) -> None:
    """The executor's log says whose kernels TensorFlow runs on the CPU and who chose them: by
    default what TensorFlow picks in this process too (the same CPU and environment); with
    TF_ENABLE_ONEDNN_OPTS set the other way, the other kernels, and `gap` answers the same
    scores with either."""
    from service.inference.runtime import cpu_kernels

    here = cpu_kernels()
    assert re.search(
        r"inference device: /CPU:0 \(CPU \(.*; " + re.escape(here) + r"\)\)", server.log()
    )
    other = "0" if here.startswith("oneDNN kernels on") else "1"
    flipped = start_server(gap_repository, tmp_path / "server.log", TF_ENABLE_ONEDNN_OPTS=other)
    try:
        flipped.wait_ready()
        state = "on" if other == "1" else "off"
        assert f"; oneDNN kernels {state}, TF_ENABLE_ONEDNN_OPTS={other})" in flipped.log()

        def scores(url: str) -> dict[int, float]:
            answer = post_digit(url, digits.test.images[1], timeout=30, top_k="10")
            assert answer.status_code == 200, answer.text
            return {s["index"]: s["score"] for s in answer.json()["predictions"][0]["top_k"]}

        default, switched = scores(server.url), scores(flipped.url)
        assert sorted(default) == sorted(switched) == list(range(10))
        for index, score in default.items():  # other kernels sum in another order
            assert switched[index] == pytest.approx(score, rel=1e-4, abs=1e-6), index
    finally:
        assert flipped.stop() == 0


def test_the_executor_alone_gets_malloc_tunables(split: ServerProcess, digits) -> None:
    """CONVBRIDGE_HUGE_PAGES (on by default) and CONVBRIDGE_MALLOC_ARENAS (2) reach the
    executor's environment, and only its: the front ends' small heaps keep glibc's defaults."""

    (executor,) = children(split, "service.executor")
    assert {"glibc.malloc.hugetlb=1", "glibc.malloc.arena_max=2"} <= set(tunables(executor))
    for pid in children(split, "service.frontend"):
        assert not any(item.startswith("glibc.malloc.") for item in tunables(pid))
    # It still answers as before (the same probabilities are checked in other tests).
    answer = post_digit(split.url, digits.test.images[0], timeout=TIMEOUT_S + 5)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"][0]["top_k"]) == 5


def test_a_killed_executor_is_replaced_and_no_request_hangs(split: ServerProcess, digits) -> None:
    (executor,) = children(split, "service.executor")
    load = Load(split, digit_png(digits.test.images[0]))
    load.start()
    assert wait_for(lambda: len(load.results) >= 20, 10)
    killed = time.monotonic()
    os.kill(executor, signal.SIGKILL)
    # Readiness drops at once, while the supervisor starts a new executor...
    assert wait_for(lambda: ready(split) == 503, 2)
    answer = post_digit(split.url, digits.test.images[1])
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert "executor" in answer.json()["error"]
    # /metrics still answers meanwhile, with the front ends' counts of the refusals.
    page = httpx.get(split.url + "/metrics")
    assert page.status_code == 200, page.text
    down = samples(page.text)
    assert value(down, "convbridge_executor_up") == 0
    refused = {"model": "gap", "endpoint": "classify", "outcome": "unavailable", "protocol": "rest"}
    assert value(down, "convbridge_requests_total", **refused) >= 1
    assert value(down, "convbridge_model_loaded", model="gap", version="1", device="/CPU:0") == 0
    # ...which loads the model and takes traffic again.
    assert wait_for(lambda: ready(split) == 200, 120)
    up = samples(httpx.get(split.url + "/metrics").text)
    assert value(up, "convbridge_executor_up") == 1
    assert value(up, "convbridge_model_loaded", model="gap", version="1", device="/CPU:0") == 1
    recovered = time.monotonic()
    assert wait_for(lambda: any(s == 200 and t > recovered for t, _, s in load.results), 10)
    load.stop()
    assert len(load.results) < load.limit
    assert children(split, "service.executor") not in ([], [executor])
    statuses = Counter(status for _, _, status in load.results)
    assert set(statuses) <= {200, 503}, statuses
    during = [(seconds, status) for sent, seconds, status in load.results if sent >= killed]
    assert all(status == 503 for sent, _, status in load.results if killed < sent < recovered - 1)
    # No request waited for its deadline: the ones caught by the kill were answered at once.
    assert max(seconds for seconds, _ in during) < TIMEOUT_S


def test_a_stopped_executor_costs_a_deadline_then_503s_at_once(
    split: ServerProcess, digits
) -> None:
    """An executor that stops answering (SIGSTOP: hung, not gone). What was sent to it waits
    for its deadline (504, never a 500); once its heartbeat has been silent for STALE_S the
    front ends say they are not ready, refuse new requests with 503 and Retry-After at once,
    and /metrics answers without asking it. All is well once it resumes."""
    (executor,) = children(split, "service.executor")
    png = digit_png(digits.test.images[0])

    os.kill(executor, signal.SIGSTOP)
    try:
        with fresh_client(split) as client, ThreadPoolExecutor(3) as pool:
            started = time.monotonic()
            in_flight = {  # sent before the front ends could tell: they wait for the deadline
                "classify": pool.submit(classify, client, png),
                "/v2/models/gap": pool.submit(client.get, "/v2/models/gap"),
                "/v1/models/gap/metadata": pool.submit(client.get, "/v1/models/gap/metadata"),
            }
            waited = {key: future.result() for key, future in in_flight.items()}
            waited_s = time.monotonic() - started
            assert waited_s > STALE_S
            # Each front end checks every half beat: once one knows, the other does within one
            # more check.
            assert wait_for(lambda: ready(split) == 503, 5)
            time.sleep(INTERVAL_S / 2 + 0.1)
            refused, refused_s = {}, []
            for key, call in (
                ("/readyz", lambda: client.get("/readyz")),
                ("/v2/models/gap", lambda: client.get("/v2/models/gap")),
                ("classify", lambda: classify(client, png)),
            ):
                sent = time.monotonic()
                refused[key] = call()
                refused_s.append(time.monotonic() - sent)
            sent = time.monotonic()
            page = client.get("/metrics")
            metrics_s = time.monotonic() - sent
    finally:
        os.kill(executor, signal.SIGCONT)
    assert {key: answer.status_code for key, answer in waited.items()} == dict.fromkeys(waited, 504)
    assert "request_timeout_s" in waited["/v2/models/gap"].json()["error"]
    assert waited_s < 2 * TIMEOUT_S + 3  # within their deadline, none for the old 60 s
    assert {key: answer.status_code for key, answer in refused.items()} == dict.fromkeys(
        refused, 503
    )
    for answer in refused.values():
        assert "has not turned its event loop" in answer.text, answer.text
    assert all(answer.headers["Retry-After"].isdigit() for answer in refused.values())
    assert max(refused_s) < 1.0, refused_s  # at once, not at a deadline
    assert page.status_code == 200, page.text
    assert value(samples(page.text), "convbridge_executor_up") == 0
    assert metrics_s < 1.0  # the hung executor was not asked (that waits 3 s)
    # Resumed, the same executor serves again (the supervisor had nothing to restart).
    assert wait_for(lambda: ready(split) == 200, 5)
    time.sleep(INTERVAL_S / 2 + 0.1)  # the other front end's next check
    with fresh_client(split) as client:
        assert client.get("/v2/models/gap").status_code == 200
        assert classify(client, png).status_code == 200
        assert value(samples(client.get("/metrics").text), "convbridge_executor_up") == 1
    assert children(split, "service.executor") == [executor]


def test_a_hung_child_is_killed_and_started_again(gap_repository: Path, tmp_path: Path, digits):
    """A front end or an executor whose event loop stops turning (SIGSTOP stands for a
    deadlock) is killed by the supervisor after CONVBRIDGE_HANG_TIMEOUT_S, then started again
    as if it had died; then every request is served."""
    server = start_server(
        gap_repository,
        tmp_path / "server.log",
        CONVBRIDGE_WORKERS="2",
        CONVBRIDGE_HANG_TIMEOUT_S="4",
        CONVBRIDGE_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
    )
    try:
        server.wait_ready()
        assert wait_for(lambda: len(children(server, "service.frontend")) == 2, 30)
        for module in ("service.frontend", "service.executor"):
            hung = children(server, module)[0]
            os.kill(hung, signal.SIGSTOP)
            time.sleep(1.0)  # well within the limit: still there
            assert hung in children(server, module)
            assert wait_for(
                lambda m=module, h=hung: h not in children(server, m) and children(server, m), 30
            ), module
        assert wait_for(lambda: ready(server) == 200, 120)
        assert wait_for(lambda: len(children(server, "service.frontend")) == 2, 30)
        png = digit_png(digits.test.images[0])
        with fresh_client(server) as client:
            statuses = Counter(classify(client, png).status_code for _ in range(12))
        assert statuses == {200: 12}
        log = (tmp_path / "server.log").read_text()
        assert log.count("has not turned its event loop") == 2, log[-3000:]
    finally:
        server.stop()


def test_a_model_call_that_never_returns_ends_the_executor(
    demo_repository: Path, tmp_path: Path, digits
) -> None:
    """A model call that does not return (a white image puts this `gap` to sleep for minutes:
    a wedged device, say) leaves the executor's loop turning, so its heartbeat goes on and the
    front end stays ready; but the beat says how long the call has run, and past
    CONVBRIDGE_HANG_TIMEOUT_S the supervisor kills the executor and starts it again. The stuck
    request gets 503 then, not a wait for its deadline, and the new executor serves."""
    repository = tmp_path / "models"
    source = demo_repository / "gap" / "1"
    export_slow(source, repository / "gap" / "1", "gap", seconds=300, only_white=True)
    server = start_server(
        repository,
        tmp_path / "server.log",
        CONVBRIDGE_WORKERS="1",
        CONVBRIDGE_HANG_TIMEOUT_S="3",
        CONVBRIDGE_REQUEST_TIMEOUT_S="60",
    )
    png = digit_png(digits.test.images[0])
    white = digit_png(np.full_like(digits.test.images[0], 255))
    try:
        server.wait_ready()
        (executor,) = children(server, "service.executor")
        with fresh_client(server) as client, ThreadPoolExecutor(1) as pool:
            sent = time.monotonic()
            stuck = pool.submit(classify, client, white)
            time.sleep(2.0)  # in the call, under the timeout: the loop turns, all is well
            assert ready(server) == 200
            assert children(server, "service.executor") == [executor]
            answer = stuck.result()
            answered_s = time.monotonic() - sent
        assert answer.status_code == 503, answer.text
        assert answered_s < 20, answered_s  # at the kill, not at its 60 s deadline
        assert wait_for(lambda: children(server, "service.executor") not in ([], [executor]), 30)
        assert wait_for(lambda: ready(server) == 200, 120)
        with fresh_client(server) as client:
            response = classify(client, png)
        assert response.status_code == 200, response.text
        log = (tmp_path / "server.log").read_text()
        assert log.count("has been in one model call for") == 1, log[-3000:]
        assert "has not turned its event loop" not in log
    finally:
        server.stop()


def test_a_load_that_never_ends_is_given_up_and_the_other_models_serve(
    demo_repository: Path, tmp_path: Path, digits
) -> None:
    """`blocked` sleeps for minutes in every call, warm-up included, and sorts before `gap`,
    so the executor's first load sticks in TensorFlow. After CONVBRIDGE_LOAD_TIMEOUT_S it
    counts as failed to load, with a reason that says why and what to change; `gap` loads
    next, the service is ready and serves it. The stuck thread does not hold up a stop: the
    service still exits 0 on SIGTERM."""
    repository = tmp_path / "models"
    source = demo_repository / "gap" / "1"
    export_slow(source, repository / "blocked" / "1", "blocked", seconds=600)
    shutil.copytree(source, repository / "gap" / "1")
    server = start_server(
        repository,
        tmp_path / "server.log",
        CONVBRIDGE_WORKERS="1",
        # Long enough for `gap` to load and warm up on a slow host (3.1 s seen on one).
        CONVBRIDGE_LOAD_TIMEOUT_S="15",
        CONVBRIDGE_HANG_TIMEOUT_S="2",  # a stuck load is not a hang: the executor stays
    )
    png = digit_png(digits.test.images[0])
    try:
        server.wait_ready()
        (executor,) = children(server, "service.executor")
        with fresh_client(server) as client:
            (version,) = client.get("/models/blocked").json()["versions"]
            refused = client.post(
                "/models/blocked/classify", content=png, headers={"content-type": "image/png"}
            )
            served = classify(client, png)
            ready_models = client.get("/readyz").json()["models"]
        assert version["state"] == "failed", version
        assert "not load and warm up within 15 s (CONVBRIDGE_LOAD_TIMEOUT_S)" in version["error"]
        assert refused.status_code == 503, refused.text
        assert "CONVBRIDGE_LOAD_TIMEOUT_S" in refused.json()["error"], refused.text
        assert served.status_code == 200, served.text
        assert ready_models == {"blocked": "failed", "gap": "ready"}
        time.sleep(2.5)  # past the hang timeout: the thread is still stuck, the executor stays
        assert children(server, "service.executor") == [executor]
    finally:
        code = server.stop()
    # An executor that waited for its stuck thread would be killed after the supervisor's
    # 40 s (exit 1), or the supervisor after the test's 30 s (-9).
    assert code == 0, server.log()[-3000:]
    log = (tmp_path / "server.log").read_text()
    assert "model blocked version 1 failed to load: it did not load" in log, log[-3000:]
    assert "model gap version 1 ready" in log


def test_a_killed_front_end_is_replaced_while_the_other_serves(
    split: ServerProcess, digits
) -> None:
    front_ends = children(split, "service.frontend")
    assert len(front_ends) == 2
    folder = runtime_folder(split)
    assert (folder / f"arena-{front_ends[0]}").exists()
    load = Load(split, digit_png(digits.test.images[0]))
    load.start()
    assert wait_for(lambda: len(load.results) >= 20, 10)
    killed = time.monotonic()
    os.kill(front_ends[0], signal.SIGKILL)
    assert wait_for(lambda: sum(t > killed + 0.5 for t, _, _ in load.results) >= 20, 10)
    replaced = wait_for(
        lambda: (
            len(children(split, "service.frontend")) == 2
            and front_ends[0] not in children(split, "service.frontend")
        ),
        30,
    )
    load.stop()
    assert replaced
    assert not (folder / f"arena-{front_ends[0]}").exists()  # its shared memory went with it
    # Its metrics files were folded into the archive: each answer received is still counted.
    metrics = folder / "metrics"
    assert not list(metrics.glob(f"*_{front_ends[0]}.db"))
    assert (metrics / "counter_archive.db").exists()
    answered = sum(status == 200 for _, _, status in load.results)
    counted = value(
        samples(httpx.get(split.url + "/metrics").text),
        "convbridge_requests_total",
        model="gap",
        endpoint="classify",
        outcome="ok",
        protocol="rest",
    )
    assert counted >= answered > 0
    after = [status for sent, _, status in load.results if sent > killed + 0.5]
    # New connections go to the front end that lives: every one of them is served.
    assert after and set(after) == {200}, Counter(after)
    assert ready(split) == 200


def test_the_supervisor_exits_non_zero_when_the_executor_cannot_start(
    gap_repository: Path, tmp_path: Path
) -> None:
    server = start_server(gap_repository, tmp_path / "server.log", CONVBRIDGE_DEVICE="gpu")
    try:
        code = server.process.wait(timeout=120)
    finally:
        server.stop()
    assert code == 2
    assert "CONVBRIDGE_DEVICE=gpu but TensorFlow sees no GPU" in server.log()
    assert "the model executor could not start" in server.log()


def test_one_process_mode_still_serves(gap_repository: Path, tmp_path: Path, digits) -> None:
    """One process serves, as the executor would: it started itself again, under the pid its
    parent knows, with the malloc tunables the split gives the executor; with
    CONVBRIDGE_HUGE_PAGES=false, without huge pages. (An operator's own tunables are kept by
    executor_env, which tests/service/test_settings.py checks.)"""
    server = start_server(gap_repository, tmp_path / "server.log", CONVBRIDGE_WORKERS="0")
    try:
        server.wait_ready()
        assert children(server, "service.executor") == []
        assert tunables(server.pid) == ["glibc.malloc.hugetlb=1", "glibc.malloc.arena_max=2"]
        answer = post_digit(server.url, digits.test.images[0])
        assert answer.status_code == 200
        label = answer.json()["predictions"][0]["top_k"][0]["label"]
        assert int(label) == digits.test.labels[0]
    finally:
        assert server.stop() == 0
    plain = start_server(
        gap_repository,
        tmp_path / "plain.log",
        CONVBRIDGE_WORKERS="0",
        CONVBRIDGE_HUGE_PAGES="false",
    )
    try:
        plain.wait_ready()
        assert tunables(plain.pid) == ["glibc.malloc.arena_max=2"]
    finally:
        assert plain.stop() == 0


def test_ready_means_every_front_end_serves(gap_repository: Path, tmp_path: Path, digits) -> None:
    """A front end answers nothing before it has the executor's snapshot: the first requests
    after /readyz turns 200 are all served, whichever front end the kernel gives them to."""
    server = start_server(gap_repository, tmp_path / "server.log", CONVBRIDGE_WORKERS="2")
    try:
        server.wait_ready()
        png = digit_png(digits.test.images[0])
        with fresh_client(server) as client:
            answers = [classify(client, png) for _ in range(40)]
        statuses = Counter(answer.status_code for answer in answers)
        assert statuses == {200: 40}, [a.text for a in answers if a.status_code != 200]
    finally:
        server.stop()


def test_a_slow_models_lone_request_leaves_the_executor_free(
    demo_repository: Path, tmp_path: Path, digits
) -> None:
    """The executor runs a lone request on its own loop only once it knows the model's calls
    are short. A model that sleeps 1.5 s a call never runs there: while each of two lone
    requests is in the model (the first before any call was timed, the second after), the
    executor still answers the front end's /metrics, which shows the batch started."""
    repository = tmp_path / "models"
    export_slow(demo_repository / "gap" / "1", repository / "gap" / "1", "gap", seconds=1.5)
    server = start_server(  # batches of one: a single warm-up call
        repository, tmp_path / "server.log", CONVBRIDGE_WORKERS="1", CONVBRIDGE_MAX_BATCH_SIZE="1"
    )
    png = digit_png(digits.test.images[0])
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def answered_at() -> float:
                response = classify(client, png)
                assert response.status_code == 200, response.text
                return time.monotonic()

            def batches() -> float:
                page = httpx.get(server.url + "/metrics", timeout=30).text
                return value(samples(page), "convbridge_batch_size_count", model="gap", version="1")

            for started in (1, 2):
                with ThreadPoolExecutor(1) as pool:
                    answered = pool.submit(answered_at)
                    assert wait_for(lambda started=started: batches() >= started, 30)
                    seen = time.monotonic()
                    # The page came while the call was still sleeping, long before its answer.
                    assert answered.result() - seen > 0.5
    finally:
        assert server.stop() == 0
