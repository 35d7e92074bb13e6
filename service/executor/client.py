"""The front end's engine: the same methods as the in-process Engine, served by the executor.

Routers cannot tell the two apart. Statuses, readiness and full queues come from what the
executor pushes on every change, so they cost no round trip; a request costs one. When the
executor is gone, everything under way fails at once with ModelNotReadyError (503 with
Retry-After) and the client reconnects in the background. When it is there but hung (its
heartbeat silent for heartbeat.STALE_S), new requests and readiness get the same 503 at once;
requests already sent wait for their answer or their deadline, since the executor may still
write their outputs into their arena blocks until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convbridge.card import CardError, ModelCard, read_card
from convbridge.layout import version_dir
from service.executor.arena import Arena
from service.executor.gathering import Gatherer
from service.executor.protocol import FrameProtocol, raise_error
from service.executor.snapshot import Snapshot
from service.heartbeat import Watch
from service.inference import ModelInfo, ModelNotReadyError, Readiness
from service.inference.engine import STARTING
from service.inference.errors import DeadlineExceededError, unknown_model, unknown_version
from service.inference.status import ModelStatus
from service.metrics import executor_up
from service.settings import Settings

if TYPE_CHECKING:
    from service.executor.lease import RemoteLease

log = logging.getLogger("convbridge.frontend")
# The executor answers metrics on its event loop within milliseconds, even under load;
# Prometheus' scrape timeout is 10 s by default.
METRICS_TIMEOUT_S = 3.0
CONNECT_WAIT_S = 10.0
GONE = "the model executor is not available (it is starting or restarting); retry shortly"
HUNG = (
    "the model executor has not turned its event loop for {seconds:.0f} s (it is hung; the "
    "supervisor restarts it after CONVBRIDGE_HANG_TIMEOUT_S); retry shortly"
)

Reply = tuple[dict[str, Any], memoryview]
# Called once per request: with its reply, or with the error that ended the wait for it.
OnReply = Callable[[Reply | BaseException], None]


class RemoteEngine:
    """A connection to the executor, kept open (and re-opened) for the front end's lifetime."""

    def __init__(
        self,
        settings: Settings,
        socket_path: Path,
        arena_folder: Path | None,
        executor_pulse: Path | None = None,
    ) -> None:
        """``executor_pulse``: the executor's heartbeat file, watched for a hung executor."""
        self.settings = settings
        self.socket_path = socket_path
        self.arena = Arena(arena_folder, settings.shm_bytes) if arena_folder else None
        self.gatherer = Gatherer(self, settings.max_batch_size)
        self.snapshot = Snapshot()
        # Queues (model, version, signature) the executor said are full: refused before reading.
        self.full: set[tuple[str, int, str]] = set()
        # Images (one place per request until it knows) between admission and answer, per
        # queue: bounded by max_queue_images, so bodies read and decoded here stay bounded.
        self.pending: dict[tuple[str, int, str], int] = {}
        # Requests holding a lease here, from lookup to answer: one alone may be run by the
        # executor at once (Batcher's run_idle_inline).
        self.leases = 0
        self._protocol: FrameProtocol | None = None
        self._pending: dict[int, tuple[OnReply, asyncio.TimerHandle]] = {}
        self._ids = itertools.count(1)
        self._connector: asyncio.Task[None] | None = None
        self._watch = Watch(executor_pulse, _report_stale) if executor_pulse else None
        self._watching: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the engine runs on (its connection's): kept, because Python 3.11's
        asyncio.get_running_loop() makes a system call (getpid) each time."""
        return self._loop or asyncio.get_running_loop()

    async def start(self) -> None:
        """Connect to the executor, and stay connected (reconnecting) in the background."""
        self._loop = asyncio.get_running_loop()
        self._connector = asyncio.create_task(self._stay_connected(), name="executor")
        if self._watch is not None:
            self._watching = asyncio.create_task(self._watch.run(), name="executor-pulse")

    async def attached(self) -> None:
        """Wait (a little) for the executor's first snapshot.

        The app's start-up waits for this, and uvicorn accepts no connection before it (they
        wait in the listening socket's backlog): without it, a front end that has just started
        would refuse requests with 503 while its siblings already say ready. An executor away
        for longer is waited for in the background.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_S)

    async def close(self) -> None:
        for task in (self._connector, self._watching):
            if task is not None:
                task.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        if self.arena is not None:
            self.arena.close()
        self._loop = None

    async def _stay_connected(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, protocol = await loop.create_unix_connection(
                    lambda: FrameProtocol(self._received, self._connection_lost),
                    str(self.socket_path),
                )
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self._protocol, self._lost = protocol, asyncio.Event()
            hello: dict[str, Any] = {"op": "hello"}
            if self.arena is not None:
                hello.update(arena=str(self.arena.path), size=self.arena.size)
            try:
                header, _ = await self._call(hello)
                self.snapshot.update(header["snapshot"])
                self.full = {(name, version, sig) for name, version, sig in header["full"]}
                self._connected.set()
                log.info("connected to the model executor")
            except ModelNotReadyError:
                continue
            await self._lost.wait()

    def _received(self, header: dict[str, Any], payload: memoryview) -> None:
        op = header.get("op")
        if op == "pressure":
            name, version, signature = header["queue"]
            if header["full"]:
                self.full.add((name, version, signature))
            else:
                self.full.discard((name, version, signature))
            return
        if op == "snapshot":
            self.snapshot.update(header["snapshot"])
            self.full = {key for key in self.full if self._loaded(*key[:2])}
            return
        self._settle(header["id"], (header, payload))

    def _loaded(self, name: str, version: int) -> bool:
        status = self.snapshot.models.get(name)
        return status is not None and version in status.ready_versions

    def _connection_lost(self) -> None:
        self._protocol = None
        self.full = set()
        self._connected.clear()
        self.snapshot.readiness = Readiness(False, {}, GONE)
        for number in list(self._pending):
            self._settle(number, ModelNotReadyError(GONE))
        if self._lost is not None:
            self._lost.set()

    def send(
        self, header: dict[str, Any], payload: bytes | memoryview, timeout: float, on_reply: OnReply
    ) -> None:
        """Send a request; ``on_reply`` gets its reply (header, payload) as it is read, in the
        same turn of the loop (a future's callbacks would wait for the next one), or
        TimeoutError after ``timeout`` seconds, or ModelNotReadyError if the executor goes.
        Sent with this turn's other frames, or at :meth:`flush`."""
        if self._protocol is None:
            raise ModelNotReadyError(GONE)
        number = next(self._ids)
        self._protocol.send({**header, "id": number}, payload)
        timer = self.loop.call_later(timeout, self._expire, number, timeout)
        self._pending[number] = (on_reply, timer)

    def _expire(self, number: int, timeout: float) -> None:
        self._settle(number, TimeoutError(f"the executor did not answer in {timeout:g} s"))

    def _settle(self, number: int, outcome: Reply | BaseException) -> None:
        waiting = self._pending.pop(number, None)
        if waiting is None:  # answered already, or timed out
            return
        on_reply, timer = waiting
        timer.cancel()
        try:
            on_reply(outcome)
        except Exception:  # its own bug: the frames after it must still be read
            log.exception("handling the executor's reply failed")

    def request(
        self, header: dict[str, Any], payload: bytes | memoryview = b"", timeout: float = 60
    ) -> asyncio.Future[Reply]:
        """:meth:`send`, with a future for its reply."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def settle(outcome: Reply | BaseException) -> None:
            if future.done():  # its caller stopped waiting
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self.send(header, payload, timeout, settle)
        return future

    def flush(self) -> None:
        """Send the frames queued so far now, not at the end of this turn of the loop."""
        if self._protocol is not None:
            self._protocol.flush()

    async def _call(
        self, header: dict[str, Any], payload: bytes | memoryview = b"", timeout: float = 60
    ) -> Reply:
        """Send a request and wait for its reply; the executor's errors are raised here."""
        reply, data = await self.request(header, payload, timeout)
        if "error" in reply:
            raise_error(reply)
        return reply, data

    # The Engine's methods, as the routes call them.
    def readiness(self) -> Readiness:
        if self._protocol is None:
            return Readiness(False, {}, GONE)
        stale = self._watch.stale if self._watch is not None else None
        if stale is not None:
            return Readiness(False, {}, HUNG.format(seconds=stale))
        return self.snapshot.readiness

    def knows(self, name: str) -> bool:
        return name in self.snapshot.models

    def names(self) -> list[str]:
        self._check_serving()
        return sorted(self.snapshot.models)

    def status(self, name: str, version: int | None = None) -> ModelStatus:
        """Like the executor's answer, without asking it: unknown names and versions are
        refused here (the snapshot changes with every scan of the repository)."""
        self._check_serving()
        status = self.snapshot.models.get(name)
        if status is None:
            raise unknown_model(name, self.names())
        if version is not None and status.version(version) is None:
            raise unknown_version(name, version, [v.version for v in status.versions])
        return status

    def read_card(self, name: str, version: int) -> ModelCard | None:
        entry = self.status(name, version).version(version)
        assert entry is not None
        if entry.card is not None:
            return entry.card
        try:  # not loaded: read from the repository, as the executor would
            card = read_card(version_dir(self.settings.repository, name, version))
        except CardError:
            return None
        self.snapshot.remember(name, version, card)
        return card

    async def model(self, name: str, version: int | None = None) -> ModelInfo:
        """The version that would serve a request; DeadlineExceededError (504) when the
        executor does not answer within request_timeout_s (an older version it loads on
        demand goes on loading there: a retry finds it)."""
        self.status(name, version)
        timeout = self.settings.request_timeout_s
        try:
            reply, _ = await self._call(
                {"op": "model", "model": name, "version": version}, timeout=timeout
            )
        except TimeoutError:
            raise DeadlineExceededError(
                f"the model executor did not answer within {timeout:g} s (request_timeout_s); "
                "retry shortly"
            ) from None
        return self._info(reply)

    def reserve(self, name: str, version: int | None, signature: str) -> RemoteLease:
        from service.executor.lease import RemoteLease

        return RemoteLease(self, name, version, signature)

    async def metrics_text(self) -> bytes:
        """The executor's own metrics in Prometheus' text format, and ``executor_up``: while the
        executor is gone, restarting or does not answer within METRICS_TIMEOUT_S, /metrics
        still answers with the front ends' metrics (the 503s of a restart are counted there).
        A hung executor is not asked."""
        if self._watch is not None and self._watch.stale is not None:
            return executor_up(False)
        try:
            _, data = await self._call({"op": "metrics"}, timeout=METRICS_TIMEOUT_S)
        except (ModelNotReadyError, TimeoutError) as error:
            log.warning("/metrics without the executor's metrics: %s", error)
            return executor_up(False)
        return bytes(data) + executor_up(True)

    def _check_serving(self) -> None:
        error = self.readiness().error
        if error is not None:
            raise ModelNotReadyError(STARTING if error == "starting" else error)

    def _info(self, reply: dict[str, Any]) -> ModelInfo:
        name, version, device = reply["model"]
        card = self.snapshot.card(name, version, reply.get("card"))
        if card is None:
            raise ModelNotReadyError(f"model {name!r} version {version}: no card received")
        return ModelInfo(name, version, device, card)


def _report_stale(stale: float | None) -> None:
    if stale is not None:
        log.warning("the model executor's heartbeat stopped %.1f s ago: refusing requests", stale)
    else:
        log.info("the model executor's heartbeat is back: serving")
