"""The model repository as the service sees it: discover, load, warm up and hand out models."""

from __future__ import annotations

import asyncio
import bisect
import enum
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convbridge.card import ModelCard, read_card
from convbridge.layout import list_models, list_versions, version_dir
from service.batching import Batcher
from service.metrics import Metrics
from service.runtime import Runtime, release_memory
from service.settings import Settings
from service.signatures import SIGNATURES, check_signatures

log = logging.getLogger("convbridge.repository")


class State(enum.StrEnum):
    AVAILABLE = "available"  # on disk, not loaded (older versions load when a request names them)
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class ModelNotFoundError(LookupError):
    pass


class ModelNotReadyError(RuntimeError):
    pass


class ModelLoadError(RuntimeError):
    pass


def padded_size(count: int, sizes: tuple[int, ...]) -> int:
    """The smallest allowed batch size that holds ``count`` images."""
    index = bisect.bisect_left(sizes, count)
    if index == len(sizes):
        raise ValueError(f"a batch of {count} is larger than the largest allowed ({sizes[-1]})")
    return sizes[index]


class LoadedModel:
    """A SavedModel in memory: its card, and one batcher per signature on one inference thread."""

    def __init__(
        self,
        card: ModelCard,
        signatures: dict[str, Any],
        runtime: Runtime,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.card = card
        self.name = card.name
        self.version = card.version
        self.device = runtime.device
        self._signatures = signatures
        self._runtime = runtime
        self.executor = ThreadPoolExecutor(
            settings.batch_threads, thread_name_prefix=f"infer-{card.name}-{card.version}"
        )
        self.batchers: dict[str, Batcher] = {}
        # Requests holding this version; unloading waits for them (see ModelRepository.unload).
        self.leases = 0
        self._settings = settings
        self._metrics = metrics
        self.batch_sizes = settings.batch_sizes(runtime.kind)

    def run(self, signature: str, images: np.ndarray) -> dict[str, np.ndarray]:
        """Call one signature on a uint8 batch, padded to an allowed size; blocking."""
        import tensorflow as tf

        count = len(images)
        size = padded_size(count, self.batch_sizes)
        if size > count:
            padding = np.zeros((size - count, *images.shape[1:]), dtype=images.dtype)
            images = np.concatenate([images, padding])
        with tf.device(self._runtime.device):
            outputs = self._signatures[signature](**{self.card.input.name: tf.constant(images)})
        return {name: value.numpy()[:count] for name, value in outputs.items()}

    def warm_up(self) -> None:
        """Run every signature once per allowed batch size: the first request is not slower."""
        for size in self.batch_sizes:
            zeros = np.zeros((size, *self.card.input.shape), dtype=np.uint8)
            for signature in SIGNATURES:
                outputs = self.run(signature, zeros)
                if any(len(value) != size for value in outputs.values()):
                    raise ModelLoadError(f"{signature} returned the wrong batch size in warm-up")

    def start(self) -> None:
        """Create the batchers; call on the event loop."""
        labels = (self.name, str(self.version))
        for signature in SIGNATURES:
            self.batchers[signature] = Batcher(
                run_batch=functools.partial(self.run, signature),
                executor=self.executor,
                max_batch_size=self._settings.max_batch_size,
                max_delay=self._settings.max_delay_ms / 1000.0,
                max_queue=self._settings.max_queue_images,
                on_batch=self._metrics.batch_size.labels(*labels).observe,
                on_depth=self._depth_reporter(),
                concurrency=self._settings.batch_threads,
            )
            self.batchers[signature].start()

    def _depth_reporter(self) -> Any:
        gauge = self._metrics.queue_depth.labels(self.name, str(self.version))

        def report(_: int) -> None:
            gauge.set(sum(b.queued_images for b in self.batchers.values()))

        return report

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=True)


@dataclass
class VersionEntry:
    name: str
    version: int
    path: Path
    state: State = State.AVAILABLE
    error: str | None = None
    card: ModelCard | None = None
    model: LoadedModel | None = None
    load_seconds: float | None = None
    task: asyncio.Task[LoadedModel] | None = field(default=None, repr=False)


class ModelRepository:
    """Every model and version on disk, and the loaded ones among them."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime: Runtime) -> None:
        self.root = settings.repository
        self.settings = settings
        self.metrics = metrics
        self.runtime = runtime
        self.entries: dict[str, dict[int, VersionEntry]] = {}
        self.initial_load_done = False

    def scan(self) -> None:
        """Find every model folder and version; new ones are added, known ones kept."""
        for name in list_models(self.root):
            versions = self.entries.setdefault(name, {})
            for version in list_versions(self.root / name):
                if version not in versions:
                    versions[version] = VersionEntry(
                        name, version, version_dir(self.root, name, version)
                    )

    async def load_initial(self) -> None:
        """Load and warm up the newest version of every model, one after another."""
        self.scan()
        for name, versions in sorted(self.entries.items()):
            if versions:
                try:
                    await self.load(name, max(versions))
                except ModelLoadError:
                    pass  # reported in the entry, the log and the metrics; the others go on
        self.initial_load_done = True

    async def load(self, name: str, version: int) -> LoadedModel:
        """Load a version once; concurrent callers share the same load."""
        entry = self.entries[name][version]
        if entry.model is not None:
            return entry.model
        if entry.task is None:
            entry.task = asyncio.get_running_loop().create_task(self._load(entry))
        return await asyncio.shield(entry.task)

    async def _load(self, entry: VersionEntry) -> LoadedModel:
        entry.state = State.LOADING
        started = time.perf_counter()
        labels = (entry.name, str(entry.version))
        try:
            model = await asyncio.to_thread(self._load_blocking, entry)
        except Exception as error:
            entry.state = State.FAILED
            entry.error = _public_reason(error, entry)
            self.metrics.model_load_failures.labels(*labels).inc()
            log.error("model %s version %s failed to load: %s", *labels, entry.error)
            raise ModelLoadError(entry.error) from error
        model.start()
        entry.load_seconds = round(time.perf_counter() - started, 3)
        entry.model, entry.state, entry.error = model, State.READY, None
        self.metrics.model_load_seconds.labels(*labels).observe(entry.load_seconds)
        self.metrics.model_loaded.labels(*labels, self.runtime.device).set(1)
        log.info(
            "model %s version %s ready on %s in %.2f s", *labels, model.device, entry.load_seconds
        )
        return model

    def _load_blocking(self, entry: VersionEntry) -> LoadedModel:
        import tensorflow as tf

        card = read_card(entry.path)
        entry.card = card
        if card.name != entry.name or card.version != entry.version:
            raise ModelLoadError(
                f"card says {card.name}/{card.version}, "
                f"but the folder is {entry.name}/{entry.version}"
            )
        with tf.device(self.runtime.device):
            saved = tf.saved_model.load(str(entry.path))
        missing = [s for s in SIGNATURES if s not in saved.signatures]
        if missing:
            raise ModelLoadError(f"the SavedModel lacks signatures {missing}")
        signatures = {name: saved.signatures[name] for name in SIGNATURES}
        check_signatures(signatures, card)
        model = LoadedModel(card, signatures, self.runtime, self.settings, self.metrics)
        model._saved = saved  # type: ignore[attr-defined]  # keeps the variables alive
        # Warm up on the inference threads themselves: that is where requests will run.
        # Submitted together, each job starts its own thread (a waited-for job frees its thread
        # for the next, which would warm one thread several times).
        warming = [model.executor.submit(model.warm_up) for _ in range(self.settings.batch_threads)]
        for job in warming:
            job.result()
        return model

    async def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The model to serve: the newest ready version, or ``version`` (loaded on demand)."""
        versions = self.entries.get(name)
        if versions is None:
            raise ModelNotFoundError(name)
        if version is None:
            served = self.served_version(name)
            if served is not None:
                return versions[served].model  # type: ignore[return-value]
            if not versions:
                raise ModelNotReadyError(f"model {name!r} has no versions in the repository")
            newest = versions[max(versions)]
            reason = f": {newest.error}" if newest.error else ""
            raise ModelNotReadyError(
                f"model {name!r} version {newest.version} is {newest.state.value}{reason}"
            )
        entry = versions.get(version)
        if entry is None:
            raise ModelNotFoundError(f"{name}/{version}")
        if entry.state is State.FAILED:
            raise ModelNotReadyError(
                f"model {name!r} version {version} failed to load: {entry.error}"
            )
        try:
            return await self.load(name, version)
        except ModelLoadError as error:
            raise ModelNotReadyError(
                f"model {name!r} version {version} failed to load: {error}"
            ) from None

    def served_version(self, name: str) -> int | None:
        ready = [v for v, e in self.entries.get(name, {}).items() if e.state is State.READY]
        return max(ready) if ready else None

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, state of each model's newest version)."""
        states = {
            name: (versions[max(versions)].state.value if versions else "empty")
            for name, versions in sorted(self.entries.items())
        }
        if not self.initial_load_done:
            return False, states
        if self.settings.require_all_models:
            return all(s == State.READY for s in states.values()) and bool(states), states
        return any(s == State.READY for s in states.values()), states

    async def unload(self, name: str, version: int, forget: bool = False) -> None:
        """Stop serving a version, let its requests finish, then free it.

        New requests stop finding it at once; requests that already hold it (leases) and
        everything in its queues finish on it first, within the request timeout.
        """
        entry = self.entries.get(name, {}).get(version)
        if entry is None:
            return
        model, entry.model, entry.task = entry.model, None, None
        entry.state = State.AVAILABLE
        if forget:
            del self.entries[name][version]
        if model is None:
            return
        deadline = time.monotonic() + self.settings.request_timeout_s + 1
        while model.leases > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await model.close()
        del model
        started = time.perf_counter()
        release_memory()
        try:
            self.metrics.model_loaded.remove(name, str(version), self.runtime.device)
        except KeyError:
            pass
        log.info(
            "model %s version %s unloaded; memory released in %.0f ms",
            name,
            version,
            (time.perf_counter() - started) * 1000,
        )

    async def close(self) -> None:
        for versions in self.entries.values():
            for entry in versions.values():
                if entry.model is not None:
                    await entry.model.close()
                    entry.model = None


def _public_reason(error: BaseException, entry: VersionEntry) -> str:
    """The first line of an error, with server paths replaced by the model's name/version."""
    text = (str(error) or type(error).__name__).strip().split("\n", 1)[0][:300]
    return text.replace(str(entry.path.resolve()), f"{entry.name}/{entry.version}").replace(
        str(entry.path), f"{entry.name}/{entry.version}"
    )
