"""The engine: the one door from the HTTP side into inference.

Routers see only this class, :class:`Lease` and the snapshots of ``status.py``; the catalogue,
loaded models, batchers, reload and TensorFlow stay behind it. A client in another process
can offer the same methods, so that routers never know where the models run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from convbridge.card import ModelCard
from service.inference.batch import Extra, Ticket
from service.inference.catalogue import ModelCatalogue
from service.inference.errors import ModelNotReadyError
from service.inference.model import LoadedModel
from service.inference.runtime import Runtime
from service.inference.status import ModelInfo, ModelStatus, Readiness, Result
from service.metrics import Metrics, executor_up
from service.settings import Settings

log = logging.getLogger("convbridge.engine")
STARTING = "the service is starting: models are not loaded yet"


class Engine:
    """Loads every model of the repository and runs requests through their batchers."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime: Runtime | None = None):
        self.settings = settings
        self.metrics = metrics
        self._runtime = runtime
        self._catalogue: ModelCatalogue | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._startup_error: str | None = None
        # Called whenever readiness or a model's status changes (the executor tells front ends).
        self.on_change: Callable[[], None] = lambda: None
        # Called when a queue fills up or has room again: (model, version, signature, full).
        self.on_pressure: Callable[[str, int, str, bool], None] = lambda *pressure: None

    async def start(self) -> None:
        """Configure TensorFlow, load every model, then poll for new versions when asked to.

        A failure is logged and reported by :meth:`readiness`; the process stays up for diagnosis.
        """
        from service.inference.runtime import configure_tensorflow, freeze_startup_heap

        try:
            if self._runtime is None:
                self._runtime = await asyncio.to_thread(configure_tensorflow, self.settings)
            freeze_startup_heap()
            catalogue = ModelCatalogue(self.settings, self.metrics, self._runtime)
            catalogue.on_change = lambda: self.on_change()
            catalogue.on_pressure = lambda *pressure: self.on_pressure(*pressure)
            self._catalogue = catalogue
            await catalogue.load_initial()
            if self.settings.poll_interval_s > 0:
                from service.inference.reload import Reloader

                self._reloader = asyncio.create_task(
                    Reloader(catalogue).run(self.settings.poll_interval_s), name="reload"
                )
            ready, models = catalogue.readiness()
            log.info("start-up finished: ready=%s models=%s", ready, models)
        except Exception as error:
            self._startup_error = f"start-up failed: {error}"
            log.exception("start-up failed")
            self.on_change()

    async def attached(self) -> None:
        """Ready to answer status questions (not necessarily to serve): at once in process."""

    async def close(self) -> None:
        """Stop polling and let every queued request finish."""
        if self._reloader is not None:
            self._reloader.cancel()
        if self._catalogue is not None:
            await self._catalogue.close()

    def readiness(self) -> Readiness:
        if self._catalogue is None:
            return Readiness(False, {}, self._startup_error or "starting")
        ready, models = self._catalogue.readiness()
        return Readiness(ready, models)

    def knows(self, name: str) -> bool:
        """True for a model of the repository (metrics label only those: a bounded set)."""
        return self._catalogue is not None and name in self._catalogue.names()

    def names(self) -> list[str]:
        return self.catalogue().names()

    def status(self, name: str) -> ModelStatus:
        """One model's versions and states; ModelNotFoundError naming the models otherwise."""
        return self.catalogue().status(name)

    def read_card(self, name: str, version: int) -> ModelCard | None:
        """A version's card, read from disk when it is not loaded; None when unreadable."""
        return self.catalogue().read_card(name, version)

    async def model(self, name: str, version: int | None = None) -> ModelInfo:
        """The version that would serve a request (an older one is loaded on demand)."""
        return _info(await self.catalogue().get(name, version))

    def reserve(self, name: str, version: int | None, signature: str) -> Lease:
        """A hold on a model version and a place in one signature's queue; see :class:`Lease`."""
        return Lease(self, name, version, signature)

    async def metrics_text(self) -> bytes:
        """Metrics kept apart from the app's registry: in one process, only that the executor
        (this process) is up."""
        return executor_up(True)

    def catalogue(self) -> ModelCatalogue:
        """The catalogue, or ModelNotReadyError while the service starts (or failed to)."""
        if self._catalogue is None:
            raise ModelNotReadyError(self._startup_error or STARTING)
        return self._catalogue


class Lease:
    """One request's hold on a model version, from lookup to answer; an async context manager.

    Entering finds the model (ModelNotFoundError, ModelNotReadyError), keeps it loaded until
    the request is answered (hot reload waits for it), and takes a place in the queue of
    ``signature`` before the request's body is read (QueueFullError when it is full). Leaving
    gives back whatever is still held, whatever happened in between.
    """

    def __init__(self, engine: Engine, name: str, version: int | None, signature: str) -> None:
        self._engine = engine
        self._name, self._version, self._signature = name, version, signature
        self._model: LoadedModel | None = None
        self._ticket: Ticket | None = None
        self.model: ModelInfo  # the version given, once entered

    async def __aenter__(self) -> Lease:
        model = await self._engine.catalogue().get(self._name, self._version)
        model.acquire()
        self._model, self.model = model, _info(model)
        try:
            self._ticket = model.batcher(self._signature).reserve()
        except BaseException:
            model.release()
            raise
        return self

    def expect(self, count: int) -> None:
        """The request carries ``count`` images (being decoded): the batcher waits for them."""
        if self._ticket is not None:
            self._ticket.expect(count)

    async def run(
        self,
        images: np.ndarray,
        timeout: float,
        signature: str | None = None,
        extra: Extra | None = None,
        alone: bool = False,
    ) -> Result:
        """Run ``images`` through ``signature`` (default: the reserved one) within ``timeout`` s.

        ``extra``: the signature's other inputs, one row per image (explain's ``class_index``).
        ``alone``: the caller knows of no other request under way (Batcher.submit).

        QueueFullError, DeadlineExceededError or BatchSizeMismatchError when it cannot.
        """
        assert self._model is not None, "enter the lease first"
        signature = signature or self._signature
        batcher = self._model.batcher(signature)
        if signature == self._signature and self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            outputs, stats = await ticket.submit(images, timeout, extra, alone)
        else:
            self._release_ticket()  # the reserved place stood in for this signature's
            outputs, stats = await batcher.submit(images, timeout, extra, alone)
        return Result(outputs, stats)

    def _release_ticket(self) -> None:
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None

    async def __aexit__(self, *exc_info: object) -> None:
        self._release_ticket()
        if self._model is not None:
            self._model.release()
            self._model = None


def _info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(model.name, model.version, model.device, model.card)
