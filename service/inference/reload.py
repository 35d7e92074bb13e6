"""Hot reload: poll the repository, load new versions in the background, apply the policy."""

from __future__ import annotations

import asyncio
import logging

from service.inference.catalogue import ModelCatalogue

log = logging.getLogger("convbridge.reload")


class Reloader:
    """Brings the loaded models in line with the repository on disk.

    A new version is loaded and warmed while the previous one serves; requests move to it only
    once it is ready. A version that fails to load is reported and the previous one keeps
    serving. Ready versions beyond the policy (the newest ``keep_versions`` of each model, plus
    its pinned ones) are unloaded, and so are versions and models whose folders disappeared.
    """

    def __init__(self, catalogue: ModelCatalogue) -> None:
        self.catalogue = catalogue
        self.settings = catalogue.settings

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled; errors are logged, not fatal."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("repository refresh failed; trying again in %.1f s", interval)

    async def refresh(self) -> None:
        await self.catalogue.forget_missing()
        self.catalogue.scan()
        for name in self.catalogue.names():
            await self.catalogue.load_newest(name)
            await self._apply_policy(name)

    async def _apply_policy(self, name: str) -> None:
        ready = sorted(self.catalogue.status(name).ready_versions, reverse=True)
        keep = set(ready[: self.settings.keep_versions])
        keep |= set(self.settings.pinned_versions.get(name, []))
        for version in ready:
            if version not in keep:
                await self.catalogue.unload(name, version)
