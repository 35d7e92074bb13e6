"""Hot reload: poll the repository, load new versions in the background, apply the policy."""

from __future__ import annotations

import asyncio
import logging

from convbridge.layout import list_models, list_versions
from service.repository import ModelLoadError, ModelRepository, State

log = logging.getLogger("convbridge.reload")


class Reloader:
    """Brings the loaded models in line with the repository on disk.

    A new version is loaded and warmed while the previous one serves; requests move to it only
    once it is ready. A version that fails to load is reported and the previous one keeps
    serving. Ready versions beyond the policy (the newest ``keep_versions`` of each model, plus
    its pinned ones) are unloaded, and so are versions and models whose folders disappeared.
    """

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.settings = repository.settings

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled; errors are logged, not fatal."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("repository refresh failed; trying again in %.1f s", interval)

    async def refresh(self) -> None:
        await self._drop_removed()
        self.repository.scan()
        for name in list(self.repository.entries):
            await self._load_newest(name)
            await self._apply_policy(name)

    async def _drop_removed(self) -> None:
        root = self.repository.root
        on_disk = {name: set(list_versions(root / name)) for name in list_models(root)}
        for name in list(self.repository.entries):
            for version in list(self.repository.entries[name]):
                if version not in on_disk.get(name, set()):
                    log.info("model %s version %s left the repository", name, version)
                    await self.repository.unload(name, version, forget=True)
            if name not in on_disk:
                del self.repository.entries[name]

    async def _load_newest(self, name: str) -> None:
        versions = self.repository.entries[name]
        if not versions:
            return
        newest = versions[max(versions)]
        if newest.state is State.AVAILABLE and newest.task is None:
            try:
                await self.repository.load(name, newest.version)
            except ModelLoadError:
                pass  # reported by the repository; the previous version keeps serving

    async def _apply_policy(self, name: str) -> None:
        versions = self.repository.entries.get(name, {})
        ready = sorted((v for v, e in versions.items() if e.state is State.READY), reverse=True)
        keep = set(ready[: self.settings.keep_versions])
        keep |= set(self.settings.pinned_versions.get(name, []))
        for version in ready:
            if version not in keep:
                await self.repository.unload(name, version)
