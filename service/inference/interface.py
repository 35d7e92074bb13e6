"""The engine's interface as the HTTP side sees it: met by the in-process Engine and by the
front ends' client of the executor process, so routers never know which one they talk to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from convbridge.card import ModelCard
from service.inference.status import ModelInfo, ModelStatus, Readiness, Result


class LeaseLike(Protocol):
    """A hold on a model version and a queue place; see :class:`service.inference.Lease`."""

    model: ModelInfo

    async def __aenter__(self) -> LeaseLike: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def expect(self, count: int) -> None: ...

    async def run(
        self,
        images: np.ndarray,
        timeout: float,
        signature: str | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> Result: ...


class EngineLike(Protocol):
    """See :class:`service.inference.Engine` for what each method promises."""

    async def start(self) -> None: ...

    async def attached(self) -> None: ...

    async def close(self) -> None: ...

    def readiness(self) -> Readiness: ...

    def knows(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...

    def status(self, name: str) -> ModelStatus: ...

    def read_card(self, name: str, version: int) -> ModelCard | None: ...

    async def model(self, name: str, version: int | None = None) -> ModelInfo: ...

    def reserve(self, name: str, version: int | None, signature: str) -> LeaseLike: ...

    async def metrics_text(self) -> bytes: ...
