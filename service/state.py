"""What the running app holds: settings, metrics, the repository and the worker pools."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.metrics import Metrics
from service.repository import ModelRepository
from service.runtime import Runtime
from service.settings import Settings


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    runtime: Runtime | None = None
    repository: ModelRepository | None = None
    decoder: ThreadPoolExecutor | None = None
    loader: asyncio.Task[None] | None = None
    reloader: asyncio.Task[None] | None = None
    startup_error: str | None = None
    started: float = field(default_factory=time.time)
