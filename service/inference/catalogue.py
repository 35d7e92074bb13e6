"""Every model and version in the repository, and which of them are loaded and served."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from convbridge.card import CardError, ModelCard, read_card
from convbridge.layout import list_models, list_versions, version_dir
from service.inference.errors import (
    ModelLoadError,
    ModelNotReadyError,
    unknown_model,
    unknown_version,
)
from service.inference.model import LoadedModel
from service.inference.runtime import Runtime, release_memory
from service.inference.status import ModelStatus, State, VersionStatus, not_serving
from service.metrics import Metrics
from service.settings import Settings

T = TypeVar("T")
log = logging.getLogger("convbridge.repository")  # the name operators filter logs by


@dataclass
class _Entry:
    path: Path
    status: VersionStatus
    model: LoadedModel | None = None
    task: asyncio.Task[LoadedModel] | None = field(default=None, repr=False)


class ModelCatalogue:
    """The repository as the service sees it: discover, load, hand out and unload versions."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime: Runtime) -> None:
        self.root = settings.repository
        self.settings = settings
        self.metrics = metrics
        self.runtime = runtime
        self._entries: dict[str, dict[int, _Entry]] = {}
        self.initial_load_done = False
        # Called after every change a snapshot would show (states, versions, cards).
        self.on_change: Callable[[], None] = lambda: None
        # Called when a loaded version's queue fills up or has room again (see LoadedModel).
        self.on_pressure: Callable[[str, int, str, bool], None] = lambda *pressure: None
        self._freeing: set[asyncio.Task[None]] = set()  # loads that ended after their timeout

    def names(self) -> list[str]:
        return sorted(self._entries)

    def scan(self) -> None:
        """Find every model folder and version; new ones are added, known ones kept."""
        for name in list_models(self.root):
            versions = self._entries.setdefault(name, {})
            for version in list_versions(self.root / name):
                if version not in versions:
                    path = version_dir(self.root, name, version)
                    versions[version] = _Entry(path, VersionStatus(version, State.AVAILABLE))
                    self.on_change()

    async def load_initial(self) -> None:
        """Load and warm up the newest version of every model, one after another."""
        self.scan()
        for name in self.names():
            await self.load_newest(name)
        self.initial_load_done = True
        self.on_change()

    async def load_newest(self, name: str) -> None:
        """Load the newest version of ``name`` unless it was tried; failures are only reported."""
        versions = self._entries.get(name)
        if not versions:
            return
        newest = versions[max(versions)]
        if newest.status.state is State.AVAILABLE and newest.task is None:
            try:
                await self.load(name, max(versions))
            except ModelLoadError:
                pass  # reported in the status, the log and the metrics; the others go on

    async def load(self, name: str, version: int) -> LoadedModel:
        """Load a version once; concurrent callers share the same load."""
        entry = self._entries[name][version]
        if entry.model is not None:
            return entry.model
        if entry.task is None:
            entry.task = asyncio.get_running_loop().create_task(self._load(name, entry))
        return await asyncio.shield(entry.task)

    async def _load(self, name: str, entry: _Entry) -> LoadedModel:
        version = entry.status.version
        entry.status = replace(entry.status, state=State.LOADING)
        self.on_change()
        started = time.perf_counter()
        labels = (name, str(version))
        try:
            model = await self._load_in_time(name, entry)
        except Exception as error:
            reason = _public_reason(error, entry.path, f"{name}/{version}")
            entry.status = replace(entry.status, state=State.FAILED, error=reason)
            self.metrics.model_load_failures.labels(*labels).inc()
            self.on_change()
            log.error("model %s version %s failed to load: %s", *labels, reason)
            raise ModelLoadError(reason) from error
        model.on_pressure = lambda signature, full: self.on_pressure(name, version, signature, full)
        model.start()
        seconds = round(time.perf_counter() - started, 3)
        entry.model = model
        entry.status = replace(entry.status, state=State.READY, error=None, load_seconds=seconds)
        self.on_change()
        self.metrics.model_load_seconds.labels(*labels).observe(seconds)
        self.metrics.model_loaded.labels(*labels, self.runtime.device).set(1)
        log.info("model %s version %s ready on %s in %.2f s", *labels, model.device, seconds)
        return model

    async def _load_in_time(self, name: str, entry: _Entry) -> LoadedModel:
        """:meth:`_load_blocking` on a thread of its own, given up after load_timeout_s.

        TensorFlow cannot be interrupted, so a stuck load keeps its thread (a daemon one,
        which never holds up the exit); should it ever return, what it loaded is closed.
        """
        limit = self.settings.load_timeout_s
        version = entry.status.version
        loading = _on_own_thread(f"load {name}/{version}", self._load_blocking, name, entry)
        try:
            return await asyncio.wait_for(asyncio.shield(loading), limit)
        except TimeoutError:
            loading.add_done_callback(lambda done: self._drop_late(name, version, done))
            raise ModelLoadError(
                f"it did not load and warm up within {limit:g} s (CONVBRIDGE_LOAD_TIMEOUT_S): "
                "the load is stuck, or this model needs a higher limit"
            ) from None

    def _drop_late(self, name: str, version: int, done: asyncio.Future[LoadedModel]) -> None:
        """A load given up on has ended after all: free what it loaded."""
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is not None:
            log.warning("model %s version %s: its timed-out load ended: %s", name, version, error)
            return
        freeing = asyncio.get_running_loop().create_task(self._free(name, version, done.result()))
        self._freeing.add(freeing)
        freeing.add_done_callback(self._freeing.discard)

    @staticmethod
    async def _free(name: str, version: int, model: LoadedModel) -> None:
        await model.close()
        del model
        release_memory()
        log.warning("model %s version %s loaded after its timeout: dropped", name, version)

    def _load_blocking(self, name: str, entry: _Entry) -> LoadedModel:
        card = read_card(entry.path)
        entry.status = replace(entry.status, card=card)
        if card.name != name or card.version != entry.status.version:
            raise ModelLoadError(
                f"card says {card.name}/{card.version}, "
                f"but the folder is {name}/{entry.status.version}"
            )
        return LoadedModel.load(entry.path, card, self.runtime, self.settings, self.metrics)

    async def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The model to serve: the newest ready version, or ``version`` (loaded on demand)."""
        versions = self._versions(name, version)
        if version is None:
            served = self.served_version(name)
            if served is not None:
                return versions[served].model  # type: ignore[return-value]
            raise not_serving(self.status(name))
        status = versions[version].status
        if status.state is State.FAILED:
            raise ModelNotReadyError(
                f"model {name!r} version {version} failed to load: {status.error}"
            )
        try:
            return await self.load(name, version)
        except ModelLoadError as error:
            raise ModelNotReadyError(
                f"model {name!r} version {version} failed to load: {error}"
            ) from None

    def _versions(self, name: str, version: int | None) -> dict[int, _Entry]:
        """The versions of ``name``; ModelNotFoundError naming what exists otherwise."""
        versions = self._entries.get(name)
        if versions is None:
            raise unknown_model(name, self.names())
        if version is not None and version not in versions:
            raise unknown_version(name, version, sorted(versions))
        return versions

    def served_version(self, name: str) -> int | None:
        ready = [v for v, e in self._entries.get(name, {}).items() if e.status.state is State.READY]
        return max(ready) if ready else None

    def status(self, name: str) -> ModelStatus:
        """A snapshot of one model; ModelNotFoundError when there is no such model."""
        versions = self._versions(name, None)
        served = self.served_version(name)
        return ModelStatus(
            name=name,
            versions=tuple(versions[v].status for v in sorted(versions)),
            served_version=served,
            device=self.runtime.device if served is not None else None,
        )

    def read_card(self, name: str, version: int) -> ModelCard | None:
        """The card of a version, read from disk if it is not loaded; None when unreadable."""
        entry = self._versions(name, version)[version]
        if entry.status.card is None:
            try:
                entry.status = replace(entry.status, card=read_card(entry.path))
            except CardError:
                return None
            self.on_change()
        return entry.status.card

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, state of each model's newest version)."""
        states = {
            name: (versions[max(versions)].status.state.value if versions else "empty")
            for name, versions in sorted(self._entries.items())
        }
        if not self.initial_load_done:
            return False, states
        if self.settings.require_all_models:
            return all(s == State.READY for s in states.values()) and bool(states), states
        return any(s == State.READY for s in states.values()), states

    async def forget_missing(self) -> None:
        """Unload and forget the versions and models whose folders left the repository.

        A model whose folder is gone is forgotten at once, before its versions drain: until
        then it would be listed with no versions.
        """
        on_disk = {name: set(list_versions(self.root / name)) for name in list_models(self.root)}
        for name in self.names():
            if name not in on_disk:
                versions = self._entries.pop(name)
                self.on_change()
                for version, entry in versions.items():
                    log.info("model %s version %s left the repository", name, version)
                    await self._retire(name, version, entry)
                continue
            for version in list(self._entries[name]):
                if version not in on_disk[name]:
                    log.info("model %s version %s left the repository", name, version)
                    await self.unload(name, version, forget=True)

    async def unload(self, name: str, version: int, forget: bool = False) -> None:
        """Stop serving a version, let its requests finish, then free it.

        New requests stop finding it at once; requests that already hold it (leases) and
        everything in its queues finish on it first, within the request timeout.
        """
        entry = self._entries.get(name, {}).get(version)
        if entry is None:
            return
        if forget:
            del self._entries[name][version]
        await self._retire(name, version, entry)

    async def _retire(self, name: str, version: int, entry: _Entry) -> None:
        """Take ``entry``'s model out of service, wait for its requests, then free it."""
        model, entry.model, entry.task = entry.model, None, None
        entry.status = replace(entry.status, state=State.AVAILABLE)
        self.on_change()
        if model is None:
            return
        await model.drain(self.settings.request_timeout_s + 1)
        await model.close()
        del model
        started = time.perf_counter()
        release_memory()
        labels = (name, str(version))
        with contextlib.suppress(KeyError):
            self.metrics.model_loaded.remove(*labels, self.runtime.device)
        released_ms = (time.perf_counter() - started) * 1000
        log.info("model %s version %s unloaded; memory released in %.0f ms", *labels, released_ms)

    async def close(self) -> None:
        for versions in self._entries.values():
            for entry in versions.values():
                if entry.model is not None:
                    await entry.model.close()
                    entry.model = None


def _on_own_thread(name: str, function: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """``function(*args)`` on a new daemon thread, its outcome in a future of the running loop."""
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        outcome.set_running_or_notify_cancel()
        try:
            outcome.set_result(function(*args))
        except BaseException as error:
            outcome.set_exception(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return asyncio.wrap_future(outcome)


def _public_reason(error: BaseException, path: Path, label: str) -> str:
    """The first line of an error, with server paths replaced by the model's name/version."""
    text = (str(error) or type(error).__name__).strip().split("\n", 1)[0][:300]
    return text.replace(str(path.resolve()), label).replace(str(path), label)
